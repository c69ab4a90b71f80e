"""``alize worker``: a standalone job worker over the same database as the servers.

It builds the services a server builds (database, deployments, tenancy, the policy pipeline)
without HTTP, and claims jobs from the queue until SIGINT/SIGTERM, when it hands the jobs it
holds back to the queue. Several workers (and the servers' embedded ones) may share one
database: on PostgreSQL jobs are claimed with ``FOR UPDATE SKIP LOCKED``; on SQLite one writer
at a time makes the claim atomic. A worker killed outright loses its leases after
``ALIZE_JOBS__LEASE_S``; another worker then resumes its jobs (finished batch lines are kept).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from typing import TYPE_CHECKING

import typer

from alize.cli.settings import load_settings

if TYPE_CHECKING:
    from alize.api.deps import Services
    from alize.config import Settings
    from alize.jobs.worker import Worker


async def _run_worker(stop_after_idle_s: float | None) -> None:
    from alize.api.app import build_services
    from alize.api.batch_lines import build_worker

    settings = load_settings()
    services = await build_services(settings, serving=False)
    try:
        await _serve_jobs(services, build_worker(services, role="worker"), settings, stop_after_idle_s)
    finally:
        await services.aclose()  # the one teardown, as the server's


async def _serve_jobs(
    services: Services, worker: Worker, settings: Settings, stop_after_idle_s: float | None
) -> None:
    await services.holds.start()  # its budget holds belong to this process, heartbeated
    services.on_close(services.holds.stop)
    services.on_close(services.pipeline.drain)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker.start()
    services.on_close(worker.stop)
    typer.echo(f"worker {worker.worker_id} on {settings.resolved_database_url().split('://')[0]}")
    if stop_after_idle_s is None:
        await stop.wait()
        return
    idle_since = loop.time()
    while not stop.is_set():
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), 0.5)
        if worker.running:
            idle_since = loop.time()
        elif loop.time() - idle_since >= stop_after_idle_s:
            break


def worker(
    exit_when_idle: float | None = typer.Option(
        None, help="Exit after this many seconds with no job to run (default: run until stopped)."
    ),
) -> None:
    """Run batch jobs from the queue (against SQLite or PostgreSQL, as ALIZE_DATABASE_URL says)."""
    settings = load_settings()
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx").setLevel(logging.WARNING)
    asyncio.run(_run_worker(exit_when_idle))
