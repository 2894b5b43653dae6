"""${message}

Revision ID: ${up_revision}
Revises: ${down_revision | comma,n}
"""

import sqlalchemy as sa
from alembic import op

revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
branch_labels = None
depends_on = None


def upgrade() -> None:
    ${upgrades if upgrades else "pass"}
    # Older lookalikes read this key and refuse a schema newer than theirs.
    op.execute(sa.text("UPDATE meta SET value = '${int(up_revision)}' WHERE key = 'schema_version'"))
