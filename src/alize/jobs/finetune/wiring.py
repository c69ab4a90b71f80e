"""Fine-tuning's service (for the API) and its queue handler (for the job workers), built from the
services a server or an ``alize worker`` already has."""

from __future__ import annotations

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


def build_fine_tuning(
    db: Database,
    queue: JobQueue,
    files: FileService,
    catalog: CatalogService,
    deployments: DeploymentService,
    tenancy: Tenancy,
) -> FineTuningService:
    return FineTuningService(FineTuningRecords(db), queue, files, catalog, deployments, tenancy.budget)


def fine_tune_handler(
    settings: Settings, service: FineTuningService, deployments: DeploymentService, tenancy: Tenancy
) -> FineTuneHandler:
    data_dir = Path(settings.data_dir).absolute()
    return FineTuneHandler(
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
