"""Signing keys as administrators see them: every key with its state, for the CLI and the API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from idp.storage.db import Database
from idp.storage.models import SigningKey
from idp.storage.repositories import SigningKeyRepository


def _state(row: SigningKey, handing_over: set[str], now: datetime) -> str:
    retired_at = _aware(row.retired_at)
    if row.status == "active":
        # A rotated-in key waits, published, while the key it replaces signs on.
        return "next" if row.alg in handing_over else "active"
    if retired_at is not None and retired_at > now:
        return "active"
    publish_until = _aware(row.publish_until)
    return "retiring" if publish_until is not None and publish_until > now else "expired"


def _aware(moment: datetime | None) -> datetime | None:
    """SQLite hands back naive UTC datetimes."""
    return moment.replace(tzinfo=UTC) if moment is not None and moment.tzinfo is None else moment


async def describe_keys(db: Database) -> list[dict[str, Any]]:
    """Each key: active (signing), next (published, signing once the active key hands over),
    retiring (still published until its tokens expire) or expired (no longer published:
    ``idp keys purge`` deletes it)."""
    now = datetime.now(UTC)
    async with db.session() as session:
        rows = await SigningKeyRepository(session).all()
    handing_over = {
        row.alg
        for row in rows
        if row.status == "retired" and (retired_at := _aware(row.retired_at)) is not None and retired_at > now
    }
    return [
        {
            "kid": row.kid,
            "alg": row.alg,
            "status": _state(row, handing_over, now),
            "created_at": row.created_at.isoformat(),
            "retired_at": row.retired_at.isoformat() if row.retired_at else None,
            "publish_until": row.publish_until.isoformat() if row.publish_until else None,
        }
        for row in rows
    ]
