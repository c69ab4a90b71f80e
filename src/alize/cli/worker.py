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

import typer

from alize.cli.settings import load_settings


async def _run_worker(stop_after_idle_s: float | None) -> None:
    from alize.api.app import build_services
    from alize.api.batch_lines import build_worker

    settings = load_settings()
    services = await build_services(settings, serving=False)
    await services.holds.start()  # its budget holds belong to this process, heartbeated
    worker = build_worker(services, role="worker")
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    worker.start()
    typer.echo(f"worker {worker.worker_id} on {settings.resolved_database_url().split('://')[0]}")
    try:
        if stop_after_idle_s is None:
            await stop.wait()
        else:
            idle_since = loop.time()
            while not stop.is_set():
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), 0.5)
                if worker.running:
                    idle_since = loop.time()
                elif loop.time() - idle_since >= stop_after_idle_s:
                    break
    finally:
        await worker.stop()
        await services.pipeline.drain()
        await services.holds.stop()
        await services.tenancy.aclose()
        await services.deployments.close()
        services.chat.close()
        await services.db.close()


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
