"""Alembic migrations for idp (shipped as the `idp_migrations` package)."""
