"""Which job kinds each worker claims: a server's worker always takes fine-tuning jobs (they are
published in the serving process) and batches unless its embedded worker is off; a standalone
``alize worker`` takes batches only."""

from __future__ import annotations

from pathlib import Path

from tests.api.test_files_batches import _settings
from tests.support.apps import scripted_app

from alize.api.batch_lines import build_worker


def test_each_worker_claims_the_kinds_its_process_can_finish(tmp_path: Path) -> None:
    with scripted_app(_settings(tmp_path)) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        serve = build_worker(services, role="serve")
        serve_only_tuning = build_worker(services, role="serve", batches=False)
        standalone = build_worker(services, role="worker")
        try:
            assert set(serve.handlers) == {"batch", "fine_tune"}
            assert set(serve_only_tuning.handlers) == {"fine_tune"}
            assert set(standalone.handlers) == {"batch"}
        finally:
            for worker in (serve, serve_only_tuning, standalone):
                services.queue.listeners.remove(worker.wake)
