"""The metadata store: SQLAlchemy models, repositories and Alembic migrations.

SQLite file under the data directory by default; PostgreSQL when ``store_url`` says so.
"""
