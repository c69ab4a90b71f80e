"""One assistant turn: save the user's message, retrieve sources, stream the reply, save it.

``ReplyService.start`` does everything that can fail with a plain HTTP error (the conversation
is someone else's, the message to edit does not exist) and returns a ``ReplyRun``. The run's
``events()`` then starts generation and yields small dict events for the page (``status``,
``sources``, ``delta``, ``done``, ``error``): failures after this point (rate limited, content
filtered, model missing or loading) arrive as an ``error`` event carrying the OpenAI-shaped
error. ``finish()`` always runs (the HTTP layer calls it however the response ends): it closes
the generation, which frees the engine slot at once when the user pressed stop, and saves
whatever was generated, marked ``stopped`` if the reply was cut short.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from alize.chat.conversations import ConversationInfo, ConversationService, MessageInfo
from alize.chat.documents import DocumentService, Passage
from alize.chat.language import LanguageGuesser
from alize.chat.prompting import system_prompt, turn_messages
from alize.config import ChatSettings
from alize.deployments.manager import DeploymentManager
from alize.domain import FinishReason, SamplingParams
from alize.errors import AlizeError, ContentFilterError, InvalidRequestError, NotFoundError
from alize.gateway.calls import ChatCall
from alize.gateway.generation import Generation
from alize.gateway.pipeline import PolicyPipeline

log = logging.getLogger(__name__)

Event = dict[str, Any]


@dataclass(slots=True)
class ReplyRun:
    """A reply being generated; ``finish`` is idempotent and safe to call from any exit path."""

    service: ReplyService
    user_id: str
    conversation: ConversationInfo
    model: str
    query: str
    language: str | None
    user_message: MessageInfo | None
    #: the user's project: replies are limited, charged and metered there like API calls
    project_id: str | None = None
    text: str = ""
    citations: list[dict[str, Any]] = field(default_factory=list)
    generation: Generation | None = None
    saved: MessageInfo | None = None
    failed: bool = False
    done: bool = False
    _finish_lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def events(self) -> AsyncIterator[Event]:
        if self.user_message is not None:
            yield {"type": "user", "message": self.user_message}
        try:
            async for event in self._generate():
                yield event
        except AlizeError as error:
            self.failed = True
            yield {"type": "error", "error": error.to_dict()}
            saved = await self.finish()
            if saved is not None:
                yield {"type": "done", "message": saved}
            return
        saved = await self.finish()
        yield {"type": "done", "message": saved}

    async def _generate(self) -> AsyncIterator[Event]:
        service = self.service
        if not service.deployments_loaded(self.model):
            yield {"type": "status", "status": "loading"}
        passages: list[Passage] = []
        if self.query:
            passages = await service.documents.retrieve(
                self.user_id, self.conversation.id, self.query, project_id=self.project_id
            )
        self.citations = [p.citation() for p in passages]
        if passages:
            yield {"type": "sources", "citations": self.citations}
        language = await service.language.detect(self.query) if self.query else None
        history = await service.conversations.messages(self.user_id, self.conversation.id)
        system = system_prompt(self.conversation.instructions, language or self.language, passages)
        settings = service.settings
        call = ChatCall(
            model=self.model,
            messages=turn_messages(history, system, settings.history_messages),
            params=SamplingParams(temperature=settings.temperature),
            # a long conversation gets a shorter reply rather than a context-length error
            max_tokens_ceiling=settings.max_tokens,
        )
        self.generation = await service.pipeline.chat(
            call, f"user:{self.user_id}", None, project_id=self.project_id, user_id=self.user_id
        )
        async for event in self.generation.events:
            if event.delta.text:
                self.text += event.delta.text
                yield {"type": "delta", "text": event.delta.text}
            if event.delta.finish_reason == FinishReason.CONTENT_FILTER:
                # the deployment's output filter cut the reply: say so, keep what was shown
                raise ContentFilterError(
                    "The rest of this reply was withheld by the content filter of this model."
                )
        self.done = True

    async def finish(self) -> MessageInfo | None:
        """Close the generation and save the reply (partial if stopped); once."""
        async with self._finish_lock:
            if self.generation is not None:
                generation, self.generation = self.generation, None
                await generation.aclose()
            if self.saved is not None or not self.text:
                return self.saved
            status = "complete" if self.done else ("error" if self.failed else "stopped")
            self.saved = await self.service.conversations.add_message(
                self.user_id,
                self.conversation.id,
                role="assistant",
                content=self.text,
                model=self.model,
                status=status,
                citations=self.citations,
            )
            return self.saved


class ReplyService:
    def __init__(
        self,
        settings: ChatSettings,
        conversations: ConversationService,
        documents: DocumentService,
        pipeline: PolicyPipeline,
        deployments: DeploymentManager,
        language: LanguageGuesser,
    ) -> None:
        self.settings = settings
        self.conversations = conversations
        self.documents = documents
        self.pipeline = pipeline
        self.deployments = deployments
        self.language = language

    def deployments_loaded(self, model: str) -> bool:
        return any(d.name == model and d.loaded for d in self.deployments.list())

    async def _prepare(
        self, user_id: str, conversation_id: str, model: str | None
    ) -> tuple[ConversationInfo, str]:
        conversation = await self.conversations.get(user_id, conversation_id)
        if model and model != conversation.model:
            conversation = await self.conversations.update(user_id, conversation_id, model=model)
        return conversation, conversation.model

    async def send(
        self,
        user_id: str,
        conversation_id: str,
        content: str,
        *,
        model: str | None = None,
        language: str | None = None,
        edit_message_id: str | None = None,
        project_id: str | None = None,
    ) -> ReplyRun:
        """A new user message (or an edited one, which drops every later message) and its reply."""
        if not content.strip():
            raise InvalidRequestError("the message is empty", param="content")
        conversation, model = await self._prepare(user_id, conversation_id, model)
        replace_from: int | None = None
        if edit_message_id is not None:
            messages = await self.conversations.messages(user_id, conversation_id)
            edited = next((m for m in messages if m.id == edit_message_id and m.role == "user"), None)
            if edited is None:
                raise NotFoundError(f"Message '{edit_message_id}' not found.", param="message_id")
            replace_from = edited.seq
        message = await self.conversations.add_message(
            user_id, conversation_id, role="user", content=content, replace_from=replace_from
        )
        conversation = await self.conversations.get(user_id, conversation_id)
        return ReplyRun(self, user_id, conversation, model, content, language, message, project_id)

    async def regenerate(
        self,
        user_id: str,
        conversation_id: str,
        *,
        model: str | None = None,
        language: str | None = None,
        project_id: str | None = None,
    ) -> ReplyRun:
        """A new reply to the last user message; the replies after it are dropped."""
        conversation, model = await self._prepare(user_id, conversation_id, model)
        messages = await self.conversations.messages(user_id, conversation_id)
        last_user = next((m for m in reversed(messages) if m.role == "user"), None)
        if last_user is None:
            raise InvalidRequestError("there is no message to answer yet", code="nothing_to_regenerate")
        await self.conversations.truncate(user_id, conversation_id, last_user.seq + 1)
        return ReplyRun(self, user_id, conversation, model, last_user.content, language, None, project_id)
