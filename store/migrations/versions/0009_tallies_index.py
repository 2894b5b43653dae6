"""Schema 9: the index on (status, removal) gains the model key, so that one scan of it counts
the rows by model and status and the indexed ones by removal way (`status`, the UI, metrics):
two scans of a million index entries were a tenth of a second. On PostgreSQL the vectors are
kept in their rows: a 2 KB vector passed its threshold and went out of line into TOAST, each
one read by an index lookup (a million loaded in 21 s, against 9 s for a plain scan of the
column), and in two chunks (1.56 x the vectors on disk). The rows in place are rewritten.

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
    if op.get_bind().dialect.name == "postgresql":
        # MAIN: in the row, out of it only where a row would not fit a page (vectors of over
        # about 2,000 dimensions). One statement: the rewrite that the type change forces
        # (the concatenation makes new values) stores every vector as MAIN says, inside this
        # transaction (VACUUM FULL would not run in one).
        op.execute(sa.text("ALTER TABLE images ALTER COLUMN vector TYPE bytea "
                           "USING vector || ''::bytea, ALTER COLUMN vector SET STORAGE MAIN"))
    op.execute(sa.text("UPDATE meta SET value = '9' WHERE key = 'schema_version'"))
