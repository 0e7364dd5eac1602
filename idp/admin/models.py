"""The admin API's request and response bodies as typed models (pydantic): quart-schema validates
requests with them and writes the OpenAPI 3.1 document (/openapi.json) from them."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


# -- errors ----------------------------------------------------------------------------------------


class ErrorOut(_Model):
    error: str = Field(description="A stable code: invalid_request, invalid_token, forbidden, not_found, ...")
    error_description: str
    fields: dict[str, str] | None = Field(default=None, description="For invalid_request: each bad field's problem.")


# -- users -----------------------------------------------------------------------------------------


class UserQuery(_Model):
    q: str | None = Field(default=None, max_length=320, description="Part of the address or a name.")
    status: Literal["active", "unverified", "disabled"] | None = None
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


class ActivityItem(_Model):
    id: int
    event: str
    outcome: str
    occurred_at: str | None
    ip: str | None
    user_agent: str | None
    client_id: str | None
    details: dict[str, Any]


class UserDetail(UserSummary):
    given_name: str | None
    family_name: str | None
    has_password: bool
    password_changed_at: str | None
    second_factors: SecondFactors
    consents: list[Consent]
    recent_activity: list[ActivityItem]
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
