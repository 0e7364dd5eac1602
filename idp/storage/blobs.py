"""Blob storage for uploaded files (profile pictures): a local directory or an S3-compatible store.

Names are chosen by the server (random, with the format's extension) and checked against one
pattern before any backend sees them, so a name can never climb out of the directory or the
bucket prefix. The content type follows from the extension; it is stored for S3 and derived again
on reading from a directory.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import os
import re
import tempfile
from pathlib import Path
from typing import Any

NAME_PATTERN = re.compile(r"[A-Za-z0-9_-]{8,80}\.(png|jpg|webp)")
CONTENT_TYPES = {"png": "image/png", "jpg": "image/jpeg", "webp": "image/webp"}


class BlobNameError(ValueError):
    """A name that doesn't match NAME_PATTERN (or a content type that doesn't match its extension)."""


def is_valid_name(name: str) -> bool:
    return NAME_PATTERN.fullmatch(name) is not None


def content_type_of(name: str) -> str:
    match = NAME_PATTERN.fullmatch(name)
    if match is None:
        raise BlobNameError("invalid blob name")
    return CONTENT_TYPES[match.group(1)]


def _check(name: str, content_type: str | None = None) -> str:
    expected = content_type_of(name)
    if content_type is not None and content_type != expected:
        raise BlobNameError(f"content type {content_type!r} does not match the name's extension")
    return expected


class BlobStore(abc.ABC):
    @abc.abstractmethod
    async def put(self, name: str, data: bytes, content_type: str) -> None:
        """Store ``data`` under ``name``, replacing any blob of that name; all or nothing."""

    @abc.abstractmethod
    async def get(self, name: str) -> tuple[bytes, str] | None:
        """The blob and its content type, or None when there is none of that name."""

    @abc.abstractmethod
    async def delete(self, name: str) -> bool:
        """Remove the blob; False when there was none."""

    async def close(self) -> None:  # noqa: B027 - optional for backends without resources
        """Release connections (called once at shutdown)."""


class FilesystemBlobStore(BlobStore):
    """One file per blob in ``root`` (mode 0700). Writes go to a temporary file in the same
    directory and are renamed into place, so a reader never sees half a file."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _path(self, name: str) -> Path:
        _check(name)
        return self.root / name

    def _ensure_root(self) -> None:
        self.root.mkdir(mode=0o700, parents=True, exist_ok=True)

    def _write(self, path: Path, data: bytes) -> None:
        self._ensure_root()
        fd, temp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".part")
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
            os.chmod(temp, 0o600)
            os.replace(temp, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(temp)
            raise

    def _read(self, path: Path) -> bytes | None:
        try:
            return path.read_bytes()
        except FileNotFoundError:
            return None

    def _unlink(self, path: Path) -> bool:
        try:
            path.unlink()
        except FileNotFoundError:
            return False
        return True

    async def put(self, name: str, data: bytes, content_type: str) -> None:
        _check(name, content_type)
        await asyncio.to_thread(self._write, self._path(name), data)

    async def get(self, name: str) -> tuple[bytes, str] | None:
        if not is_valid_name(name):
            return None
        data = await asyncio.to_thread(self._read, self._path(name))
        return None if data is None else (data, content_type_of(name))

    async def delete(self, name: str) -> bool:
        if not is_valid_name(name):
            return False
        return await asyncio.to_thread(self._unlink, self._path(name))


class S3BlobStore(BlobStore):
    """Objects in one bucket of an S3-compatible store (AWS, MinIO, Ceph, R2, …), through aioboto3.

    One client is opened on first use and kept until ``close``.
    """

    def __init__(
        self,
        bucket: str,
        endpoint_url: str | None = None,
        region: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        *,
        prefix: str = "",
    ) -> None:
        import aioboto3  # noqa: PLC0415 - S3 only: deployments on the filesystem never load boto

        self.bucket = bucket
        self.prefix = prefix
        self._session = aioboto3.Session(
            aws_access_key_id=access_key or None,
            aws_secret_access_key=secret_key or None,
            region_name=region or None,
        )
        self._endpoint_url = endpoint_url or None
        self._stack: contextlib.AsyncExitStack | None = None
        self._client: Any = None
        self._lock = asyncio.Lock()

    async def _s3(self) -> Any:
        async with self._lock:
            if self._client is None:
                stack = contextlib.AsyncExitStack()
                self._client = await stack.enter_async_context(
                    self._session.client("s3", endpoint_url=self._endpoint_url)
                )
                self._stack = stack
            return self._client

    def _key(self, name: str) -> str:
        _check(name)
        return self.prefix + name

    async def put(self, name: str, data: bytes, content_type: str) -> None:
        _check(name, content_type)
        s3 = await self._s3()
        await s3.put_object(Bucket=self.bucket, Key=self._key(name), Body=data, ContentType=content_type)

    async def get(self, name: str) -> tuple[bytes, str] | None:
        if not is_valid_name(name):
            return None
        s3 = await self._s3()
        try:
            response = await s3.get_object(Bucket=self.bucket, Key=self._key(name))
        except s3.exceptions.NoSuchKey:
            return None
        async with response["Body"] as body:
            data = await body.read()
        return bytes(data), content_type_of(name)

    async def delete(self, name: str) -> bool:
        if not is_valid_name(name):
            return False
        s3 = await self._s3()
        key = self._key(name)
        # DeleteObject answers 204 whether or not the key existed; ask first to report which.
        try:
            await s3.head_object(Bucket=self.bucket, Key=key)
        except s3.exceptions.ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return False
            raise
        await s3.delete_object(Bucket=self.bucket, Key=key)
        return True

    async def close(self) -> None:
        async with self._lock:
            if self._stack is not None:
                await self._stack.aclose()
            self._stack = None
            self._client = None
