"""Schema 5: the reading limits a failed file was refused under (retried when they change),
and each node's pid space and limits (a node is live by its heartbeat, or by its pid only
within its own pid space; nodes of one store share their limits).

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("images", sa.Column("limits", sa.String))
    op.add_column("nodes", sa.Column("pid_space", sa.String))
    op.add_column("nodes", sa.Column("limits", sa.String))
    op.execute(sa.text("UPDATE meta SET value = '5' WHERE key = 'schema_version'"))
