"""Token buckets for every limit (replacing the sliding-window `rate_hits`), and the event
log's retention: how far each user's log has been trimmed, and an index to trim by age.

Revision ID: 0009
Revises: 0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "rate_buckets",
        sa.Column("key", sa.String(200), primary_key=True),
        sa.Column("tokens", sa.Float, nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
    )
    op.drop_index("ix_rate_hits_key_at", table_name="rate_hits")
    op.drop_table("rate_hits")
    with op.batch_alter_table("event_counters") as batch:
        batch.add_column(
            sa.Column("trimmed_seq", sa.BigInteger, nullable=False, server_default="0")
        )
    op.create_index("ix_events_at", "events", ["at"])


def downgrade() -> None:
    op.drop_index("ix_events_at", table_name="events")
    with op.batch_alter_table("event_counters") as batch:
        batch.drop_column("trimmed_seq")
    op.create_table(
        "rate_hits",
        sa.Column("id", ID, primary_key=True, autoincrement=True),
        sa.Column("key", sa.String(200), nullable=False),
        sa.Column("at", sa.BigInteger, nullable=False),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_rate_hits_key_at", "rate_hits", ["key", "at"])
    op.drop_table("rate_buckets")
