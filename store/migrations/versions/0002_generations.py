"""Schema 2: the write generation of each row and of the store, and the log of removals, so
readers follow the store by what changed.

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("images") as images:
        images.add_column(sa.Column("generation", sa.Integer, nullable=False,
                                    server_default="0"))
        images.create_index("ix_images_generation", ["generation"])
        # Covers counting, listing and browsing one model's indexed paths without the vectors.
        images.create_index("ix_images_model_status_path", ["model", "status", "path"])
    op.create_table(
        "removals",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("generation", sa.Integer, nullable=False),
        sa.Column("path", sa.String, nullable=False),
    )
    op.create_index("ix_removals_generation", "removals", ["generation"])
    # The row writers lock to take generations in commit order.
    op.execute(sa.text("INSERT INTO meta (key, value) SELECT 'generation', '0' WHERE NOT EXISTS "
                       "(SELECT 1 FROM meta WHERE key = 'generation')"))
    op.execute(sa.text("UPDATE meta SET value = '2' WHERE key = 'schema_version'"))
