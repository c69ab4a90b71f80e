"""Azure AI Model Inference shapes (``/models/chat/completions``, ``/models/info``)."""

from __future__ import annotations

from pydantic import Field

from alize.protocol.openai.chat import ChatCompletionRequest
from alize.protocol.openai.common import WireModel


class AzureChatCompletionRequest(ChatCompletionRequest):
    """Azure clients may leave ``model`` out: the endpoint's default deployment answers."""

    model: str | None = Field(None, max_length=256)  # type: ignore[assignment]


class ModelInfo(WireModel):
    model_name: str
    model_type: str
    model_provider_name: str
