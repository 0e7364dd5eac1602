"""What the admin dashboard shows: accounts by status, live sessions, clients, sign-ins and
failures per hour over the last day, and the latest security events.

Every number comes from a count the database or the key-value store makes (never a day of audit
rows loaded into memory); the hours with no sign-in are there, as zeros, so the chart has 24 bars.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from idp.accounts.context import AccountContext
from idp.admin.audit import audit_row
from idp.admin.users import locked_accounts
from idp.events import (
    AccountDisabled,
    AccountLocked,
    AdminGranted,
    AdminRevoked,
    LoginFailed,
    LoginSucceeded,
    MfaDisabled,
    MfaEnabled,
    NewDeviceSignIn,
    PasskeyRegistered,
    PasskeyRemoved,
    RecoveryCodesRegenerated,
    RecoveryCodeUsed,
    SecondFactorsReset,
)
from idp.storage.repositories import AuditFilter, AuditRepository, ClientRepository, UserRepository

HOURS = 24
SECURITY_EVENTS = tuple(
    event.name
    for event in (
        AccountLocked,
        NewDeviceSignIn,
        MfaEnabled,
        MfaDisabled,
        PasskeyRegistered,
        PasskeyRemoved,
        RecoveryCodeUsed,
        RecoveryCodesRegenerated,
        SecondFactorsReset,
        AdminGranted,
        AdminRevoked,
        AccountDisabled,
    )
)
LATEST_SECURITY_EVENTS = 10


@dataclass(frozen=True)
class Hour:
    start: datetime  # UTC, on the hour
    sign_ins: int
    failures: int


@dataclass(frozen=True)
class Dashboard:
    users: dict[str, int]  # active, unverified, disabled, locked, admins, total
    sessions: int
    clients: dict[str, int]  # enabled, disabled, total
    hours: list[Hour]  # oldest first; the last is the current hour
    security_events: list[dict[str, Any]]


def last_hours(rows: list[tuple[str, str, int]], now: datetime) -> list[Hour]:
    """The last HOURS hours ending with the current one, from (``"YYYY-MM-DD HH"``, event, count)."""
    counts: dict[tuple[str, str], int] = {(hour, event): count for hour, event, count in rows}
    current = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    hours = []
    for back in range(HOURS - 1, -1, -1):
        start = current - timedelta(hours=back)
        key = start.strftime("%Y-%m-%d %H")
        hours.append(Hour(start, counts.get((key, LoginSucceeded.name), 0), counts.get((key, LoginFailed.name), 0)))
    return hours


async def dashboard(ctx: AccountContext, *, now: datetime | None = None) -> Dashboard:
    now = now or datetime.now(UTC)
    since = now.astimezone(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=HOURS - 1)
    async with ctx.db.session() as session:
        users = await UserRepository(session).count_by_status()
        clients = await ClientRepository(session).list()
        audit = AuditRepository(session)
        hourly = await audit.hourly_counts((LoginSucceeded.name, LoginFailed.name), since)
        latest = await audit.newest(AuditFilter(events=SECURITY_EVENTS), limit=LATEST_SECURITY_EVENTS)
    disabled_clients = sum(1 for client in clients if client.disabled)
    return Dashboard(
        users={**users, "locked": len(await locked_accounts(ctx))},
        sessions=await ctx.sessions.count_active(),
        clients={"enabled": len(clients) - disabled_clients, "disabled": disabled_clients, "total": len(clients)},
        hours=last_hours(hourly, now),
        security_events=[audit_row(event) for event in latest],
    )
