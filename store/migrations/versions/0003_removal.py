"""Schema 3: how each image's background was removed (NULL for rows written before).

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("images", sa.Column("removal", sa.String(96)))
    op.execute(sa.text("UPDATE meta SET value = '3' WHERE key = 'schema_version'"))
