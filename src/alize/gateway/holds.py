"""Budget holds that outlive their process are released: at start-up and by a periodic sweep.

Every request holds its worst-case cost until it settles. If the gateway is killed (kill -9,
OOM, power loss) between the two, nothing settles the hold, and it used to stay ``held`` until
the month ended, eating the project's budget. Each serving process therefore registers itself
in ``gateway_instances`` and heartbeats every ``interval_s``; every hold records its owner. A
hold is *orphaned*, and released without charge, when:

* its owner is gone: the instance row is missing, its heartbeat is older than
  ``3 * interval_s``, or it ran on this host under a process id that is no longer alive (or is
  this very process's id under another instance id: a restarted container is pid 1 again), so
  a restart releases the holds of the process it replaces at once;
* or it is older than the longest a request can take (queue wait + request timeout + a margin),
  whoever holds it: a leaked hold of a live process cannot last forever either.

Releasing charges nothing: a request killed with its gateway has no usage row, and its client
got no answer. Instances that stopped beating are forgotten once their holds are released.
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Callable
from datetime import datetime, timedelta

from alize.gateway.budget import BudgetService
from alize.periodic import Periodic
from alize.store.database import Database
from alize.store.ids import utc_now
from alize.store.models import GatewayInstance
from alize.store.repositories import InstanceRepository

log = logging.getLogger(__name__)


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


class HoldSweeper:
    def __init__(
        self,
        db: Database,
        budget: BudgetService,
        *,
        instance_id: str,
        interval_s: float,
        max_request_s: float,
        clock: Callable[[], datetime] = utc_now,
        host: str | None = None,
        pid: int | None = None,
    ) -> None:
        self._db = db
        self._budget = budget
        self.instance_id = instance_id
        self._stale_after = timedelta(seconds=3 * interval_s)
        self._max_age = timedelta(seconds=max_request_s)
        self._clock = clock
        self._host = host or socket.gethostname()
        self._pid = pid if pid is not None else os.getpid()
        self._loop = Periodic("hold-sweeper", interval_s, self.sweep)

    async def start(self) -> int:
        """Register this process, release what dead ones left, and start beating."""
        now = self._clock()
        instance = GatewayInstance(
            id=self.instance_id, host=self._host, pid=self._pid, started_at=now, heartbeat_at=now
        )
        async with self._db.transaction() as session:
            await InstanceRepository(session).add(instance)
        released = await self.sweep()
        self._loop.start()
        return released

    async def stop(self) -> None:
        """Stop beating and deregister (a clean exit leaves no row behind)."""
        await self._loop.stop()
        async with self._db.transaction() as session:
            await InstanceRepository(session).delete([self.instance_id])

    def _alive(self, instance: GatewayInstance, now: datetime) -> bool:
        if instance.id == self.instance_id:
            return True
        if instance.host == self._host and (instance.pid == self._pid or not pid_alive(instance.pid)):
            return False
        return now - instance.heartbeat_at < self._stale_after

    async def sweep(self) -> int:
        """Heartbeat, then release every orphaned hold; returns how many were released."""
        now = self._clock()
        async with self._db.transaction() as session:
            repo = InstanceRepository(session)
            if not await repo.heartbeat(self.instance_id, now):  # our row was swept by another
                await repo.add(
                    GatewayInstance(
                        id=self.instance_id, host=self._host, pid=self._pid, started_at=now, heartbeat_at=now
                    )
                )
            instances = await repo.all()
        live = [i.id for i in instances if self._alive(i, now)]
        released = await self._budget.release_orphaned(live, self._max_age)
        if released:
            log.warning("released %d budget hold(s) left by requests no process owns any more", released)
        dead = [i.id for i in instances if i.id not in live]
        async with self._db.transaction() as session:
            await InstanceRepository(session).delete(dead)
        return released
