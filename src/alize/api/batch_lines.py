"""Batch lines run exactly as the endpoints would run them, and the worker that runs batches.

:class:`PipelineLineRunner` is the :class:`~alize.jobs.batch_runner.LineRunner` of a server or
an ``alize worker``: a line's body is parsed with the endpoint's own wire model, translated by
the same code as the route, sent through the same policy pipeline (with a
:class:`~alize.gateway.pipeline.BatchLine`: the line's request id, the batch lane, the batch
price) and encoded as the route would encode the reply. It lives in the API layer because the
wire models and encoders do; the job code below only sees :class:`LineResult` values.
"""

from __future__ import annotations

import json
from typing import Any

from fastapi.exceptions import RequestValidationError
from pydantic import ValidationError

from alize.api.deps import Services
from alize.api.embeddings import embedding_reply, embedding_texts
from alize.api.encode import collect_chat, collect_completion
from alize.api.errors import validation_error
from alize.api.moderations import moderate_conversations, moderate_texts
from alize.api.translate import chat_call, fim_call, text_call
from alize.domain import Usage
from alize.errors import AlizeError, InvalidRequestError
from alize.gateway.auth import Principal
from alize.gateway.generation import Generation
from alize.gateway.pipeline import BatchLine
from alize.jobs.batch_output import LineResult
from alize.jobs.batch_runner import BatchHandler
from alize.jobs.batches import Batch
from alize.jobs.finetune.wiring import fine_tune_handler
from alize.jobs.jsonl import BatchRequest
from alize.jobs.worker import JobHandler, Worker, new_worker_id
from alize.protocol.moderation import MistralChatModerationRequest, OpenAIModerationRequest
from alize.protocol.openai.chat import ChatCompletionRequest
from alize.protocol.openai.completions import CompletionRequest, FimRequest
from alize.protocol.openai.embeddings import EmbeddingRequest


async def _collected(generation: Generation, collect: Any) -> tuple[dict[str, Any], Usage]:
    try:
        reply = await collect(generation)
    finally:
        await generation.aclose()
    return json.loads(reply.to_json()), generation.usage


class PipelineLineRunner:
    def __init__(self, services: Services) -> None:
        self._services = services

    async def run(
        self, batch: Batch, request: BatchRequest, principal: Principal | None, request_id: str
    ) -> LineResult:
        body = dict(request.body)
        if batch.model is not None and "model" not in body:
            body["model"] = batch.model  # Mistral: the job names the model
        try:
            if body.get("stream"):
                raise InvalidRequestError("batch lines cannot stream", param="stream")
            reply, usage = await self._dispatch(batch, body, principal, BatchLine(request_id))
        except ValidationError as exc:
            error = validation_error(RequestValidationError(exc.errors()))
            return LineResult(error.status_code, request_id, {"error": error.to_dict()}, Usage(), error.code)
        except AlizeError as exc:
            return LineResult(exc.status_code, request_id, {"error": exc.to_dict()}, Usage(), exc.code)
        return LineResult(200, request_id, reply, usage)

    async def _dispatch(
        self, batch: Batch, body: dict[str, Any], principal: Principal | None, line: BatchLine
    ) -> tuple[dict[str, Any], Usage]:
        pipeline = self._services.pipeline
        caller = f"batch:{batch.id}"
        payer = batch.project_id if principal is None else None
        endpoint = batch.endpoint
        if endpoint == "/v1/chat/completions":
            chat = ChatCompletionRequest.model_validate(body)
            call = chat_call(chat)
            generation = await pipeline.chat(call, caller, principal, project_id=payer, line=line)
            logprobs = bool(chat.logprobs)
            return await _collected(generation, lambda g: collect_chat(g, n=call.n, want_logprobs=logprobs))
        if endpoint == "/v1/completions":
            text = CompletionRequest.model_validate(body)
            tcall = text_call(text)
            generation = await pipeline.complete(tcall, caller, principal, project_id=payer, line=line)
            logprobs = text.logprobs is not None
            return await _collected(
                generation, lambda g: collect_completion(g, n=tcall.n, want_logprobs=logprobs)
            )
        if endpoint == "/v1/fim/completions":
            fim = FimRequest.model_validate(body)
            generation = await pipeline.complete(
                fim_call(fim), caller, principal, project_id=payer, line=line
            )
            return await _collected(generation, lambda g: collect_chat(g, n=1, want_logprobs=False))
        if endpoint == "/v1/embeddings":
            emb = EmbeddingRequest.model_validate(body)
            result = await pipeline.embed(
                emb.model,
                embedding_texts(emb.input),
                caller,
                principal,
                dimensions=emb.dimensions or emb.output_dimension,
                project_id=payer,
                line=line,
            )
            return json.loads(embedding_reply(emb, result).to_json()), Usage(
                prompt_tokens=result.prompt_tokens
            )
        if endpoint == "/v1/moderations":
            reply, _ = await moderate_texts(
                self._services,
                principal,
                OpenAIModerationRequest.model_validate(body),
                project_id=payer,
                line=line,
            )
            return reply, Usage()
        if endpoint == "/v1/chat/moderations":
            reply, _ = await moderate_conversations(
                self._services,
                principal,
                MistralChatModerationRequest.model_validate(body),
                project_id=payer,
                line=line,
            )
            return reply, Usage()
        raise InvalidRequestError(f"'{endpoint}' cannot be batched", param="endpoint")


def build_worker(services: Services, *, role: str = "worker", batches: bool = True) -> Worker:
    """A job worker with every job kind this process runs, over ``services``: batches (unless
    ``batches`` is false); fine-tuning only in a server (``role="serve"``), because publishing
    the trained adapter starts new llama.cpp workers for the base in the process that serves it."""
    jobs = services.settings.jobs
    handler = BatchHandler(
        services.db,
        services.files,
        PipelineLineRunner(services),
        services.tenancy.auth,
        services.deployments,
        concurrency=jobs.batch_concurrency,
        max_line_bytes=jobs.max_line_bytes,
        max_concurrent=jobs.worker_max_jobs,
    )
    handlers: list[JobHandler] = [handler] if batches else []
    if role == "serve":
        handlers.append(
            fine_tune_handler(
                services.settings, services.fine_tuning, services.deployment_admin, services.tenancy
            )
        )
    return Worker(
        services.queue,
        handlers,
        worker_id=new_worker_id(role),
        max_jobs=jobs.worker_max_jobs,
        heartbeat_s=jobs.heartbeat_s,
        poll_s=jobs.poll_s,
    )
