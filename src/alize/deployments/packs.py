"""Pulling a model pack as one long-running operation: install, register its card, deploy it.

The admin API, the CLI and the catalog page all start the same :class:`PullJob` here and watch
its progress; the file work is :func:`alize.catalog.packs.install.install`, run in a worker
thread. One pull runs at a time (each is disk- and network-bound; two would only slow each
other); a second pull of the same pack returns the job already running. Jobs live in memory:
a pull interrupted by a restart leaves only a staging folder, which the next start sweeps.

It lives here, not in the catalog, because a pull ends by deploying the model with the
pack's recommended engine settings (few slots, a modest context: what a CPU can serve).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

from alize.catalog.builtin import builtin_card
from alize.catalog.inspect import inspect_gguf_async
from alize.catalog.packs import Pack, get_pack, known_packs
from alize.catalog.packs import install as installer
from alize.catalog.packs.card import pack_card
from alize.catalog.service import CatalogService
from alize.catalog.sources import is_available
from alize.config import CatalogSettings
from alize.deployments.service import DeploymentService
from alize.errors import AlizeError, ConflictError

log = logging.getLogger(__name__)

State = Literal[
    "queued", "downloading", "verifying", "assembling", "inspecting", "registering", "done", "failed"
]


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class PullJob:
    """A pull's live state; the worker thread updates the counters, readers only read them."""

    pack: str
    deploy: bool
    state: State = "queued"
    done_bytes: int = 0
    total_bytes: int = 0
    started_at: str = field(default_factory=_now)
    finished_at: str | None = None
    model_id: str | None = None
    deployment: str | None = None
    error: dict[str, object] | None = None
    cancel: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def running(self) -> bool:
        return self.state not in ("done", "failed")

    def progress(self, phase: str, done: int, total: int) -> None:
        self.state = phase  # type: ignore[assignment]  # the installer's phases are States
        self.done_bytes, self.total_bytes = done, total

    def view(self) -> dict[str, Any]:
        return {
            "pack": self.pack,
            "state": self.state,
            "done_bytes": self.done_bytes,
            "total_bytes": self.total_bytes,
            "started_at": self.started_at,
            "finished_at": self.finished_at,
            "model_id": self.model_id,
            "deployment": self.deployment,
            "error": self.error,
        }


class PackService:
    """Known packs, their install state, and pulls; one instance per app."""

    def __init__(
        self,
        catalog: CatalogService,
        deployments: DeploymentService,
        store: Path,
        settings: CatalogSettings,
        packs: dict[str, Pack] | None = None,
    ) -> None:
        self._catalog = catalog
        self._deployments = deployments
        self._store = store
        self._settings = settings
        self.packs = known_packs(settings.pack_definitions_dir) if packs is None else packs
        self._jobs: dict[str, PullJob] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._one_at_a_time = asyncio.Lock()

    @property
    def store(self) -> Path:
        return self._store

    def preferences(self) -> dict[str, int]:
        """Each pack's rank as the assistant's default model (lower first)."""
        return {p.name: p.chat_preference for p in self.packs.values() if p.chat_preference is not None}

    async def sweep(self) -> None:
        """Remove staging leftovers of pulls a crash interrupted."""
        await asyncio.to_thread(installer.sweep, self._store, sorted(self.packs))

    def _ships_with_app(self, pack: Pack) -> bool:
        """A built-in model whose package is installed in this environment needs no pull."""
        return pack.builtin and is_available(builtin_card(pack.name).source)

    async def view(self, name: str) -> dict[str, Any]:
        pack = get_pack(name, self.packs)
        done = await asyncio.to_thread(installer.installed, self._store, pack)
        card = await self._catalog.find(pack.name)
        job = self._jobs.get(pack.name)
        if self._ships_with_app(pack):
            status = "bundled"
        else:
            status = "installed" if done is not None and card is not None else "available"
        return {
            "name": pack.name,
            "object": "model.pack",
            "display_name": pack.display_name,
            "upstream": pack.upstream,
            "publisher": pack.publisher,
            "distributor": pack.distributor,
            "license": pack.license,
            "languages": list(pack.languages),
            "size_bytes": pack.size_bytes,
            "download_bytes": pack.download_bytes,
            "parts": len(pack.parts),
            "sha256": pack.sha256,
            "status": status,
            "job": job.view() if job is not None else None,
        }

    async def list(self) -> list[dict[str, Any]]:
        return [await self.view(name) for name in sorted(self.packs)]

    def job(self, name: str) -> PullJob | None:
        return self._jobs.get(get_pack(name, self.packs).name)

    async def pull(self, name: str, *, index_url: str | None = None, deploy: bool = True) -> PullJob:
        """Start pulling ``name`` (or return the pull of it already running). Refusals that need
        no download (unknown pack, already installed, too little disk) are raised here."""
        pack = get_pack(name, self.packs)
        running = self._jobs.get(pack.name)
        if running is not None and running.running:
            return running
        if self._ships_with_app(pack):
            raise ConflictError(
                f"'{pack.name}' ships with this installation (its package is installed); nothing to pull",
                param="name",
                code="pack_bundled",
            )
        if (await self.view(pack.name))["status"] == "installed":
            raise ConflictError(
                f"'{pack.name}' is already installed; `alize models rm {pack.name}` removes it",
                param="name",
                code="pack_installed",
            )
        await asyncio.to_thread(installer.check_space, self._store, pack)
        job = PullJob(pack.name, deploy, total_bytes=pack.download_bytes)
        self._jobs[pack.name] = job
        task = asyncio.create_task(self._run(pack, job, index_url or self._settings.pack_index_url))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return job

    async def _run(self, pack: Pack, job: PullJob, index_url: str | None) -> None:
        try:
            async with self._one_at_a_time:
                existing = await asyncio.to_thread(installer.installed, self._store, pack)
                if existing is None:
                    done, info = await asyncio.to_thread(
                        installer.install,
                        pack,
                        self._store,
                        index_url=index_url,
                        progress=job.progress,
                        cancel=job.cancel,
                        download_timeout_s=self._settings.pack_download_timeout_s,
                        inspect_timeout_s=self._settings.inspect_timeout_s,
                    )
                else:  # the files are there (their card was removed by hand): register them again
                    job.state = "inspecting"
                    done = existing
                    info = await inspect_gguf_async(existing.path, timeout_s=self._settings.inspect_timeout_s)
                job.state = "registering"
                try:
                    card = await self._catalog.register_pulled(pack_card(pack, done, info))
                except BaseException:
                    await asyncio.to_thread(installer.remove, self._store, pack.name)
                    raise
                job.model_id = card.id
                if job.deploy and all(d.name != pack.name for d in self._deployments.list()):
                    await self._deployments.create(
                        {
                            "name": pack.name,
                            "model": card.id,
                            "parallel": pack.parallel,
                            "ctx_per_slot": min(pack.ctx_per_slot, card.context_length),
                        }
                    )
                    job.deployment = pack.name
            job.state = "done"
            log.info("pulled pack %s (%d bytes)", pack.name, pack.size_bytes)
        except AlizeError as exc:
            job.state, job.error = "failed", exc.to_dict()
            log.warning("pulling pack %s failed: %s", pack.name, exc.message)
        except Exception as exc:  # a bug must still end the job, not leave it "downloading"
            job.state = "failed"
            job.error = AlizeError(f"the pull failed unexpectedly ({type(exc).__name__}: {exc})").to_dict()
            log.exception("pulling pack %s failed", pack.name)
        finally:
            job.finished_at = _now()

    async def close(self) -> None:
        """Cancel running pulls (the installer stops pip and removes its staging) and wait."""
        for job in self._jobs.values():
            job.cancel.set()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
