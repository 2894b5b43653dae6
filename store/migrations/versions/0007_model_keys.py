"""Schema 7: each model id stored once, in ``models``, and referred to from ``images`` by a
small integer key: the id (about 90 characters) in every row and three indexes was a fifth of
a million-image store. The index on the model alone goes; (model, status, path) covers it.
An index on (status, removal) lets `status` count by removal way without reading the table.

Revision ID: 0007
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table("models", sa.Column("id", sa.Integer, primary_key=True),
                    sa.Column("name", sa.String, nullable=False, unique=True))
    op.execute(sa.text("INSERT INTO models (name) SELECT DISTINCT model FROM images "
                       "WHERE model IS NOT NULL"))
    for index in ("ix_images_model", "ix_images_sha256_model", "ix_images_model_status_path"):
        op.drop_index(index, table_name="images")
    op.add_column("images", sa.Column("model_id", sa.Integer))
    op.execute(sa.text("UPDATE images SET model_id = "
                       "(SELECT id FROM models WHERE models.name = images.model)"))
    op.drop_column("images", "model")
    op.create_index("ix_images_sha256_model", "images", ["sha256", "model_id"])
    op.create_index("ix_images_model_status_path", "images", ["model_id", "status", "path"])
    op.create_index("ix_images_status_removal", "images", ["status", "removal"])
    op.execute(sa.text("UPDATE meta SET value = '7' WHERE key = 'schema_version'"))
