"""Users can review and withdraw consent; withdrawing revokes the client's tokens (ASVS 10.4.9, 10.7.3)."""

from __future__ import annotations

from sqlalchemy import select

from idp.storage.models import AuditEvent, Consent, RefreshToken
from tests.oauth_helpers import basic, code_flow, csrf_from, make_world


async def test_apps_page_lists_consents_and_withdrawal_revokes_tokens(client, runtime) -> None:
    world = await make_world(runtime)
    tokens = await code_flow(client, world)
    page = await client.get("/account/apps")
    assert page.status_code == 200
    html = await page.get_data(as_text=True)
    assert f'data-client-id="{world.web_id}"' in html and "Web App" in html
    assert "email, offline_access, openid, profile" in html

    withdrawn = await client.post(f"/account/apps/{world.web_id}/withdraw", form={"csrf_token": csrf_from(html)})
    assert withdrawn.status_code == 303
    assert withdrawn.headers["Location"] == "/account/apps?withdrawn=1"

    async with runtime.db.session() as session:
        assert (await session.execute(select(Consent))).scalars().all() == []
        rows = (await session.execute(select(RefreshToken))).scalars().all()
        assert rows and all(row.revoked_at is not None for row in rows)
        events = [row.event for row in (await session.execute(select(AuditEvent))).scalars()]
    assert "consent_withdrawn" in events
    userinfo = await client.get("/userinfo", headers={"Authorization": f"Bearer {tokens['access_token']}"})
    assert userinfo.status_code == 401
    refreshed = await client.post(
        "/token",
        form={"grant_type": "refresh_token", "refresh_token": tokens["refresh_token"]},
        headers=basic(world.web_id, world.web_secret),
    )
    assert (await refreshed.get_json())["error"] == "invalid_grant"
    # The next authorization asks for consent again.
    again = await client.get(
        f"/authorize?response_type=code&client_id={world.web_id}&redirect_uri=https://rp.example/callback"
        "&scope=openid&code_challenge=E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM&code_challenge_method=S256"
    )
    assert again.headers["Location"].startswith("/authorize/consent/")


async def test_withdrawal_needs_csrf_and_a_session(app, client, runtime) -> None:
    world = await make_world(runtime)
    await code_flow(client, world)
    refused = await client.post(f"/account/apps/{world.web_id}/withdraw", form={"csrf_token": "0" * 64})
    assert refused.status_code == 403
    async with runtime.db.session() as session:
        assert len((await session.execute(select(Consent))).scalars().all()) == 1
    other_browser = app.test_client()  # no session cookie
    response = await other_browser.post(f"/account/apps/{world.web_id}/withdraw", form={"csrf_token": "x"})
    assert response.status_code == 303 and response.headers["Location"].startswith("/login")


async def test_withdrawing_unknown_consent_is_404(client, runtime) -> None:
    world = await make_world(runtime)
    await code_flow(client, world)
    html = await (await client.get("/account/apps")).get_data(as_text=True)
    response = await client.post("/account/apps/nope/withdraw", form={"csrf_token": csrf_from(html)})
    assert response.status_code == 404
