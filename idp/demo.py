"""Demo data for trying idp on one laptop: a user, a public SPA client and a confidential client.

Idempotent: running it again creates only what is missing and never changes existing rows.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from idp.accounts.users import NewUser, create_user, normalize_email
from idp.oauth.clients import ClientSpec, create_client
from idp.runtime import Runtime
from idp.storage.repositories import ClientRepository, UserRepository

DEMO_EMAIL = "demo@example.com"
# Long enough for the single-factor minimum and not on common-password lists.
DEMO_PASSWORD = "lantern-orbit-meadow-42"  # noqa: S105 - published demo credential, dev only
DEMO_SPA_CLIENT_ID = "demo-spa"
DEMO_WEB_CLIENT_ID = "demo-web"
DEMO_SPA_ORIGIN = "http://127.0.0.1:8080"
DEMO_WEB_ORIGIN = "http://127.0.0.1:8081"


@dataclass(frozen=True)
class SeedResult:
    user_id: str
    user_created: bool
    spa_client_id: str
    spa_created: bool
    web_client_id: str
    web_created: bool
    web_client_secret: str | None

    def as_dict(self, issuer: str) -> dict[str, Any]:
        return {
            "issuer": issuer,
            "login": {
                "email": DEMO_EMAIL,
                "password": DEMO_PASSWORD,
                "user_id": self.user_id,
                "created": self.user_created,
            },
            "spa_client": {
                "client_id": self.spa_client_id,
                "created": self.spa_created,
                "redirect_uri": f"{DEMO_SPA_ORIGIN}/callback",
            },
            "web_client": {
                "client_id": self.web_client_id,
                "created": self.web_created,
                "client_secret": self.web_client_secret,
                "redirect_uri": f"{DEMO_WEB_ORIGIN}/callback",
            },
            "discovery": f"{issuer}/.well-known/openid-configuration",
        }


async def seed_demo(rt: Runtime) -> SeedResult:
    async with rt.db.session() as session:
        existing_user = await UserRepository(session).get_by_email_normalized(normalize_email(DEMO_EMAIL))
        clients = ClientRepository(session)
        has_spa = await clients.get(DEMO_SPA_CLIENT_ID) is not None
        has_web = await clients.get(DEMO_WEB_CLIENT_ID) is not None

    if existing_user is None:
        user = await create_user(
            rt.db,
            rt.passwords,
            rt.events,
            # An administrator, so the demo shows the admin pages too (they ask for a second
            # factor first, as [admin] require_mfa does by default).
            NewUser(email=DEMO_EMAIL, password=DEMO_PASSWORD, name="Demo User", email_verified=True, is_admin=True),
        )
        user_id, user_created = user.id, True
    else:
        user_id, user_created = existing_user.id, False

    if not has_spa:
        await create_client(
            rt.db,
            rt.events,
            ClientSpec(
                client_id=DEMO_SPA_CLIENT_ID,
                name="Demo SPA",
                client_type="public",
                redirect_uris=[f"{DEMO_SPA_ORIGIN}/callback"],
                post_logout_redirect_uris=[f"{DEMO_SPA_ORIGIN}/"],
                web_origins=[DEMO_SPA_ORIGIN],
                first_party=True,
            ),
        )

    web_secret = None
    if not has_web:
        created = await create_client(
            rt.db,
            rt.events,
            ClientSpec(
                client_id=DEMO_WEB_CLIENT_ID,
                name="Demo web app",
                client_type="confidential",
                redirect_uris=[f"{DEMO_WEB_ORIGIN}/callback"],
                post_logout_redirect_uris=[f"{DEMO_WEB_ORIGIN}/"],
                grant_types=["authorization_code", "refresh_token", "client_credentials"],
            ),
        )
        web_secret = created.client_secret

    return SeedResult(
        user_id=user_id,
        user_created=user_created,
        spa_client_id=DEMO_SPA_CLIENT_ID,
        spa_created=not has_spa,
        web_client_id=DEMO_WEB_CLIENT_ID,
        web_created=not has_web,
        web_client_secret=web_secret,
    )
