"""Profile pictures: upload through the account API and the account page, the public files, and
their removal with the account.

Every refused upload asserts the status, the field at fault, and that nothing changed: the
``users.picture`` column and the files in the picture directory exactly as they were.
"""

from __future__ import annotations

import io
import os
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from sqlalchemy import update
from werkzeug.datastructures import FileStorage

from idp.storage.models import AuditEvent, OAuthClient, User
from tests.oauth_helpers import PASSWORD, World, code_flow, csrf_from, login, make_world

MAX_UPLOAD = 200_000


@pytest.fixture
def settings_overrides(settings_overrides: dict[str, Any]) -> dict[str, Any]:
    return {**settings_overrides, "pictures": {"max_upload_bytes": MAX_UPLOAD}}


# -- images ----------------------------------------------------------------------------------------


def png(size: tuple[int, int] = (300, 200), mode: str = "RGBA") -> bytes:
    image = Image.new(mode, size, (10, 200, 30, 128) if mode == "RGBA" else (10, 200, 30))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def webp(size: tuple[int, int] = (120, 300)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (0, 0, 255)).save(buffer, "WEBP")
    return buffer.getvalue()


def gif() -> bytes:
    buffer = io.BytesIO()
    Image.new("P", (64, 64)).save(buffer, "GIF")
    return buffer.getvalue()


def jpeg_with_exif() -> bytes:
    """40x20: left half red, right half blue; EXIF says rotate 90° clockwise (orientation 6),
    and carries a camera make and a GPS position."""
    image = Image.new("RGB", (40, 20), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 20, 20))
    exif = Image.Exif()
    exif[0x010F] = "SpyCam Industries"  # Make
    exif[0x0112] = 6  # Orientation
    gps = exif.get_ifd(0x8825)
    gps[1] = "N"
    gps[2] = (52.0, 13.0, 7.5)
    gps[3] = "E"
    gps[4] = (13.0, 24.0, 1.25)
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", exif=exif, quality=95)
    data = buffer.getvalue()
    assert Image.open(io.BytesIO(data)).getexif().get_ifd(0x8825)  # the input does carry GPS
    return data


def png_declaring(width: int, height: int) -> bytes:
    """A 1x1 PNG whose header claims ``width`` x ``height`` (CRC fixed up): a decompression bomb."""
    data = bytearray(png((1, 1), "RGB"))
    assert data[12:16] == b"IHDR"
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def sparse_bomb() -> bytes:
    """A real 8000x8000 bilevel PNG: a few kilobytes, 64 megapixels (above max_pixels)."""
    buffer = io.BytesIO()
    Image.new("1", (8000, 8000)).save(buffer, "PNG")
    data = buffer.getvalue()
    assert len(data) < MAX_UPLOAD
    return data


# -- helpers ---------------------------------------------------------------------------------------


async def first_party_world(runtime: Any) -> World:
    world = await make_world(runtime)
    async with runtime.db.session() as session:
        await session.execute(
            update(OAuthClient).where(OAuthClient.id.in_((world.web_id, world.spa_id))).values(first_party=True)
        )
    return world


async def access_token(client: Any, world: World) -> str:
    tokens = await code_flow(client, world, scope="openid profile email")
    return str(tokens["access_token"])


def bearer(token: str, **headers: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}", **headers}


def picture_dir(settings: Any) -> Path:
    return Path(settings.data_dir) / "pictures"


def files_on_disk(settings: Any) -> list[str]:
    root = picture_dir(settings)
    return sorted(os.listdir(root)) if root.exists() else []


async def stored_picture(runtime: Any, user_id: str) -> str | None:
    async with runtime.db.session() as session:
        user = await session.get(User, user_id)
        assert user is not None
        return user.picture


async def put_raw(client: Any, token: str, data: bytes, content_type: str = "image/png") -> Any:
    return await client.put("/api/account/picture", data=data, headers=bearer(token, **{"Content-Type": content_type}))


async def assert_refused(response: Any, status: int, runtime: Any, world: World, before: tuple[Any, list[str]]) -> None:
    assert response.status_code == status, await response.get_data(as_text=True)
    if status == 400:
        body = await response.get_json()
        assert body["error"] == "invalid_request"
        assert body["field"] == "picture"
        assert body["error_description"].startswith("picture: ")
    assert (await stored_picture(runtime, world.user_id), files_on_disk(runtime.settings)) == before


# -- the account API -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "content_type", "source_size"),
    [
        (png(), "image/png", (300, 200)),
        (jpeg_with_exif(), "image/jpeg", (20, 40)),
        (webp(), "image/webp", (120, 300)),
        # The declared type doesn't matter: the bytes do.
        (png(), "application/octet-stream", (300, 200)),
    ],
)
async def test_upload_through_the_api(
    client: Any, runtime: Any, data: bytes, content_type: str, source_size: tuple[int, int]
) -> None:
    world = await first_party_world(runtime)
    token = await access_token(client, world)
    response = await put_raw(client, token, data, content_type)
    assert response.status_code == 200, await response.get_data(as_text=True)
    stored = await stored_picture(runtime, world.user_id)
    assert stored is not None and stored.endswith("-256.webp")
    token_part = stored.removesuffix("-256.webp")
    assert files_on_disk(runtime.settings) == sorted([f"{token_part}-256.webp", f"{token_part}-64.webp"])
    for size in (256, 64):
        with Image.open(picture_dir(runtime.settings) / f"{token_part}-{size}.webp") as image:
            assert image.format == "WEBP"
            assert image.size == (size, size)

    profile = await response.get_json()
    url = profile["picture"]
    assert url == f"http://127.0.0.1:8000/pictures/{stored}"
    userinfo = await client.get("/userinfo", headers=bearer(token))
    assert (await userinfo.get_json())["picture"] == url

    served = await client.get(url.removeprefix("http://127.0.0.1:8000"))
    assert served.status_code == 200
    assert served.headers["Content-Type"] == "image/webp"
    assert served.headers["Cache-Control"] == "public, max-age=86400, immutable"
    assert served.headers["X-Content-Type-Options"] == "nosniff"
    assert served.headers["Content-Security-Policy"] == "default-src 'none'"
    assert await served.get_data() == (picture_dir(runtime.settings) / stored).read_bytes()

    async with runtime.db.session() as session:
        from sqlalchemy import select

        events = (await session.execute(select(AuditEvent.event).where(AuditEvent.subject_id == world.user_id))).all()
    assert ("picture_changed",) in events


async def test_exif_is_stripped_and_orientation_applied(client: Any, runtime: Any) -> None:
    world = await first_party_world(runtime)
    token = await access_token(client, world)
    response = await put_raw(client, token, jpeg_with_exif(), "image/jpeg")
    assert response.status_code == 200
    stored = await stored_picture(runtime, world.user_id)
    raw = (picture_dir(runtime.settings) / str(stored)).read_bytes()
    assert b"Exif" not in raw and b"SpyCam" not in raw and b"ICCP" not in raw and b"XMP " not in raw
    with Image.open(io.BytesIO(raw)) as image:
        assert not image.getexif()
        assert "exif" not in image.info and "icc_profile" not in image.info and "xmp" not in image.info
        pixels = image.convert("RGB")
        # Turned upright: the red left half of the stored pixels is now the top half.
        red, blue = pixels.getpixel((235, 60)), pixels.getpixel((128, 235))
        assert red[0] > 200 and red[2] < 60
        assert blue[2] > 200 and blue[0] < 60


async def test_multipart_upload_through_the_api(client: Any, runtime: Any) -> None:
    world = await first_party_world(runtime)
    token = await access_token(client, world)
    response = await client.put(
        "/api/account/picture",
        files={"picture": FileStorage(io.BytesIO(webp()), filename="me.webp", content_type="image/webp")},
        headers=bearer(token),
    )
    assert response.status_code == 200, await response.get_data(as_text=True)
    assert len(files_on_disk(runtime.settings)) == 2


async def test_replacing_deletes_the_previous_files(client: Any, runtime: Any) -> None:
    world = await first_party_world(runtime)
    token = await access_token(client, world)
    assert (await put_raw(client, token, png())).status_code == 200
    first = await stored_picture(runtime, world.user_id)
    first_files = files_on_disk(runtime.settings)
    assert len(first_files) == 2
    assert (await put_raw(client, token, webp(), "image/webp")).status_code == 200
    second = await stored_picture(runtime, world.user_id)
    assert second != first
    after = files_on_disk(runtime.settings)
    assert len(after) == 2 and not set(after) & set(first_files)
    assert (await client.get(f"/pictures/{first}")).status_code == 404
    assert (await client.get(f"/pictures/{second}")).status_code == 200

    removed = await client.delete("/api/account/picture", headers=bearer(token))
    assert removed.status_code == 204
    assert await stored_picture(runtime, world.user_id) is None
    assert files_on_disk(runtime.settings) == []
    assert "picture" not in (await (await client.get("/userinfo", headers=bearer(token))).get_json())


@pytest.mark.parametrize(
    ("data", "content_type"),
    [
        (gif(), "image/gif"),
        (b"this is a text file, not a picture\n", "image/png"),  # a text file called .png
        (png()[:200], "image/png"),  # truncated
        (png()[:40], "image/png"),  # truncated inside the header
        (b"", "image/png"),
        (b"<svg xmlns='http://www.w3.org/2000/svg'/>", "image/svg+xml"),
    ],
    ids=["gif", "text", "truncated", "truncated-header", "empty", "svg"],
)
async def test_wrong_types_are_refused(client: Any, runtime: Any, data: bytes, content_type: str) -> None:
    world = await first_party_world(runtime)
    token = await access_token(client, world)
    assert (await put_raw(client, token, png())).status_code == 200
    before = (await stored_picture(runtime, world.user_id), files_on_disk(runtime.settings))
    await assert_refused(await put_raw(client, token, data, content_type), 400, runtime, world, before)


async def test_text_file_named_png_refused_in_multipart(client: Any, runtime: Any) -> None:
    world = await first_party_world(runtime)
    token = await access_token(client, world)
    response = await client.put(
        "/api/account/picture",
        files={"picture": FileStorage(io.BytesIO(b"hello"), filename="me.png", content_type="image/png")},
        headers=bearer(token),
    )
    await assert_refused(response, 400, runtime, world, (None, []))


@pytest.mark.parametrize("bomb", [png_declaring(20000, 20000), png_declaring(8000, 6000), sparse_bomb()])
async def test_decompression_bombs_are_refused(client: Any, runtime: Any, bomb: bytes) -> None:
    world = await first_party_world(runtime)
    token = await access_token(client, world)
    response = await put_raw(client, token, bomb)
    await assert_refused(response, 400, runtime, world, (None, []))
    assert "too large" in (await response.get_json())["error_description"]


async def test_oversized_upload_is_refused_with_413(client: Any, runtime: Any) -> None:
    world = await first_party_world(runtime)
    token = await access_token(client, world)
    big = png() + os.urandom(MAX_UPLOAD)
    await assert_refused(await put_raw(client, token, big), 413, runtime, world, (None, []))
    multipart = await client.put(
        "/api/account/picture",
        files={"picture": FileStorage(io.BytesIO(big), filename="me.png", content_type="image/png")},
        headers=bearer(token),
    )
    await assert_refused(multipart, 413, runtime, world, (None, []))


async def test_api_needs_a_first_party_token(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)  # not first-party
    token = await access_token(client, world)
    response = await put_raw(client, token, png())
    assert response.status_code == 403
    assert (await client.put("/api/account/picture", data=png())).status_code == 401
    assert files_on_disk(runtime.settings) == []


# -- serving ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path",
    ["/pictures/abcdefghijklmnop-256.webp", "/pictures/short.webp", "/pictures/..%2Fidp.sqlite3", "/pictures/x.gif"],
)
async def test_unknown_pictures_are_404(client: Any, path: str) -> None:
    assert (await client.get(path)).status_code == 404


# -- the account page ------------------------------------------------------------------------------


async def page_post(client: Any, data: bytes, filename: str, content_type: str, *, csrf: str | None = None) -> Any:
    page = await client.get("/account/picture")
    assert page.status_code == 200
    token = csrf if csrf is not None else csrf_from(await page.get_data(as_text=True))
    return await client.post(
        "/account/picture",
        form={"csrf_token": token, "action": "upload"},
        files={"picture": FileStorage(io.BytesIO(data), filename=filename, content_type=content_type)},
    )


async def test_upload_through_the_page(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    assert (await client.get("/account/picture")).status_code == 303  # signed out
    await login(client, world.email)
    response = await page_post(client, jpeg_with_exif(), "holiday.jpg", "image/jpeg")
    assert response.status_code == 303, await response.get_data(as_text=True)
    stored = await stored_picture(runtime, world.user_id)
    assert stored is not None and len(files_on_disk(runtime.settings)) == 2
    assert b"Exif" not in (picture_dir(runtime.settings) / stored).read_bytes()
    page = await (await client.get("/account/picture")).get_data(as_text=True)
    assert f'src="http://127.0.0.1:8000/pictures/{stored}"' in page

    # Replace, then remove.
    assert (await page_post(client, png(), "new.png", "image/png")).status_code == 303
    assert len(files_on_disk(runtime.settings)) == 2 and stored not in files_on_disk(runtime.settings)
    page = await client.get("/account/picture")
    removed = await client.post(
        "/account/picture", form={"csrf_token": csrf_from(await page.get_data(as_text=True)), "action": "remove"}
    )
    assert removed.status_code == 303
    assert await stored_picture(runtime, world.user_id) is None and files_on_disk(runtime.settings) == []


async def test_page_refusals(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    await login(client, world.email)
    forged = await page_post(client, png(), "me.png", "image/png", csrf="forged")
    assert forged.status_code == 403
    wrong = await page_post(client, b"GIF89a not really", "me.png", "image/png")
    assert wrong.status_code == 400
    assert "picture-error" in await wrong.get_data(as_text=True)
    bomb = await page_post(client, png_declaring(20000, 20000), "me.png", "image/png")
    assert bomb.status_code == 400
    big = await page_post(client, png() + os.urandom(MAX_UPLOAD), "me.png", "image/png")
    assert big.status_code == 413
    assert await stored_picture(runtime, world.user_id) is None and files_on_disk(runtime.settings) == []


# -- account deletion ------------------------------------------------------------------------------


async def test_deleting_the_account_through_the_api_removes_the_files(client: Any, runtime: Any) -> None:
    world = await first_party_world(runtime)
    token = await access_token(client, world)
    assert (await put_raw(client, token, png())).status_code == 200
    assert len(files_on_disk(runtime.settings)) == 2
    done = await client.delete("/api/account", json={"password": PASSWORD}, headers=bearer(token))
    assert done.status_code == 204
    assert files_on_disk(runtime.settings) == []


async def test_deleting_the_account_through_the_page_removes_the_files(client: Any, runtime: Any) -> None:
    world = await make_world(runtime)
    await login(client, world.email)
    assert (await page_post(client, png(), "me.png", "image/png")).status_code == 303
    assert len(files_on_disk(runtime.settings)) == 2
    page = await client.get("/account/delete")
    done = await client.post(
        "/account/delete",
        form={"csrf_token": csrf_from(await page.get_data(as_text=True)), "password": PASSWORD, "confirm": "delete"},
    )
    assert done.status_code == 200
    assert files_on_disk(runtime.settings) == []


async def test_preflight_for_the_picture_endpoint(client: Any, runtime: Any) -> None:
    await first_party_world(runtime)
    response = await client.options(
        "/api/account/picture",
        headers={"Origin": "http://127.0.0.1:8080", "Access-Control-Request-Method": "PUT"},
    )
    assert response.headers["Access-Control-Allow-Origin"] == "http://127.0.0.1:8080"
    assert response.headers["Access-Control-Allow-Methods"] == "PUT, DELETE"
