"""Alembic's entry point for the store: the migrations run on the connection the store hands
over (``config.attributes["connection"]``), inside its transaction, so several nodes starting
at once on one database upgrade it once (the store holds a lock meanwhile)."""

from alembic import context

from lookalike.store.tables import Base

context.configure(connection=context.config.attributes["connection"],
                  target_metadata=Base.metadata, render_as_batch=True)
with context.begin_transaction():
    context.run_migrations()
