"""Signing keys as administrators see them: every key with its state, for the CLI and the API."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from idp.storage.db import Database
from idp.storage.repositories import SigningKeyRepository


def _state(status: str, publish_until: datetime | None, now: datetime) -> str:
    if status == "active":
        return "active"
    return "retiring" if publish_until is not None and publish_until > now else "expired"


async def describe_keys(db: Database) -> list[dict[str, Any]]:
    """Each key: active, retiring (still published until its tokens expire) or expired (no longer
    published: ``idp keys purge`` deletes it)."""
    now = datetime.now(UTC)
    async with db.session() as session:
        rows = await SigningKeyRepository(session).all()
    return [
        {
            "kid": row.kid,
            "alg": row.alg,
            "status": _state(row.status, row.publish_until, now),
            "created_at": row.created_at.isoformat(),
            "retired_at": row.retired_at.isoformat() if row.retired_at else None,
            "publish_until": row.publish_until.isoformat() if row.publish_until else None,
        }
        for row in rows
    ]
