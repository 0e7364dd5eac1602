"""Blob stores: the filesystem backend and the S3 backend (against moto's S3 server on loopback)."""

from __future__ import annotations

import os
import stat
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from idp.storage.blobs import BlobNameError, BlobStore, FilesystemBlobStore, S3BlobStore, is_valid_name

NAME = "abcdefgh1234-256.webp"
BAD_NAMES = [
    "../../etc/passwd.png",
    "..%2F..%2Fsecret.png",
    "/absolute/path1234.png",
    "short.png",  # fewer than 8 characters before the extension
    "abcdefgh1234.gif",
    "abcdefgh1234.webp/..",
    "abcdefgh/1234.webp",
    "abcdefgh\\1234.webp",
    "abcdefgh1234.webp\n",
    "abcdefgh 1234.webp",
    "",
]


@pytest.mark.parametrize("name", BAD_NAMES)
def test_names_outside_the_pattern_are_invalid(name: str) -> None:
    assert not is_valid_name(name)


def test_valid_names() -> None:
    assert is_valid_name(NAME)
    assert is_valid_name("A" * 80 + ".jpg")
    assert not is_valid_name("A" * 81 + ".jpg")


async def test_filesystem_round_trip_and_permissions(tmp_path: Path) -> None:
    root = tmp_path / "pictures"
    store = FilesystemBlobStore(root)
    assert await store.get(NAME) is None
    await store.put(NAME, b"RIFF-data", "image/webp")
    assert await store.get(NAME) == (b"RIFF-data", "image/webp")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert stat.S_IMODE((root / NAME).stat().st_mode) == 0o600
    await store.put(NAME, b"replaced", "image/webp")
    assert await store.get(NAME) == (b"replaced", "image/webp")
    assert sorted(os.listdir(root)) == [NAME]  # no temporary files left behind
    assert await store.delete(NAME) is True
    assert await store.delete(NAME) is False
    assert await store.get(NAME) is None
    await store.close()


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_filesystem_refuses_traversal(tmp_path: Path, name: str) -> None:
    root = tmp_path / "pictures"
    secret = tmp_path / "secret.png"
    secret.write_bytes(b"secret")
    store = FilesystemBlobStore(root)
    with pytest.raises(BlobNameError):
        await store.put(name, b"x", "image/png")
    assert await store.get(name) is None
    assert await store.get("../secret.png") is None
    assert await store.delete(name) is False
    assert secret.read_bytes() == b"secret"
    assert not root.exists() or os.listdir(root) == []


async def test_filesystem_refuses_a_content_type_that_does_not_match(tmp_path: Path) -> None:
    store = FilesystemBlobStore(tmp_path)
    with pytest.raises(BlobNameError):
        await store.put("abcdefgh1234.png", b"x", "text/html")
    assert os.listdir(tmp_path) == []


async def test_filesystem_write_is_atomic(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails part-way leaves the old content and no temporary file."""
    store = FilesystemBlobStore(tmp_path)
    await store.put(NAME, b"old", "image/webp")

    def broken_replace(src: Any, dst: Any) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError, match="disk full"):
        await store.put(NAME, b"new", "image/webp")
    monkeypatch.undo()
    assert await store.get(NAME) == (b"old", "image/webp")
    assert os.listdir(tmp_path) == [NAME]


# -- S3 (moto's server mode on 127.0.0.1) ---------------------------------------------------------

BUCKET = "idp-pictures"


@pytest.fixture(scope="module")
def moto_endpoint() -> Iterator[str]:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


@pytest.fixture
async def s3_store(moto_endpoint: str) -> AsyncIterator[BlobStore]:
    import aioboto3

    session = aioboto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    async with session.client("s3", endpoint_url=moto_endpoint) as s3:
        try:
            await s3.create_bucket(Bucket=BUCKET)
        except s3.exceptions.BucketAlreadyOwnedByYou:
            pass
    store = S3BlobStore(BUCKET, moto_endpoint, "us-east-1", "test", "test")
    yield store
    await store.close()


async def test_s3_round_trip(s3_store: BlobStore, moto_endpoint: str) -> None:
    assert await s3_store.get(NAME) is None
    await s3_store.put(NAME, b"RIFF-data", "image/webp")
    assert await s3_store.get(NAME) == (b"RIFF-data", "image/webp")
    await s3_store.put(NAME, b"replaced", "image/webp")
    assert await s3_store.get(NAME) == (b"replaced", "image/webp")

    import aioboto3

    session = aioboto3.Session(aws_access_key_id="test", aws_secret_access_key="test", region_name="us-east-1")
    async with session.client("s3", endpoint_url=moto_endpoint) as s3:
        head = await s3.head_object(Bucket=BUCKET, Key=NAME)
        assert head["ContentType"] == "image/webp"

    assert await s3_store.delete(NAME) is True
    assert await s3_store.delete(NAME) is False
    assert await s3_store.get(NAME) is None


@pytest.mark.parametrize("name", ["../escape1234.png", "abcdefgh1234.gif", "a/bcdefgh1234.png"])
async def test_s3_refuses_invalid_names(s3_store: BlobStore, name: str) -> None:
    with pytest.raises(BlobNameError):
        await s3_store.put(name, b"x", "image/png")
    assert await s3_store.get(name) is None
    assert await s3_store.delete(name) is False
