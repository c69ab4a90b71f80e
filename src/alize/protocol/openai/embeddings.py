"""``POST /v1/embeddings``: the request as OpenAI and Mistral clients send it, and the reply.

Both SDKs send ``input`` (Mistral's Python ``inputs=`` argument is serialised as ``input``).
``encoding_format`` ``base64`` is the little-endian float32 bytes of each vector, base64-encoded,
as OpenAI returns it (the openai SDK asks for it by default). The reply carries an ``id``, which
Mistral's SDK requires and OpenAI's ignores.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, Strict

from alize.bounds import TokenId
from alize.protocol.openai.common import WireModel

Dimensions = Annotated[int, Strict(), Field(ge=1, le=65_536)]


class EmbeddingRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    model: str = Field(min_length=1)
    input: str | list[str] | list[TokenId] | list[list[TokenId]]
    encoding_format: Literal["float", "base64"] | None = None
    dimensions: Dimensions | None = None
    user: str | None = None
    # --- Mistral's names for the same things ---
    output_dimension: Dimensions | None = None
    output_dtype: Literal["float"] | None = None


class EmbeddingData(WireModel):
    object: Literal["embedding"] = "embedding"
    embedding: list[float] | str
    index: int


class EmbeddingUsage(WireModel):
    prompt_tokens: int
    total_tokens: int
    completion_tokens: int = 0


class EmbeddingList(WireModel):
    id: str
    object: Literal["list"] = "list"
    data: list[EmbeddingData]
    model: str
    usage: EmbeddingUsage
