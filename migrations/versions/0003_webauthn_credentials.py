"""webauthn credentials: backup flags, aaguid, discoverable

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The server defaults make existing rows valid and keep inserts by the previous release (which
    # doesn't know these columns) working during a rolling upgrade; the models always send a value.
    with op.batch_alter_table("mfa_credentials", schema=None) as batch_op:
        batch_op.add_column(sa.Column("backup_eligible", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("backed_up", sa.Boolean(), server_default=sa.false(), nullable=False))
        batch_op.add_column(sa.Column("aaguid", sa.String(length=36), nullable=True))
        batch_op.add_column(sa.Column("discoverable", sa.Boolean(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("mfa_credentials", schema=None) as batch_op:
        batch_op.drop_column("discoverable")
        batch_op.drop_column("aaguid")
        batch_op.drop_column("backed_up")
        batch_op.drop_column("backup_eligible")
