"""Storage: SQLAlchemy tables, Alembic migrations shipped in the package, and repositories.

Only repositories touch tables; services (in ``alize.gateway`` and elsewhere) own transactions
and generate ids and timestamps. Build one ``Database`` with ``open_database(url)`` in the app's
lifespan and ``close()`` it on shutdown.
"""

from alize.store.database import Database, database_urls, open_database

__all__ = ["Database", "database_urls", "open_database"]
