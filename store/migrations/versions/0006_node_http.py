"""Schema 6: the address each node answers HTTP on (`status` lists it; the UI asks a node
that answers instead of loading its own copy of the index).

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("http", sa.String))
    op.execute(sa.text("UPDATE meta SET value = '6' WHERE key = 'schema_version'"))
