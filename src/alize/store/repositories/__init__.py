"""Repositories: the only code that issues SQL. Each takes the service's ``AsyncSession``;
the ``*Writes`` classes hold the hot path's writes on a synchronous connection (``Database.run_sync``)."""

from alize.store.repositories.api_keys import ApiKeyRepository
from alize.store.repositories.audit import AuditRepository
from alize.store.repositories.batches import BatchRepository
from alize.store.repositories.budget import BudgetRepository, BudgetWrites, ClosedHold
from alize.store.repositories.catalog import CatalogModelRepository, DeploymentRepository
from alize.store.repositories.files import FileRepository
from alize.store.repositories.fine_tuning import FineTuningRepository
from alize.store.repositories.instances import InstanceRepository
from alize.store.repositories.jobs import JobRepository
from alize.store.repositories.projects import ProjectRepository
from alize.store.repositories.usage import GroupBy, UsageAggregate, UsageRepository, UsageWrites

__all__ = [
    "ApiKeyRepository",
    "AuditRepository",
    "BatchRepository",
    "BudgetRepository",
    "BudgetWrites",
    "CatalogModelRepository",
    "ClosedHold",
    "DeploymentRepository",
    "FileRepository",
    "FineTuningRepository",
    "GroupBy",
    "InstanceRepository",
    "JobRepository",
    "ProjectRepository",
    "UsageAggregate",
    "UsageRepository",
    "UsageWrites",
]
