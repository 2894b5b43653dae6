"""Schema 9: the index on (status, removal) gains the model key, so that one scan of it counts
the rows by model and status and the indexed ones by removal way (`status`, the UI, metrics):
two scans of a million index entries were a tenth of a second.

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_images_status_removal", table_name="images")
    op.create_index("ix_images_status_removal_model", "images", ["status", "removal", "model_id"])
    op.execute(sa.text("UPDATE meta SET value = '9' WHERE key = 'schema_version'"))
