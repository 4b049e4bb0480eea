"""Alembic migrations of the annotation database (run by ``database.migrate``)."""
