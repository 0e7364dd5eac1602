"""authorization codes: whether the request carried redirect_uri

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # RFC 6749 §4.1.3: the token request must repeat redirect_uri when the authorization request had
    # it. Existing codes (and inserts by the previous release during a rolling upgrade) default to
    # true, the stricter answer; the models always send a value.
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("redirect_uri_in_request", sa.Boolean(), server_default=sa.true(), nullable=False)
        )


def downgrade() -> None:
    with op.batch_alter_table("authorization_codes", schema=None) as batch_op:
        batch_op.drop_column("redirect_uri_in_request")
