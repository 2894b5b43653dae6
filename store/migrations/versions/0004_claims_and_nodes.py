"""Schema 4: the claims that split work between nodes sharing the store, and the nodes.

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "claims",
        sa.Column("key", sa.String, primary_key=True),
        sa.Column("node", sa.String(32), nullable=False),
        sa.Column("expires", sa.Double, nullable=False),
    )
    op.create_index("ix_claims_node", "claims", ["node"])
    op.create_table(
        "nodes",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("host", sa.String, nullable=False),
        sa.Column("pid", sa.Integer, nullable=False),
        sa.Column("command", sa.String(16), nullable=False),
        sa.Column("model", sa.String, nullable=False),
        sa.Column("since", sa.Double, nullable=False),
        sa.Column("heartbeat", sa.Double, nullable=False),
        sa.Column("lease", sa.Double, nullable=False),
        sa.Column("queue", sa.Integer, nullable=False),
        sa.Column("embedded", sa.Integer, nullable=False),
        sa.Column("last_problem", sa.String),
    )
    op.execute(sa.text("UPDATE meta SET value = '4' WHERE key = 'schema_version'"))
