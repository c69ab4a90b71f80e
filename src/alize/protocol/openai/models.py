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


class ModelList(WireModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]
