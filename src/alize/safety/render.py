"""Render :class:`~alize.safety.moderator.ModerationResult` in OpenAI's and Mistral's shapes.

The API layer parses a request with :mod:`alize.protocol.moderation`, calls the moderator, and
returns one of these. Kept apart from the moderator so the service stays wire-neutral.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

from alize.protocol.moderation import (
    MistralModerationResponse,
    MistralModerationResult,
    OpenAIModerationResponse,
    OpenAIModerationResult,
)
from alize.safety.categories import OPENAI_CATEGORIES
from alize.safety.moderator import ModerationResult

DEFAULT_MODEL = "alize-moderation-1"


def new_id() -> str:
    return f"modr-{uuid.uuid4().hex}"


def _round(value: float) -> float:
    return round(value, 6)


def to_openai(results: Sequence[ModerationResult], model: str | None = None) -> OpenAIModerationResponse:
    """OpenAI's ``/v1/moderations`` response (all thirteen categories, text input only)."""
    return OpenAIModerationResponse(
        id=new_id(),
        model=model or DEFAULT_MODEL,
        results=[
            OpenAIModerationResult(
                flagged=r.openai_flagged,
                categories=dict(r.openai_categories),
                category_scores={k: _round(v) for k, v in r.openai_scores.items()},
                category_applied_input_types={name: ["text"] for name in OPENAI_CATEGORIES},
            )
            for r in results
        ],
    )


def to_mistral(results: Sequence[ModerationResult], model: str | None = None) -> MistralModerationResponse:
    """Mistral's ``/v1/moderations`` and ``/v1/chat/moderations`` response."""
    return MistralModerationResponse(
        id=new_id(),
        model=model or DEFAULT_MODEL,
        results=[
            MistralModerationResult(
                categories=dict(r.categories),
                category_scores={k: _round(v) for k, v in r.scores.items()},
            )
            for r in results
        ],
    )
