"""Storage: SQLAlchemy tables, Alembic migrations shipped in the package, and repositories.

Only repositories touch tables; services (in ``alize.gateway`` and elsewhere) own transactions
and generate ids and timestamps. Build one ``Database`` with ``open_database(url)`` in the app's
lifespan and ``close()`` it on shutdown.
"""

# registers the chat and job tables on the shared metadata, so Alembic and every test see one schema
from alize.store import chat_models as chat_models
from alize.store import jobs_models as jobs_models
from alize.store.database import Database, database_urls, open_database

__all__ = ["Database", "database_urls", "open_database"]
