"""Profile pictures: checking an upload, re-encoding it and keeping it in the blob store.

An upload is never stored as sent. Its format is read from its bytes (the declared content type
is ignored) and only PNG, JPEG and WebP are accepted; its dimensions are read from the header and
refused above ``max_pixels`` before any pixel is decoded (decompression bombs); the pixels are
then turned upright (EXIF orientation), cropped to a centred square and written afresh as WebP at
each configured size. Nothing of the original file but its pixels survives: no EXIF (GPS
positions, camera serials), no ICC profile, no text chunks, no trailing data.

Stored names are ``<random>-<size>.webp``; ``users.picture`` holds the name of the largest, which
is the name the `picture` claim URL points to ({issuer}/pictures/<name>). A new picture gets a
new random name, so the files can be cached for ever, and the previous files are deleted.
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import secrets
import warnings
from collections.abc import Iterable

from PIL import Image, ImageOps, UnidentifiedImageError

from idp.accounts.context import AccountContext
from idp.accounts.users import AccountError
from idp.config import PictureSettings
from idp.events import PictureChanged
from idp.storage.blobs import BlobStore
from idp.storage.repositories import UserRepository

log = logging.getLogger("idp.accounts")

ACCEPTED_FORMATS = ("PNG", "JPEG", "WEBP")
CONTENT_TYPE = "image/webp"
WEBP_QUALITY = 85
_STORED_NAME = re.compile(r"(?P<token>[A-Za-z0-9_]{16,40})-(?P<size>[0-9]{1,4})\.webp")


class PictureTooLarge(AccountError):
    """The upload is larger than ``max_upload_bytes`` (routes answer 413)."""

    def __init__(self, limit: int) -> None:
        super().__init__("picture", f"must be at most {limit} bytes")
        self.limit = limit


def _error(message: str) -> AccountError:
    return AccountError("picture", message)


def render_sizes(data: bytes, settings: PictureSettings) -> dict[int, bytes]:
    """Check and re-encode an upload: WebP bytes per configured size. CPU-bound: run off the loop.

    Raises PictureTooLarge or AccountError("picture", …).
    """
    if len(data) > settings.max_upload_bytes:
        raise PictureTooLarge(settings.max_upload_bytes)
    if not data:
        raise _error("is empty")
    with warnings.catch_warnings():
        # Pillow warns (and above twice its limit raises) for images past Image.MAX_IMAGE_PIXELS;
        # either way the image is refused, never decoded.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(io.BytesIO(data), formats=ACCEPTED_FORMATS) as image:
                width, height = image.size
                if width < 1 or height < 1:
                    raise _error("has no pixels")
                if width * height > settings.max_pixels:
                    raise _error(f"is too large ({width}x{height} pixels; at most {settings.max_pixels} pixels)")
                image.seek(0)  # the first frame of an animation
                image.load()
                upright = ImageOps.exif_transpose(image)
                return _encode(upright, settings.sizes)
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise _error(f"is too large (at most {settings.max_pixels} pixels)") from None
        except UnidentifiedImageError:
            raise _error("must be a PNG, JPEG or WebP image") from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            if isinstance(exc, AccountError):
                raise
            # Truncated or corrupt data (Pillow raises OSError, SyntaxError or ValueError).
            raise _error("could not be read (the file is damaged or incomplete)") from None


def _encode(image: Image.Image, sizes: Iterable[int]) -> dict[int, bytes]:
    has_alpha = image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or (image.mode == "P" and "transparency" in image.info)
    mode = "RGBA" if has_alpha else "RGB"
    if image.mode in ("I", "I;16", "I;16B", "I;16L", "F"):
        # High-bit-depth greyscale: scale down to 8 bits before converting.
        image = image.convert("I").point(lambda value: value / 256).convert("L")
    converted = image.convert(mode)
    # Rebuilt from the pixels alone: no info dict, EXIF, ICC profile or text carried over.
    clean = Image.frombytes(mode, converted.size, converted.tobytes())
    width, height = clean.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    square = clean.crop((left, top, left + side, top + side))
    result: dict[int, bytes] = {}
    for size in sizes:
        resized = square if side == size else square.resize((size, size), Image.Resampling.LANCZOS)
        buffer = io.BytesIO()
        resized.save(buffer, "WEBP", quality=WEBP_QUALITY, method=4)
        result[size] = buffer.getvalue()
    return result


def stored_names(stored: str, sizes: Iterable[int]) -> list[str]:
    """Every file of a stored picture: the name kept in ``users.picture`` and its other sizes."""
    names = [stored]
    match = _STORED_NAME.fullmatch(stored)
    if match is not None:
        names += [f"{match['token']}-{size}.webp" for size in sizes if f"{match['token']}-{size}.webp" != stored]
    return names


def _is_ours(stored: str | None) -> bool:
    # An absolute URL (set by an administrator or an import) is a picture hosted elsewhere.
    return bool(stored) and "://" not in (stored or "")


async def delete_picture_files(blobs: BlobStore, stored: str, settings: PictureSettings) -> None:
    """Delete every size of a stored picture (``stored`` as kept in ``users.picture``)."""
    if not _is_ours(stored):
        return
    for name in stored_names(stored, settings.sizes):
        await blobs.delete(name)


async def _delete_quietly(blobs: BlobStore, stored: str, settings: PictureSettings) -> None:
    try:
        await delete_picture_files(blobs, stored, settings)
    except Exception as exc:  # the change is made; an orphaned file costs disk space only
        log.error("could not delete a replaced picture", extra={"error": type(exc).__name__})


async def set_picture(
    ctx: AccountContext,
    blobs: BlobStore,
    user_id: str,
    data: bytes,
    settings: PictureSettings,
    *,
    client_id: str | None = None,
) -> str:
    """Check, re-encode and store a new picture; returns the name now in ``users.picture``.

    Raises PictureTooLarge or AccountError("picture", …); nothing is stored or changed then.
    """
    if len(data) > settings.max_upload_bytes:
        raise PictureTooLarge(settings.max_upload_bytes)
    rendered = await asyncio.to_thread(render_sizes, data, settings)
    token = secrets.token_urlsafe(18).replace("-", "_")  # no "-": it separates the size
    names = {size: f"{token}-{size}.webp" for size in rendered}
    written: list[str] = []
    try:
        for size, body in rendered.items():
            await blobs.put(names[size], body, CONTENT_TYPE)
            written.append(names[size])
        stored = names[max(rendered)]
        async with ctx.db.session() as session:
            user = await UserRepository(session).get(user_id)
            if user is None or user.disabled:
                raise AccountError("user", "the account is not available")
            previous = user.picture
            user.picture = stored
    except BaseException:
        for name in written:
            try:
                await blobs.delete(name)
            except Exception as exc:
                log.error("could not delete a picture left by a failed upload", extra={"error": type(exc).__name__})
        raise
    if previous and previous != stored:
        await _delete_quietly(blobs, previous, settings)
    await ctx.events.publish(PictureChanged(user_id=user_id, client=client_id))
    return stored


async def remove_picture(
    ctx: AccountContext, blobs: BlobStore, user_id: str, settings: PictureSettings, *, client_id: str | None = None
) -> bool:
    """Clear the user's picture and delete its files; False when there was none."""
    async with ctx.db.session() as session:
        user = await UserRepository(session).get(user_id)
        if user is None or user.disabled:
            raise AccountError("user", "the account is not available")
        previous = user.picture
        if previous is None:
            return False
        user.picture = None
    await _delete_quietly(blobs, previous, settings)
    await ctx.events.publish(PictureChanged(user_id=user_id, removed=True, client=client_id))
    return True
