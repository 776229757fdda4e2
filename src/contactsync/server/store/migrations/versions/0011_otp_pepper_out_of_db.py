"""The OTP pepper leaves the database: it sat beside the code hashes, so a dump alone let
anyone try the million codes against a live hash. It is now CONTACTSYNC_OTP_PEPPER or the file
`<data_dir>/otp_pepper` (services/otp.py).

Codes issued before the upgrade were hashed with the old pepper and cannot be checked with the
new one: they are deleted here (explicitly invalidated; a user asks for a new code, which
lives five minutes anyway). Downgrading restores neither: an older server makes itself a new
pepper in the database on its first code.

Revision ID: 0011
Revises: 0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(sa.text("DELETE FROM app_settings WHERE key = 'secret.otp_pepper'"))
    op.execute(sa.text("DELETE FROM otp_codes"))


def downgrade() -> None:
    pass
