"""Alembic migrations of the `notify` schema."""
