"""security state in SQL: revoked access tokens, revoked grants, the sessions relying parties joined

The key-value store (Redis) only caches these; losing it must not un-revoke anything (issue 15).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "revoked_access_tokens",
        sa.Column("jti", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("jti", name=op.f("pk_revoked_access_tokens")),
    )
    with op.batch_alter_table("revoked_access_tokens", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_revoked_access_tokens_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "revoked_grants",
        sa.Column("grant_id", sa.String(length=64), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("grant_id", name=op.f("pk_revoked_grants")),
    )
    with op.batch_alter_table("revoked_grants", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_revoked_grants_expires_at"), ["expires_at"], unique=False)

    op.create_table(
        "session_clients",
        sa.Column("sid", sa.String(length=64), nullable=False),
        sa.Column("client_id", sa.String(length=64), nullable=False),
        sa.Column("user_id", sa.String(length=36), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("expires_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["client_id"],
            ["oauth_clients.id"],
            name=op.f("fk_session_clients_client_id_oauth_clients"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_session_clients_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("sid", "client_id", name=op.f("pk_session_clients")),
    )
    with op.batch_alter_table("session_clients", schema=None) as batch_op:
        batch_op.create_index(batch_op.f("ix_session_clients_user_id"), ["user_id"], unique=False)
        batch_op.create_index(batch_op.f("ix_session_clients_expires_at"), ["expires_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("session_clients", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_session_clients_expires_at"))
        batch_op.drop_index(batch_op.f("ix_session_clients_user_id"))
    op.drop_table("session_clients")
    with op.batch_alter_table("revoked_grants", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_revoked_grants_expires_at"))
    op.drop_table("revoked_grants")
    with op.batch_alter_table("revoked_access_tokens", schema=None) as batch_op:
        batch_op.drop_index(batch_op.f("ix_revoked_access_tokens_expires_at"))
    op.drop_table("revoked_access_tokens")
