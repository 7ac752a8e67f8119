"""Alembic environment for jobqueue.

jobqueue runs alembic programmatically (see ``jobqueue/migrate.py``): the
caller hands over an open SQLAlchemy connection and the target schema through
``config.attributes``; the version table lives inside that schema.
"""

from alembic import context
from sqlalchemy import text

config = context.config
connection = config.attributes["connection"]
schema = config.attributes["schema"]

connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{schema}"'))
context.configure(
    connection=connection,
    version_table_schema=schema,
    transaction_per_migration=False,
)
with context.begin_transaction():
    context.run_migrations()
