"""SQLAlchemy tables, engines, repositories and the Alembic migration chain."""
