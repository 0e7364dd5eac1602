"""Async repositories: narrow, named for the use cases that need them.

Each takes an ``AsyncSession`` from ``Database.session()``; the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, func, inspect, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from idp.storage.models import AuditEvent, AuthorizationCode, KnownDevice, OAuthClient, RefreshToken, SigningKey, User


def normalize_email(email: str) -> str:
    # Domain parts are case-insensitive; local parts technically are not, but every mainstream
    # provider treats them so, and two accounts differing only in case invite confusion.
    return email.strip().lower()


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: str) -> User | None:
        return await self.session.get(User, user_id)

    async def get_by_email(self, email: str) -> User | None:
        result = await self.session.execute(select(User).where(User.email_normalized == normalize_email(email)))
        return result.scalar_one_or_none()

    async def add_unless_taken(self, user: User) -> bool:
        """Insert ``user`` unless an account has its address (``email_normalized``) already; whether
        it was inserted. The unique constraint decides, within the one INSERT (ON CONFLICT DO
        NOTHING): two sign-ups racing for an address can't both win, a taken address costs the
        same statement as a free one, and the database raises (and logs) no error naming it.

        ``user`` stays out of the session (it is not loaded back): give it every value it needs,
        its id included, before calling."""
        values = {
            attribute.key: getattr(user, attribute.key)
            for attribute in inspect(User).column_attrs
            if getattr(user, attribute.key) is not None
        }
        # Both dialects spell it the same; their Insert classes differ only in name.
        insert = postgresql.insert if self.session.get_bind().dialect.name == "postgresql" else sqlite.insert
        statement = insert(User).values(values).on_conflict_do_nothing(index_elements=["email_normalized"])
        result = await self.session.execute(statement)
        return getattr(result, "rowcount", 0) == 1

    async def count(self) -> int:
        return int((await self.session.execute(select(func.count()).select_from(User))).scalar_one())


class ClientRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, client_id: str) -> OAuthClient | None:
        return await self.session.get(OAuthClient, client_id)

    async def get_by_name(self, name: str) -> OAuthClient | None:
        result = await self.session.execute(select(OAuthClient).where(OAuthClient.name == name))
        return result.scalars().first()

    async def add(self, client: OAuthClient) -> OAuthClient:
        self.session.add(client)
        await self.session.flush()
        return client

    async def list(self) -> Sequence[OAuthClient]:
        result = await self.session.execute(select(OAuthClient).order_by(OAuthClient.created_at, OAuthClient.id))
        return result.scalars().all()


class SigningKeyRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def published(self, now: datetime) -> Sequence[SigningKey]:
        """Active keys and retired keys still inside their publication window."""
        result = await self.session.execute(
            select(SigningKey)
            .where(
                or_(
                    SigningKey.status == "active",
                    (SigningKey.status == "retired") & (SigningKey.publish_until > now),
                )
            )
            .order_by(SigningKey.created_at.desc(), SigningKey.kid)
        )
        return result.scalars().all()

    async def all(self) -> Sequence[SigningKey]:
        result = await self.session.execute(select(SigningKey).order_by(SigningKey.created_at.desc(), SigningKey.kid))
        return result.scalars().all()

    async def active(self) -> Sequence[SigningKey]:
        result = await self.session.execute(select(SigningKey).where(SigningKey.status == "active"))
        return result.scalars().all()

    async def add(self, key: SigningKey) -> None:
        self.session.add(key)
        await self.session.flush()

    async def retire(self, kids: Sequence[str], now: datetime, publish_until: datetime) -> None:
        if kids:
            await self.session.execute(
                update(SigningKey)
                .where(SigningKey.kid.in_(kids), SigningKey.status == "active")
                .values(status="retired", retired_at=now, publish_until=publish_until)
            )

    async def delete_expired(self, now: datetime) -> int:
        result = await self.session.execute(
            delete(SigningKey).where(SigningKey.status == "retired", SigningKey.publish_until <= now)
        )
        return int(getattr(result, "rowcount", 0) or 0)


class AuditRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def append(self, **fields: Any) -> AuditEvent:
        entry = AuditEvent(**fields)
        self.session.add(entry)
        await self.session.flush()
        return entry

    async def for_subject(self, subject_id: str, limit: int = 50) -> Sequence[AuditEvent]:
        result = await self.session.execute(
            select(AuditEvent)
            .where(AuditEvent.subject_id == subject_id)
            .order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc())
            .limit(limit)
        )
        return result.scalars().all()

    async def recent(self, limit: int = 50) -> Sequence[AuditEvent]:
        result = await self.session.execute(
            select(AuditEvent).order_by(AuditEvent.occurred_at.desc(), AuditEvent.id.desc()).limit(limit)
        )
        return result.scalars().all()


class MaintenanceRepository:
    """Deletes rows that can no longer matter (run by `idp db cleanup`, e.g. from cron)."""

    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def delete_expired(
        self,
        now: datetime,
        code_grace: timedelta = timedelta(days=1),
        device_lifetime: timedelta = timedelta(days=400),
    ) -> dict[str, int]:
        # Used codes are kept a while past expiry: replay detection needs them, not just validity.
        codes = await self.session.execute(
            delete(AuthorizationCode).where(AuthorizationCode.expires_at < now - code_grace)
        )
        # A refresh token past its own expiry can't be used; its family-mates carry the family.
        refresh = await self.session.execute(
            delete(RefreshToken).where(
                or_(RefreshToken.family_expires_at < now, RefreshToken.expires_at < now - code_grace)
            )
        )
        # A browser unseen for longer than its device cookie lives can't be recognised any more.
        devices = await self.session.execute(
            delete(KnownDevice).where(KnownDevice.last_seen_at < now - device_lifetime)
        )
        return {
            "authorization_codes": int(getattr(codes, "rowcount", 0) or 0),
            "refresh_tokens": int(getattr(refresh, "rowcount", 0) or 0),
            "known_devices": int(getattr(devices, "rowcount", 0) or 0),
        }
