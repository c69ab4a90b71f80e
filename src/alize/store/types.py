"""Column types shared by every table.

Timestamps are the one value whose storage differs between backends: PostgreSQL keeps
``timestamptz`` while SQLite stores text with no zone. ``UTCDateTime`` hides that difference so
the rest of the code only ever sees timezone-aware UTC datetimes, and so that SQL comparisons
on SQLite (which are text comparisons) stay correct because every stored value is UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

#: a 64-bit integer that is still SQLite's rowid alias when used as an autoincrement key
BigIntId = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """A timezone-aware UTC datetime on the way in and out, whatever the backend stores."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored: pass an aware (UTC) datetime")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            # SQLite keeps text; a fixed zone (UTC) and format keep text order == time order
            return value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            return value.replace(tzinfo=UTC)
        return value.astimezone(UTC)
