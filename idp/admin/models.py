"""The admin API's request and response bodies as typed models (pydantic): quart-schema validates
requests with them and writes the OpenAPI 3.1 document (/openapi.json) from them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# One shape for an activity entry, the account API's and the admin API's alike.
from idp.accounts.api_models import ActivityItem


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- users -----------------------------------------------------------------------------------------


class UserQuery(_Model):
    q: str | None = Field(default=None, max_length=320, description="Part of the address or a name.")
    status: Literal["active", "unverified", "disabled", "locked"] | None = Field(
        default=None, description="locked: under an account-wide sign-in lock now."
    )
    admin: bool | None = Field(default=None, description="Only administrators (true) or only others (false).")
    mfa: bool | None = Field(default=None, description="With a second factor (true) or without (false).")
    cursor: str | None = Field(default=None, max_length=200, description="next_cursor of the page before.")
    limit: int = Field(default=50, ge=1, le=200)


class UserSummary(_Model):
    id: str
    email: str
    name: str | None
    email_verified: bool
    disabled: bool
    is_admin: bool
    created_at: str | None
    last_login_at: str | None


class UserPage(_Model):
    items: list[UserSummary]
    next_cursor: str | None = Field(description="Pass as cursor for the next page; null on the last one.")


class SecondFactors(_Model):
    totp: bool
    passkeys: int
    recovery_codes_left: int


class Consent(_Model):
    client_id: str
    client: str
    scopes: list[str]
    updated_at: str | None


class SessionOut(_Model):
    id: str
    device: str
    ip: str | None
    signed_in_at: str | None
    last_seen_at: str | None
    applications: list[str]
    amr: list[str]
    acr: str | None
    current: bool = False


class UserDetail(UserSummary):
    given_name: str | None
    family_name: str | None
    has_password: bool
    password_changed_at: str | None
    second_factors: SecondFactors
    consents: list[Consent]
    recent_activity: list[ActivityItem]
    locked_for: int | None = Field(
        default=None, description="Seconds the account-wide sign-in lock still holds (0: none; null: out of reach)."
    )
    sessions: list[SessionOut] | None = Field(
        default=None, description="Where the user is signed in (null when the sessions are out of reach)."
    )


class EndSessions(_Model):
    session_id: str | None = Field(default=None, max_length=64, description="One session; all when absent.")


class ActionResult(_Model):
    id: str
    changed: bool = Field(description="False when the account was in that state already.")


class SessionsEnded(_Model):
    id: str
    sessions_ended: int


class FactorsReset(_Model):
    id: str
    factors_removed: int


# -- audit -----------------------------------------------------------------------------------------


class AuditQuery(_Model):
    user: str | None = Field(default=None, max_length=64, description="Events about this user id.")
    client: str | None = Field(default=None, max_length=64, description="Events of this client id.")
    event: str | None = Field(default=None, max_length=64, description="An event name, e.g. login_failed.")
    outcome: Literal["success", "failure"] | None = None
    since: str | None = Field(default=None, max_length=40, description="ISO 8601; inclusive. UTC if no offset.")
    until: str | None = Field(default=None, max_length=40, description="ISO 8601; exclusive.")
    before: int | None = Field(default=None, ge=1, description="next_before of the page before.")
    limit: int = Field(default=50, ge=1, le=500)


class AuditExportQuery(_Model):
    user: str | None = Field(default=None, max_length=64)
    client: str | None = Field(default=None, max_length=64)
    event: str | None = Field(default=None, max_length=64)
    outcome: Literal["success", "failure"] | None = None
    since: str | None = Field(default=None, max_length=40)
    until: str | None = Field(default=None, max_length=40)
    format: Literal["csv", "json"] = "csv"


class AuditEventOut(_Model):
    id: int
    occurred_at: str
    event: str
    outcome: str
    actor_id: str | None
    subject_id: str | None
    client_id: str | None
    ip: str | None
    user_agent: str | None
    request_id: str | None
    details: dict[str, Any]


class AuditPage(_Model):
    items: list[AuditEventOut]
    next_before: int | None = Field(description="Pass as before for older events; null on the last page.")


# -- clients ---------------------------------------------------------------------------------------

GrantType = Literal["authorization_code", "refresh_token", "client_credentials"]
AuthMethod = Literal["client_secret_basic", "client_secret_post", "private_key_jwt", "none"]
SigningAlg = Literal["RS256", "ES256", "Ed25519", "EdDSA"]


class ClientIn(_Model):
    """A registration, validated as a whole like `idp clients create` (each problem named by field)."""

    name: str = Field(max_length=200)
    client_type: Literal["public", "confidential"]
    client_id: str | None = Field(default=None, max_length=64, description="Default: random.")
    redirect_uris: list[str] = Field(default_factory=list, max_length=50)
    post_logout_redirect_uris: list[str] = Field(default_factory=list, max_length=50)
    grant_types: list[GrantType] = Field(default_factory=list, description="Default: code and refresh.")
    scopes: list[str] = Field(default_factory=list, max_length=100, description="Default: the standard scopes.")
    token_endpoint_auth_method: AuthMethod | None = None
    web_origins: list[str] = Field(default_factory=list, max_length=50)
    application_type: Literal["web", "native"] = "web"
    first_party: bool = False
    id_token_signed_response_alg: SigningAlg | None = None
    subject_type: Literal["public", "pairwise"] = "public"
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = Field(default=None, max_length=2048)
    backchannel_logout_uri: str | None = Field(default=None, max_length=2048)


class ClientPatch(_Model):
    """The fields to change; a field given as null is cleared. The id, the type and the subject
    type can't change (register a new client instead)."""

    name: str | None = Field(default=None, max_length=200)
    redirect_uris: list[str] | None = Field(default=None, max_length=50)
    post_logout_redirect_uris: list[str] | None = Field(default=None, max_length=50)
    grant_types: list[GrantType] | None = None
    scopes: list[str] | None = Field(default=None, max_length=100)
    token_endpoint_auth_method: AuthMethod | None = None
    web_origins: list[str] | None = Field(default=None, max_length=50)
    application_type: Literal["web", "native"] | None = None
    first_party: bool | None = None
    id_token_signed_response_alg: SigningAlg | None = None
    jwks: dict[str, Any] | None = None
    jwks_uri: str | None = Field(default=None, max_length=2048)
    backchannel_logout_uri: str | None = Field(default=None, max_length=2048)


class ClientOut(_Model):
    client_id: str
    name: str
    client_type: str
    application_type: str
    token_endpoint_auth_method: str
    redirect_uris: list[str]
    post_logout_redirect_uris: list[str]
    grant_types: list[str]
    response_types: list[str]
    scopes: list[str]
    web_origins: list[str]
    id_token_signed_response_alg: str | None
    subject_type: str
    backchannel_logout_uri: str | None
    first_party: bool
    disabled: bool
    created_at: str
    client_secret: str | None = Field(default=None, description="Only in the answer that created it.")


class ClientList(_Model):
    items: list[ClientOut]


class ClientQuery(_Model):
    q: str | None = Field(default=None, max_length=200, description="Part of the client id or name.")


class SecretOut(_Model):
    client_id: str
    client_secret: str = Field(description="Shown only in this answer; the previous one stops working at once.")


class ClientChanged(_Model):
    client_id: str
    changed: bool


# -- signing keys ----------------------------------------------------------------------------------


class KeyOut(_Model):
    kid: str
    alg: str
    status: str = Field(
        description="active (signing), next (published; signs once the active key hands over), "
        "retiring (published until its tokens expire) or expired."
    )
    created_at: str
    retired_at: str | None
    publish_until: str | None


class KeyList(_Model):
    items: list[KeyOut]


class RotateKeys(_Model):
    algorithms: list[Literal["RS256", "ES256", "Ed25519"]] | None = Field(
        default=None, description="Default: every configured algorithm."
    )


class KeysRotated(_Model):
    created: list[str]
    items: list[KeyOut]


class KeysPurged(_Model):
    removed: int
