"""Accounts: look-ups by id and address, the insert that lets the database decide a race, and the
few column updates the account use cases make.

Addresses arrive normalised (``idp.accounts.users.normalize_email``): what counts as the same
address is the accounts domain's rule, not storage's."""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import ColumnElement, and_, exists, false, func, inspect, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from idp.storage.models import KnownDevice, MfaCredential, User
from idp.storage.repositories.errors import AlreadyTaken, LastAdministrator


@dataclass(frozen=True)
class SignInAccount:
    """An account as a password attempt needs it, read in one statement."""

    user: User
    device_known: bool  # the browser (by its device cookie's digest) signed in to it before
    second_factor: bool  # it has a confirmed second factor (TOTP, passkey)


class UserRepository:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session

    async def get(self, user_id: str) -> User | None:
        return await self.session.get(User, user_id)

    async def all_ids(self) -> list[str]:
        return list((await self.session.execute(select(User.id).order_by(User.id))).scalars())

    async def get_by_email_normalized(self, email_normalized: str) -> User | None:
        result = await self.session.execute(select(User).where(User.email_normalized == email_normalized))
        return result.scalar_one_or_none()

    async def for_sign_in(self, email_normalized: str, device_digest: str | None) -> SignInAccount | None:
        """The account with this address, with whether the device signed in to it before and
        whether it has a second factor: one statement, as cheap for an address without an account."""
        return await self._for_sign_in(User.email_normalized == email_normalized, device_digest)

    async def for_reauthentication(self, user_id: str, device_digest: str | None) -> SignInAccount | None:
        """The same for a signed-in user checking their password again."""
        return await self._for_sign_in(User.id == user_id, device_digest)

    async def _for_sign_in(self, where: ColumnElement[bool], device_digest: str | None) -> SignInAccount | None:
        known: ColumnElement[bool] = (
            exists().where(KnownDevice.user_id == User.id, KnownDevice.device_digest == device_digest)
            if device_digest
            else false()
        )
        factor = exists().where(MfaCredential.user_id == User.id, MfaCredential.confirmed_at.is_not(None))
        row = (await self.session.execute(select(User, known, factor).where(where))).first()
        if row is None:
            return None
        user, device_known, second_factor = row
        return SignInAccount(user, bool(device_known), bool(second_factor))

    async def adopt(self, user: User) -> User:
        """``user`` as an earlier unit of work loaded it, taken into this one without reading it
        again (no statement): a look-up by its id here answers from memory. The copy to use is the
        one returned."""
        return await self.session.merge(user, load=False)

    async def record_sign_in(self, user: User, *, at: datetime, password_hash: str | None = None) -> None:
        """The account signed in with its password at ``at``; ``password_hash``: the password hashed
        again with today's parameters. One UPDATE; ``user`` (adopted here) shows the new values."""
        values: dict[str, Any] = {"last_login_at": at, "updated_at": at}
        if password_hash:
            values["password_hash"] = password_hash
        statement = update(User).where(User.id == user.id).values(**values)
        await self.session.execute(statement.execution_options(synchronize_session=False))
        for key, value in values.items():
            set_committed_value(user, key, value)

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

    async def lock(self, user_id: str) -> bool:
        """Hold the account's row until the transaction ends, so changes to one user's credentials
        are decided one at a time. False when the account doesn't exist (any more).

        PostgreSQL: the row lock (SELECT … FOR UPDATE). SQLite has no row locks and renders no FOR
        UPDATE, and its driver begins the transaction only at the first write, so the reads that
        follow a SELECT here would see the database as it was before a concurrent change commits:
        an UPDATE that changes nothing takes the database's one write lock now instead."""
        if self.session.get_bind().dialect.name == "sqlite":
            result = await self.session.execute(
                update(User).where(User.id == user_id).values(id=User.id, updated_at=User.updated_at)
            )
            return getattr(result, "rowcount", 0) == 1
        query = select(User.id).where(User.id == user_id).with_for_update()
        return (await self.session.execute(query)).scalar_one_or_none() is not None

    async def set_disabled(self, user_id: str, disabled: bool) -> None:
        await self.session.execute(update(User).where(User.id == user_id).values(disabled=disabled))

    async def change_unless_last_admin(self, user_id: str, **values: bool) -> None:
        """Set ``values`` (``is_admin``, ``disabled``) on the account unless that leaves no enabled
        administrator: then raise LastAdministrator, and the caller's transaction rolls the change
        back. Decided one change at a time: the enabled administrators' rows are locked first
        (PostgreSQL FOR UPDATE; SQLite has one writer), so two administrators demoting each other
        at once can't both succeed."""
        admins = select(User.id).where(User.is_admin.is_(True), User.disabled.is_(False))
        # The administrators and the account changed, locked by one statement in one order (by id):
        # locking the administrators, then the account by its UPDATE, let concurrent changes each
        # hold a row another waited for (measured: PostgreSQL "deadlock detected", a 500, for most
        # of 20 concurrent demotions).
        locked = select(User.id, User.is_admin, User.disabled).where(
            or_(and_(User.is_admin.is_(True), User.disabled.is_(False)), User.id == user_id)
        )
        rows = (await self.session.execute(locked.order_by(User.id).with_for_update())).all()
        before = {row.id for row in rows if row.is_admin and not row.disabled}
        await self.session.execute(update(User).where(User.id == user_id).values(**values))
        # Only a change to an enabled administrator can leave none (an install may have none yet).
        if user_id in before and not (await self.session.execute(admins)).first():
            raise LastAdministrator()

    async def set_admin(self, user_id: str, is_admin: bool) -> None:
        await self.session.execute(update(User).where(User.id == user_id).values(is_admin=is_admin))

    async def mark_email_verified(self, user_id: str) -> bool:
        """Mark the address verified; False when it was already (or the account is gone)."""
        result = await self.session.execute(
            update(User).where(User.id == user_id, User.email_verified.is_(False)).values(email_verified=True)
        )
        return bool(getattr(result, "rowcount", 0) == 1)

    async def count_enabled_admins(self) -> int:
        query = select(func.count()).select_from(User).where(User.is_admin.is_(True), User.disabled.is_(False))
        return int((await self.session.execute(query)).scalar_one())

    async def search(
        self,
        *,
        text: str | None = None,
        status: str | None = None,
        admin: bool | None = None,
        with_second_factor: bool | None = None,
        among: Collection[str] | None = None,
        after: tuple[datetime, str] | None = None,
        limit: int = 50,
    ) -> Sequence[User]:
        """Accounts in the order they were created (then by id), after the ``after`` position: a
        stable cursor, since neither changes. ``text`` matches the address or any name part
        (case-insensitive substring); ``status`` is "active", "unverified" or "disabled"; ``among``
        keeps only these ids."""
        query = select(User)
        if among is not None:
            query = query.where(User.id.in_(list(among)))
        if text:
            pattern = "%" + text.lower().replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            query = query.where(
                or_(
                    *(
                        func.lower(column).like(pattern, escape="\\")
                        for column in (User.email_normalized, User.name, User.given_name, User.family_name)
                    )
                )
            )
        if status == "active":
            query = query.where(User.disabled.is_(False), User.email_verified.is_(True))
        elif status == "unverified":
            query = query.where(User.disabled.is_(False), User.email_verified.is_(False))
        elif status == "disabled":
            query = query.where(User.disabled.is_(True))
        if admin is not None:
            query = query.where(User.is_admin.is_(admin))
        if with_second_factor is not None:
            factor = exists().where(MfaCredential.user_id == User.id, MfaCredential.confirmed_at.is_not(None))
            query = query.where(factor if with_second_factor else ~factor)
        if after is not None:
            created_at, user_id = after
            query = query.where(
                or_(User.created_at > created_at, and_(User.created_at == created_at, User.id > user_id))
            )
        query = query.order_by(User.created_at, User.id).limit(limit)
        return (await self.session.execute(query)).scalars().all()

    async def set_verified_email(self, user: User, email: str, email_normalized: str) -> None:
        """Give the (loaded) account a new, verified address. Raises AlreadyTaken when another
        account holds ``email_normalized``: the unique index settles a race the caller's look-up
        could not."""
        user.email = email
        user.email_normalized = email_normalized
        user.email_verified = True
        try:
            await self.session.flush()
        except IntegrityError:
            raise AlreadyTaken("email_normalized") from None

    async def count_by_status(self) -> dict[str, int]:
        """Accounts by status as ``search`` defines them, and how many are administrators."""
        row = (
            await self.session.execute(
                select(
                    func.count().filter(User.disabled.is_(False), User.email_verified.is_(True)),
                    func.count().filter(User.disabled.is_(False), User.email_verified.is_(False)),
                    func.count().filter(User.disabled.is_(True)),
                    func.count().filter(User.is_admin.is_(True)),
                    func.count(),
                ).select_from(User)
            )
        ).one()
        return dict(zip(("active", "unverified", "disabled", "admins", "total"), (int(n) for n in row), strict=True))

    async def count(self) -> int:
        return int((await self.session.execute(select(func.count()).select_from(User))).scalar_one())
