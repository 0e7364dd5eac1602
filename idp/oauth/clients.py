"""The client registry: validated registration of OAuth clients (CLI now, admin pages later).

Secrets are generated here with 256 bits of entropy, returned once, and stored only as a digest.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from idp.events import (
    ClientCreated,
    ClientDeleted,
    ClientDisabled,
    ClientEnabled,
    ClientSecretRotated,
    ClientUpdated,
    EventBus,
)
from idp.oauth.grants import GRANTS, GrantContext, revoke_client_grants
from idp.oauth.scopes import STANDARD_SCOPES
from idp.security.hosts import is_loopback_host
from idp.security.tokens import random_token, secret_digest
from idp.storage.db import Database
from idp.storage.models import OAuthClient
from idp.storage.repositories import ClientRepository

# What a client may register for is what the token endpoint's registry implements.
GRANT_TYPES = tuple(GRANTS)
AUTH_METHODS = ("client_secret_basic", "client_secret_post", "private_key_jwt", "none")
SIGNING_ALGS = ("RS256", "ES256", "Ed25519", "EdDSA")
# Patterns are used with fullmatch only: "^...$" with match() also accepts a trailing newline.
# RFC 6749 §3.3: scope-token = 1*( %x21 / %x23-5B / %x5D-7E )
_SCOPE_TOKEN = re.compile(r"[\x21\x23-\x5B\x5D-\x7E]+")
_CLIENT_ID = re.compile(r"[A-Za-z0-9._~-]{3,64}")
# RFC 8252 §7.1: private-use URI schemes are reverse domain names.
_PRIVATE_SCHEME = re.compile(r"[a-z][a-z0-9+.-]*\.[a-z0-9+.-]+")
MAX_URI_LENGTH = 2048


class ClientValidationError(ValueError):
    """A client field is invalid; ``field`` names it so the CLI/admin can point at the input."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


@dataclass
class ClientSpec:
    name: str
    client_type: str  # "public" | "confidential"
    redirect_uris: list[str] = field(default_factory=list)
    post_logout_redirect_uris: list[str] = field(default_factory=list)
    grant_types: list[str] = field(default_factory=list)
    scopes: list[str] = field(default_factory=list)
    token_endpoint_auth_method: str | None = None
    web_origins: list[str] = field(default_factory=list)
    application_type: str = "web"
    first_party: bool = False
    client_id: str | None = None
    id_token_signed_response_alg: str | None = None
    subject_type: str = "public"
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = None
    backchannel_logout_uri: str | None = None


@dataclass(frozen=True)
class CreatedClient:
    client: OAuthClient
    # The plain secret, available only at creation time.
    client_secret: str | None


def _check_uri(field_name: str, uri: str, application_type: str, *, redirect: bool) -> None:
    if not uri or len(uri) > MAX_URI_LENGTH:
        raise ClientValidationError(field_name, f"must be 1 to {MAX_URI_LENGTH} characters")
    if any(ch.isspace() for ch in uri):
        raise ClientValidationError(field_name, f"{uri!r} contains whitespace")
    parts = urlsplit(uri)
    if parts.fragment or "#" in uri:
        # RFC 6749 §3.1.2: the redirection endpoint URI MUST NOT include a fragment.
        raise ClientValidationError(field_name, f"{uri!r} must not contain a fragment")
    scheme = parts.scheme.lower()
    if scheme in ("https", "http"):
        host = parts.hostname or ""
        if not host:
            raise ClientValidationError(field_name, f"{uri!r} has no host")
        if "*" in uri:
            raise ClientValidationError(field_name, f"{uri!r}: wildcards are not allowed (exact matching)")
        if scheme == "http" and not is_loopback_host(host):
            # RFC 9700 §2.6: no authorization responses over unencrypted transport, except loopback.
            raise ClientValidationError(field_name, f"{uri!r} must use https (http only for loopback hosts)")
        return
    if redirect and application_type == "native" and _PRIVATE_SCHEME.fullmatch(scheme):
        return  # RFC 8252 §7.1 private-use scheme
    if not scheme:
        raise ClientValidationError(field_name, f"{uri!r} is not an absolute URI")
    raise ClientValidationError(
        field_name,
        f"{uri!r} must be https (or http on a loopback host"
        + (", or a reverse-domain private-use scheme for native clients)" if redirect else ")"),
    )


def _check_origin(origin: str) -> str:
    parts = urlsplit(origin)
    if parts.scheme not in ("https", "http") or not parts.hostname or parts.path not in ("", "/"):
        raise ClientValidationError("web_origins", f"{origin!r} must be an origin like https://app.example.com")
    if parts.query or parts.fragment or "*" in origin:
        raise ClientValidationError("web_origins", f"{origin!r} must be a plain origin (no wildcard, query)")
    if parts.scheme == "http" and not is_loopback_host(parts.hostname):
        raise ClientValidationError("web_origins", f"{origin!r} must use https (http only for loopback hosts)")
    return f"{parts.scheme}://{parts.netloc}"


def _dedupe(values: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(values))


def validate_spec(spec: ClientSpec) -> ClientSpec:
    """Check every field and fill defaults; raises ClientValidationError naming the field."""
    name = spec.name.strip()
    if not name or len(name) > 200:
        raise ClientValidationError("name", "must be 1 to 200 characters")
    if spec.client_type not in ("public", "confidential"):
        raise ClientValidationError("client_type", "must be public or confidential")
    if spec.application_type not in ("web", "native"):
        raise ClientValidationError("application_type", "must be web or native")
    if spec.client_id is not None and not _CLIENT_ID.fullmatch(spec.client_id):
        raise ClientValidationError("client_id", "must be 3-64 characters of A-Z a-z 0-9 . _ ~ -")

    grants = _dedupe(spec.grant_types or ["authorization_code", "refresh_token"])
    for grant in grants:
        if grant not in GRANT_TYPES:
            # RFC 9700 §2.4 / ASVS 10.4.4: no implicit, no password grant.
            raise ClientValidationError("grant_types", f"{grant!r} is not supported (one of {', '.join(GRANT_TYPES)})")
    if spec.client_type == "public" and "client_credentials" in grants:
        raise ClientValidationError("grant_types", "client_credentials needs a confidential client")

    method = spec.token_endpoint_auth_method or ("none" if spec.client_type == "public" else "client_secret_basic")
    if method not in AUTH_METHODS:
        raise ClientValidationError("token_endpoint_auth_method", f"{method!r} is not one of {', '.join(AUTH_METHODS)}")
    if spec.client_type == "public" and method != "none":
        raise ClientValidationError("token_endpoint_auth_method", "public clients authenticate with none")
    if spec.client_type == "confidential" and method == "none":
        raise ClientValidationError("token_endpoint_auth_method", "confidential clients must authenticate")
    if method == "private_key_jwt" and not (spec.jwks or spec.jwks_uri):
        raise ClientValidationError("jwks", "private_key_jwt needs the client's public keys (jwks or jwks_uri)")
    if spec.jwks is not None and not (isinstance(spec.jwks, dict) and isinstance(spec.jwks.get("keys"), list)):
        raise ClientValidationError("jwks", "must be a JWK Set: an object with a keys array")
    if spec.jwks_uri is not None:
        _check_uri("jwks_uri", spec.jwks_uri, "web", redirect=False)

    redirect_uris = _dedupe(spec.redirect_uris)
    if "authorization_code" in grants and not redirect_uris:
        raise ClientValidationError("redirect_uris", "at least one is required for the authorization_code grant")
    for uri in redirect_uris:
        _check_uri("redirect_uris", uri, spec.application_type, redirect=True)
    post_logout = _dedupe(spec.post_logout_redirect_uris)
    for uri in post_logout:
        _check_uri("post_logout_redirect_uris", uri, spec.application_type, redirect=True)
    if spec.backchannel_logout_uri is not None:
        _check_uri("backchannel_logout_uri", spec.backchannel_logout_uri, "web", redirect=False)

    scopes = _dedupe(spec.scopes or list(STANDARD_SCOPES))
    for scope in scopes:
        if not _SCOPE_TOKEN.fullmatch(scope) or len(scope) > 100:
            raise ClientValidationError("scopes", f"{scope!r} is not a valid scope token (RFC 6749 §3.3)")

    alg = spec.id_token_signed_response_alg
    if alg is not None and alg not in SIGNING_ALGS:
        raise ClientValidationError("id_token_signed_response_alg", f"{alg!r} is not one of {', '.join(SIGNING_ALGS)}")
    if alg == "EdDSA":
        alg = "Ed25519"
    if spec.subject_type not in ("public", "pairwise"):
        raise ClientValidationError("subject_type", "must be public or pairwise")
    if spec.subject_type == "pairwise":
        # OIDC Core §8.1: without a sector_identifier_uri, the sector is the redirect URIs' one host.
        hosts = {urlsplit(uri).hostname for uri in spec.redirect_uris}
        if len(hosts) > 1:
            raise ClientValidationError(
                "subject_type", "pairwise clients must register redirect URIs on a single host (their sector)"
            )

    origins = _dedupe([_check_origin(origin) for origin in spec.web_origins])

    return ClientSpec(
        name=name,
        client_type=spec.client_type,
        redirect_uris=redirect_uris,
        post_logout_redirect_uris=post_logout,
        grant_types=grants,
        scopes=scopes,
        token_endpoint_auth_method=method,
        web_origins=origins,
        application_type=spec.application_type,
        first_party=spec.first_party,
        client_id=spec.client_id,
        id_token_signed_response_alg=alg,
        subject_type=spec.subject_type,
        jwks=spec.jwks,
        jwks_uri=spec.jwks_uri,
        backchannel_logout_uri=spec.backchannel_logout_uri,
    )


def new_client_id() -> str:
    """A random client id (144 bits, base64url) that never starts with "-": such an id would read
    as an option on a command line (`idp clients show -x…`)."""
    while (client_id := random_token(18)).startswith("-"):
        pass
    return client_id


def uses_client_secret(method: str) -> bool:
    return method in ("client_secret_basic", "client_secret_post")


async def create_client(
    db: Database, events: EventBus, spec: ClientSpec, *, pairwise_available: bool = True
) -> CreatedClient:
    spec = validate_spec(spec)
    if spec.subject_type == "pairwise" and not pairwise_available:
        raise ClientValidationError("subject_type", "pairwise subjects need secrets.pairwise_secret to be configured")
    assert spec.token_endpoint_auth_method is not None
    secret = random_token(32) if uses_client_secret(spec.token_endpoint_auth_method) else None
    client = OAuthClient(
        id=spec.client_id or new_client_id(),
        name=spec.name,
        client_type=spec.client_type,
        application_type=spec.application_type,
        secret_digest=secret_digest(secret) if secret else None,
        token_endpoint_auth_method=spec.token_endpoint_auth_method,
        redirect_uris=spec.redirect_uris,
        post_logout_redirect_uris=spec.post_logout_redirect_uris,
        grant_types=spec.grant_types,
        response_types=["code"] if "authorization_code" in spec.grant_types else [],
        scopes=spec.scopes,
        web_origins=spec.web_origins,
        id_token_signed_response_alg=spec.id_token_signed_response_alg,
        subject_type=spec.subject_type,
        jwks=spec.jwks,
        jwks_uri=spec.jwks_uri,
        backchannel_logout_uri=spec.backchannel_logout_uri,
        first_party=spec.first_party,
        require_pkce=True,
    )
    async with db.session() as session:
        repo = ClientRepository(session)
        if spec.client_id is not None and await repo.get(spec.client_id) is not None:
            raise ClientValidationError("client_id", f"{spec.client_id!r} is already registered")
        await repo.add(client)
    await events.publish(ClientCreated(client=client.id, client_type=client.client_type))
    return CreatedClient(client=client, client_secret=secret)


def describe_client(client: OAuthClient) -> dict[str, Any]:
    """Public view of a client (never the secret digest)."""
    return {
        "client_id": client.id,
        "name": client.name,
        "client_type": client.client_type,
        "application_type": client.application_type,
        "token_endpoint_auth_method": client.token_endpoint_auth_method,
        "redirect_uris": list(client.redirect_uris),
        "post_logout_redirect_uris": list(client.post_logout_redirect_uris),
        "grant_types": list(client.grant_types),
        "response_types": list(client.response_types),
        "scopes": list(client.scopes),
        "web_origins": list(client.web_origins),
        "id_token_signed_response_alg": client.id_token_signed_response_alg,
        "subject_type": client.subject_type,
        "backchannel_logout_uri": client.backchannel_logout_uri,
        "first_party": client.first_party,
        "disabled": client.disabled,
        "created_at": client.created_at.isoformat(),
    }


async def rotate_client_secret(db: Database, events: EventBus, client_id: str) -> str:
    """Replace a confidential client's secret; the old one stops working at once."""
    async with db.session() as session:
        client = await ClientRepository(session).get(client_id)
        if client is None:
            raise ClientValidationError("client_id", f"{client_id!r} is not a registered client")
        if not uses_client_secret(client.token_endpoint_auth_method):
            raise ClientValidationError(
                "client_id",
                f"{client_id!r} authenticates with {client.token_endpoint_auth_method}, not a secret",
            )
        secret = random_token(32)
        client.secret_digest = secret_digest(secret)
    await events.publish(ClientSecretRotated(client=client_id))
    return secret


# -- changing a registration ------------------------------------------------------------------

# What an update may change; the id and the type are the client's identity (a public client
# becoming confidential, or the reverse, is a new registration).
UPDATABLE_FIELDS = (
    "name",
    "redirect_uris",
    "post_logout_redirect_uris",
    "grant_types",
    "scopes",
    "token_endpoint_auth_method",
    "web_origins",
    "application_type",
    "first_party",
    "id_token_signed_response_alg",
    "subject_type",
    "jwks",
    "jwks_uri",
    "backchannel_logout_uri",
)


def spec_of(client: OAuthClient) -> ClientSpec:
    """The registration of a stored client, as create_client took it."""
    return ClientSpec(
        name=client.name,
        client_type=client.client_type,
        redirect_uris=list(client.redirect_uris),
        post_logout_redirect_uris=list(client.post_logout_redirect_uris),
        grant_types=list(client.grant_types),
        scopes=list(client.scopes),
        token_endpoint_auth_method=client.token_endpoint_auth_method,
        web_origins=list(client.web_origins),
        application_type=client.application_type,
        first_party=client.first_party,
        client_id=client.id,
        id_token_signed_response_alg=client.id_token_signed_response_alg,
        subject_type=client.subject_type,
        jwks=client.jwks,
        jwks_uri=client.jwks_uri,
        backchannel_logout_uri=client.backchannel_logout_uri,
    )


async def _registered(session_clients: ClientRepository, client_id: str) -> OAuthClient:
    client = await session_clients.get(client_id)
    if client is None:
        raise ClientValidationError("client_id", f"{client_id[:64]!r} is not a registered client")
    return client


async def update_client(db: Database, events: EventBus, client_id: str, changes: dict[str, Any]) -> CreatedClient:
    """Change fields of a registration (``changes``: field name to new value, None clearing an
    optional one), validated as a whole like a new registration. Moving to a secret method from
    one without a secret issues a secret, returned once; moving away from one forgets it. Raises
    ClientValidationError naming the field, changing nothing."""
    unknown = sorted(set(changes) - set(UPDATABLE_FIELDS))
    if unknown:
        raise ClientValidationError(unknown[0], "can't be changed: register a new client instead")
    async with db.session() as session:
        client = await _registered(ClientRepository(session), client_id)
        current = spec_of(client)
        if "subject_type" in changes and changes["subject_type"] != current.subject_type:
            # OIDC Core §8: the client's users would get new subject identifiers.
            raise ClientValidationError("subject_type", "can't change once issued: register a new client instead")
        spec = validate_spec(ClientSpec(**{**current.__dict__, **changes}))
        assert spec.token_endpoint_auth_method is not None
        secret = None
        if uses_client_secret(spec.token_endpoint_auth_method) and client.secret_digest is None:
            secret = random_token(32)
            client.secret_digest = secret_digest(secret)
        elif not uses_client_secret(spec.token_endpoint_auth_method):
            client.secret_digest = None
        changed = tuple(name for name in UPDATABLE_FIELDS if getattr(spec, name) != getattr(current, name))
        for name in changed:
            setattr(client, name, getattr(spec, name))
        client.response_types = ["code"] if "authorization_code" in spec.grant_types else []
    if changed:
        await events.publish(ClientUpdated(client=client_id, fields=changed))
    return CreatedClient(client=client, client_secret=secret)


async def set_client_disabled(db: Database, events: EventBus, client_id: str, disabled: bool) -> bool:
    """Disable (the client can't authenticate and its tokens are refused at once) or enable a
    client; False when it was so already."""
    async with db.session() as session:
        client = await _registered(ClientRepository(session), client_id)
        if client.disabled == disabled:
            return False
        client.disabled = disabled
    await events.publish(ClientDisabled(client=client_id) if disabled else ClientEnabled(client=client_id))
    return True


async def delete_client(grants: GrantContext, db: Database, events: EventBus, client_id: str) -> bool:
    """Delete a registration: its grants are revoked first (access tokens included), then the
    client with its codes, refresh tokens and consents. False when there was no such client (a
    delete repeated is not an error)."""
    async with db.session() as session:
        if await ClientRepository(session).get(client_id) is None:
            return False
        # Disabled at once, so nothing new is issued while the grants are revoked.
        await ClientRepository(session).set_disabled(client_id, True)
    revoked = await revoke_client_grants(grants, client_id, reason="client_deleted")
    async with db.session() as session:
        deleted = await ClientRepository(session).delete(client_id)
    if deleted:
        await events.publish(ClientDeleted(client=client_id, grants_revoked=revoked))
    return deleted
