"""The embeddings service: text in, one vector per input out, below HTTP.

Two steps, like generation. :meth:`EmbeddingsService.prepare` fails with a typed error before the
engine is asked anything: check the inputs (count, emptiness, size) → hold the deployment → load
it if needed (cold start) → refuse a model that does not embed, or a ``dimensions`` it cannot
give (400) → bound the prompt tokens for admission. :meth:`EmbeddingsService.embed` then takes a
slot in the deployment's fair queue (503 when full) and embeds. Token counts come from the
engine's own tokenizer; an input longer than the model takes is refused by the engine with a 400
rather than silently truncated.

Fallbacks are generation's (:mod:`alize.deployments.fallbacks`, the same functions): a deployment
that cannot load, whose queue is full or whose engine fails gives way to the next of its
``fallbacks`` under the same request id; ``route`` on the prepared request and on the result
says who served, who was left and why (the ``x-alize-fallback`` header). An embedding has no
partial output, so an engine failure falls back at any point of the call.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

from alize.deployments.admission import Lane
from alize.deployments.fallbacks import Route, first_ready, leave_or_raise
from alize.deployments.manager import Deployment, DeploymentHold
from alize.errors import InvalidRequestError, UnsupportedFeatureError

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
    #: the catalog model whose weights answered
    model: str = ""
    #: who served (``deployment``), the deployments left on the way and the upstream retries
    route: Route = field(default_factory=Route)


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


@dataclass(slots=True)
class PreparedEmbedding:
    """Inputs ready for admission, the deployment loaded and held until embedded or closed."""

    deployment: Deployment
    request_id: str
    inputs: tuple[str, ...]
    #: an upper bound on the prompt tokens, for the limits and the budget hold
    prompt_tokens: int
    cold_start_s: float | None
    hold: DeploymentHold
    dimensions: int | None = None
    route: Route = field(default_factory=Route)
    #: the fallbacks not tried yet, in order
    remaining: list[Deployment] = field(default_factory=list)

    def close(self) -> None:
        self.hold.release()


class EmbeddingsService:
    async def prepare(
        self,
        deployment: Deployment,
        inputs: Sequence[str],
        *,
        dimensions: int | None = None,
        request_id: str | None = None,
    ) -> PreparedEmbedding:
        """Check, hold, load and bound (see the module docstring) on the deployment, or on the
        first of its fallbacks that can take the request."""
        check_inputs(inputs)
        request_id = request_id or "req_" + uuid.uuid4().hex
        candidates = [deployment, *deployment.fallbacks()]
        return await self._first_ready(candidates, tuple(inputs), dimensions, request_id, Route())

    async def _first_ready(
        self,
        candidates: list[Deployment],
        inputs: tuple[str, ...],
        dimensions: int | None,
        request_id: str,
        route: Route,
    ) -> PreparedEmbedding:
        prepared, remaining = await first_ready(
            candidates, lambda candidate: self._prepare_on(candidate, inputs, dimensions, request_id), route
        )
        prepared.route, prepared.remaining = route, remaining
        return prepared

    async def _prepare_on(
        self, deployment: Deployment, inputs: tuple[str, ...], dimensions: int | None, request_id: str
    ) -> PreparedEmbedding:
        hold = deployment.hold()
        try:
            info, cold = await deployment.ensure_loaded()
            if not info.supports_embeddings:
                raise UnsupportedFeatureError(
                    f"'{deployment.name}' is a generative model and produces no embeddings; "
                    "use an embeddings deployment such as 'all-minilm-l6-v2'",
                    param="model",
                )
            if dimensions is not None and dimensions != info.embedding_dimensions:
                raise InvalidRequestError(
                    f"'{deployment.name}' produces {info.embedding_dimensions}-dimensional vectors and "
                    "cannot shorten them; leave dimensions unset",
                    param="dimensions",
                )
        except BaseException:
            hold.release()
            raise
        # A token covers at least one character, plus the two special tokens, and no input may
        # exceed the model's context: an upper bound before tokenizing.
        bound = sum(min(len(text) + 2, info.context_length) for text in inputs)
        return PreparedEmbedding(deployment, request_id, inputs, bound, cold, hold, dimensions)

    async def embed(
        self, prepared: PreparedEmbedding, caller: str, lane: Lane = "interactive"
    ) -> EmbeddingResult:
        """Take a slot and embed; a full queue or an engine failure moves on to the next
        fallback (prepared there as in :meth:`prepare`), else reaches the caller with the
        route in its headers."""
        while True:
            deployment = prepared.deployment
            try:
                try:
                    lease = await deployment.admit(caller, lane)
                finally:
                    prepared.close()  # from here the slot keeps the deployment loaded
                try:
                    result = await deployment.engine.embed(prepared.inputs)
                finally:
                    lease.release()
                    deployment.last_used = time.monotonic()
            except Exception as exc:
                prepared = await self._fall_back(prepared, exc)
                continue
            prepared.route.served_by = deployment.name
            return EmbeddingResult(
                request_id=prepared.request_id,
                deployment=deployment.name,
                vectors=result.vectors,
                prompt_tokens=result.prompt_tokens,
                cold_start_s=prepared.cold_start_s,
                model=deployment.spec.model_id,
                route=prepared.route,
            )

    async def _fall_back(self, prepared: PreparedEmbedding, exc: Exception) -> PreparedEmbedding:
        leave_or_raise(prepared.route, prepared.deployment.name, exc, remaining=len(prepared.remaining))
        return await self._first_ready(
            prepared.remaining, prepared.inputs, prepared.dimensions, prepared.request_id, prepared.route
        )
