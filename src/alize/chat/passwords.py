"""Password hashing off the event loop, with a bound.

argon2id is deliberately slow (about 50 ms and 64 MiB per hash with argon2-cffi's defaults).
Run on the event loop, a flood of logins stalled every other request: measured, ``/health`` p50
went from 2 ms to 124 ms. Here hashes run in a small thread pool (argon2-cffi releases the GIL
while it works), at most ``workers`` at once; past ``queue_max`` waiting, a login is refused
with 429 ``login_busy`` and a ``Retry-After`` instead of queueing without end.
"""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from alize.errors import RateLimitError

_T = TypeVar("_T")


class PasswordPool:
    """``hash`` and ``verify`` in worker threads; ``close`` at shutdown."""

    def __init__(
        self, hasher: PasswordHasher | None = None, *, workers: int = 2, queue_max: int = 32
    ) -> None:
        self.hasher = hasher or PasswordHasher()
        self._workers = workers
        self._queue_max = queue_max
        self._executor: ThreadPoolExecutor | None = None
        self._in_flight = 0

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="alize-argon2")
        return self._executor

    async def _run(self, fn: object, *args: str) -> object:
        if self._in_flight >= self._workers + self._queue_max:
            raise RateLimitError(
                "Too many logins at once; try again in a moment.", retry_after=1.0, code="login_busy"
            )
        self._in_flight += 1
        try:
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(self._pool(), fn, *args)  # type: ignore[arg-type]
        finally:
            self._in_flight -= 1

    async def hash(self, password: str) -> str:
        return str(await self._run(self.hasher.hash, password))

    async def verify(self, stored: str, password: str) -> bool:
        return bool(await self._run(self._verify, stored, password))

    def _verify(self, stored: str, password: str) -> bool:
        try:
            return self.hasher.verify(stored, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=True)
            self._executor = None
