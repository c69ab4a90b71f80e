"""The engines' own metrics (llama.cpp's ``llamacpp:*`` families), merged into one exposition.

Each loaded deployment's replicas are asked for their exposition over loopback (the engine's
:meth:`~alize.engines.base.Engine.metrics_text`); every sample gets ``deployment`` and
``replica`` labels, and families of the same name from different workers become one family (a
text exposition may name each family once). A worker that does not answer is skipped: a scrape
never waits on, or loads, a model.
"""

from __future__ import annotations

import asyncio
import logging

from prometheus_client.core import Metric
from prometheus_client.parser import text_string_to_metric_families

from alize.deployments.manager import DeploymentManager
from alize.engines.base import Engine

log = logging.getLogger(__name__)


async def worker_families(deployments: DeploymentManager, *, timeout_s: float = 5.0) -> list[Metric]:
    """Every loaded worker's families, labelled by deployment and replica, merged by name."""
    sources: list[tuple[str, int, Engine]] = []
    for deployment in deployments.list():
        if not deployment.loaded or deployment.spec.adapter_host is not None:
            continue  # an adapter shares its base's workers, which report under the base
        for index, replica in enumerate(deployment.engine.replicas):
            sources.append((deployment.name, index, replica))
    if not sources:
        return []
    texts = await asyncio.gather(
        *(asyncio.wait_for(engine.metrics_text(), timeout_s) for _, _, engine in sources),
        return_exceptions=True,
    )
    merged: dict[str, Metric] = {}
    for (name, index, _), text in zip(sources, texts, strict=True):
        if not isinstance(text, str):
            if isinstance(text, BaseException):
                log.warning("no metrics from a worker of %s: %s", name, type(text).__name__)
            continue
        merge_into(merged, text, {"deployment": name, "replica": str(index)})
    return list(merged.values())


def merge_into(merged: dict[str, Metric], text: str, labels: dict[str, str]) -> None:
    """Parse one exposition and add its samples, with ``labels`` added, to ``merged``."""
    try:
        families = list(text_string_to_metric_families(text))
    except ValueError as exc:
        log.warning("unreadable engine metrics: %s", exc)
        return
    for family in families:
        target = merged.get(family.name)
        if target is None:
            target = merged[family.name] = Metric(family.name, family.documentation, family.type, family.unit)
        elif target.type != family.type:
            continue  # two engines disagree on a family's type: keep the first
        for sample in family.samples:
            target.samples.append(sample._replace(labels={**sample.labels, **labels}))
