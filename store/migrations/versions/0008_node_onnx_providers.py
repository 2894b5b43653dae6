"""Schema 8: what runs each node's ONNX models (`status` lists it beside the node).

Revision ID: 0008
Revises: 0007
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("nodes", sa.Column("onnx_providers", sa.String))
    op.execute(sa.text("UPDATE meta SET value = '8' WHERE key = 'schema_version'"))
