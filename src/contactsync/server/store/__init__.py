"""Storage: table definitions, the database handle, bulk helpers and Alembic migrations."""
