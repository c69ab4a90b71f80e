"""The embeddings service: text in, one vector per input out, below HTTP.

Steps, each failing with a typed error before the engine is asked anything: check the inputs
(count, emptiness, size) → resolve the deployment (404) → load it if needed (cold start) → refuse
a model that does not embed (400) → take a slot in the deployment's fair queue (503 when full) →
embed. Token counts come from the engine's own tokenizer; an input longer than the model takes is
refused by the engine with a 400 rather than silently truncated.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass

from alize.deployments.manager import DeploymentManager
from alize.errors import InvalidRequestError, UnsupportedFeatureError
from alize.gateway.generation import Gate, Planned

#: most inputs in one request (OpenAI allows 2048; small CPU models make a big batch a long wait)
MAX_INPUTS = 256
#: longest input in characters, checked before tokenizing (tokens are checked by the engine)
MAX_INPUT_CHARS = 64 * 1024


@dataclass(frozen=True, slots=True)
class EmbeddingResult:
    request_id: str
    deployment: str
    vectors: tuple[tuple[float, ...], ...]
    prompt_tokens: int
    cold_start_s: float | None


def check_inputs(inputs: Sequence[str]) -> None:
    if not inputs:
        raise InvalidRequestError("input must hold at least one string", param="input")
    if len(inputs) > MAX_INPUTS:
        raise InvalidRequestError(
            f"at most {MAX_INPUTS} inputs are allowed in one request; got {len(inputs)}", param="input"
        )
    for index, text in enumerate(inputs):
        if not text:
            raise InvalidRequestError(
                f"input[{index}] is empty; every input must be non-empty text", param="input"
            )
        if len(text) > MAX_INPUT_CHARS:
            raise InvalidRequestError(
                f"input[{index}] is {len(text)} characters long; at most {MAX_INPUT_CHARS} are allowed",
                param="input",
                code="input_too_long",
            )


class EmbeddingsService:
    def __init__(self, deployments: DeploymentManager) -> None:
        self._deployments = deployments

    async def embed(
        self,
        model: str,
        inputs: Sequence[str],
        caller: str,
        *,
        dimensions: int | None = None,
        gate: Gate | None = None,
    ) -> EmbeddingResult:
        check_inputs(inputs)
        request_id = "req_" + uuid.uuid4().hex
        deployment = self._deployments.get(model)
        async with deployment.using():
            info, cold = await deployment.ensure_loaded()
            if not info.supports_embeddings:
                raise UnsupportedFeatureError(
                    f"'{model}' is a generative model and produces no embeddings; "
                    "use an embeddings deployment such as 'all-minilm-l6-v2'",
                    param="model",
                )
            if dimensions is not None and dimensions != info.embedding_dimensions:
                raise InvalidRequestError(
                    f"'{model}' produces {info.embedding_dimensions}-dimensional vectors and cannot "
                    "shorten them; leave dimensions unset",
                    param="dimensions",
                )
            if gate is not None:
                # An upper bound before tokenizing: a token covers at least one character, plus the
                # two special tokens, and no input may exceed the model's context.
                bound = sum(min(len(text) + 2, info.context_length) for text in inputs)
                await gate(Planned(request_id, deployment.name, bound, 0, 1))
            lease = await deployment.admit(caller)
        try:
            result = await deployment.engine.embed(inputs)
        finally:
            lease.release()
            deployment.last_used = time.monotonic()
        return EmbeddingResult(
            request_id=request_id,
            deployment=deployment.name,
            vectors=result.vectors,
            prompt_tokens=result.prompt_tokens,
            cold_start_s=cold,
        )
