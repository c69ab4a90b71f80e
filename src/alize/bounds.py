"""Bounds on every integer a client sends, written once and used by every request model.

Python integers have no size, but the database columns behind them do (SQLite and
PostgreSQL ``BIGINT`` hold at most 2^63 - 1, PostgreSQL ``INTEGER`` 2^31 - 1), and so do the
engines (llama.cpp seeds are 32-bit, with 2^32 - 1 meaning "pick one at random"). An unbounded
field turned ``{"rpm": 2**64}`` into an ``OverflowError`` and an HTTP 500; bounded here, it is a
422 that names the field. The integers are also *strict*: JSON ``true`` is not the number 1,
and ``"5"`` is not 5 (pydantic's lax mode would accept both).
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, Strict

#: the largest value of a 32-bit signed column (PostgreSQL ``INTEGER``): rate limits
INT32_MAX = 2**31 - 1
#: the largest value of a 64-bit signed column (``BIGINT``): money in micro-units, sequence numbers
INT64_MAX = 2**63 - 1
#: llama.cpp seeds are ``uint32``; 2^32 - 1 is its "random seed" sentinel, so it is left out
SEED_MAX = 2**32 - 2
#: the most tokens any request may name (the deployment's own limit is checked later, with numbers)
TOKENS_MAX = 16_777_216

#: a non-negative 32-bit count: requests or tokens per minute, concurrent requests
Limit = Annotated[int, Strict(), Field(ge=0, le=INT32_MAX)]
#: a non-negative amount of money in micro-units
Micros = Annotated[int, Strict(), Field(ge=0, le=INT64_MAX)]
#: a sampling seed every engine reproduces exactly
Seed = Annotated[int, Strict(), Field(ge=0, le=SEED_MAX)]
#: a positive token count (``max_tokens`` and the like)
Tokens = Annotated[int, Strict(), Field(ge=1, le=TOKENS_MAX)]
#: a token id (embeddings accept pre-tokenised input)
TokenId = Annotated[int, Strict(), Field(ge=0, le=INT32_MAX)]
