"""Fine-tuning's services, built in one place for ``alize serve`` (and tests that need them)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from alize.catalog.service import CatalogService
from alize.config import Settings
from alize.deployments.service import DeploymentService
from alize.gateway.tenancy import Tenancy
from alize.jobs.files import FileService
from alize.jobs.finetune.handler import FineTuneHandler
from alize.jobs.finetune.records import FineTuningRecords
from alize.jobs.finetune.service import FineTuningService
from alize.jobs.queue import JobQueue
from alize.store.database import Database


@dataclass(frozen=True, slots=True)
class FineTuning:
    service: FineTuningService
    handler: FineTuneHandler


def build_fine_tuning(
    settings: Settings,
    db: Database,
    queue: JobQueue,
    files: FileService,
    catalog: CatalogService,
    deployments: DeploymentService,
    tenancy: Tenancy,
) -> FineTuning:
    data_dir = Path(settings.data_dir).absolute()
    service = FineTuningService(FineTuningRecords(db), queue, files, catalog, deployments, tenancy.budget)
    handler = FineTuneHandler(
        service,
        deployments,
        tenancy.metering,
        tenancy.budget,
        work_root=data_dir / "fine_tuning",
        # the base models converted from GGUF to PyTorch, kept for the next run on that base
        cache_dir=data_dir / "cache" / "fine-tuning-bases",
        threads=settings.fine_tuning.threads,
        max_concurrent=settings.fine_tuning.max_concurrent,
    )
    return FineTuning(service=service, handler=handler)
