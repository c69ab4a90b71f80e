"""``GET /v1/models`` shapes, with Alizé's card fields fenced as extras."""

from __future__ import annotations

from typing import Any, Literal

from alize.protocol.openai.common import WireModel


class ModelObject(WireModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    # --- Alizé extras (card fields a client may use to pick a model) ---
    card: dict[str, Any] | None = None
    #: the deployment's measured loads on this server (``last_s``, ``p50_s``, ``max_s`` over the
    #: last 20, ``loads``): what a request to it waits when it is scaled to zero; None: never loaded
    cold_start: dict[str, Any] | None = None


class ModelList(WireModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]
