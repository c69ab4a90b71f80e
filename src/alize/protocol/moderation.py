"""Wire models for moderation: OpenAI's ``/v1/moderations`` and Mistral's two moderation routes.

* OpenAI ``POST /v1/moderations``: ``{"input": str | [str] | [{"type": "text", "text": ...}],
  "model"?}`` -> ``{"id", "model", "results": [{"flagged", "categories", "category_scores"}]}``
  with category names containing slashes (``hate/threatening``).
* Mistral ``POST /v1/moderations``: ``{"input": str | [str], "model"}`` ->
  ``{"id", "model", "results": [{"categories": {name: bool}, "category_scores": {name: float}}]}``.
* Mistral ``POST /v1/chat/moderations``: ``{"input": [message] | [[message]], "model"}``: one
  conversation or several; one result per conversation.

Requests ignore unknown fields (clients send SDK-specific extras); responses are plain models
whose field names are the wire names (category names are dict keys, so slashes need no alias).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict


class TextInputPart(BaseModel):
    """OpenAI's multi-modal input item; only text parts can be moderated here."""

    model_config = ConfigDict(extra="ignore")

    type: Literal["text"] = "text"
    text: str


class OpenAIModerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: str | list[str] | list[TextInputPart]
    model: str | None = None

    def texts(self) -> list[str]:
        """The inputs as a list of texts, in order."""
        if isinstance(self.input, str):
            return [self.input]
        return [item if isinstance(item, str) else item.text for item in self.input]


class OpenAIModerationResult(BaseModel):
    flagged: bool
    categories: dict[str, bool]
    category_scores: dict[str, float]
    category_applied_input_types: dict[str, list[str]] | None = None


class OpenAIModerationResponse(BaseModel):
    id: str
    model: str
    results: list[OpenAIModerationResult]


class MistralModerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    input: str | list[str]
    model: str | None = None

    def texts(self) -> list[str]:
        return [self.input] if isinstance(self.input, str) else list(self.input)


class ChatContentChunk(BaseModel):
    """A content chunk of a chat message; non-text chunks contribute no text."""

    model_config = ConfigDict(extra="allow")

    type: str = "text"
    text: str | None = None


class ModerationChatMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "user", "assistant", "tool"]
    content: str | list[ChatContentChunk] | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "\n".join(chunk.text for chunk in self.content if chunk.text)


class MistralChatModerationRequest(BaseModel):
    model_config = ConfigDict(extra="ignore")

    # Mistral's SDK calls it ``inputs`` in Python and sends ``input`` on the wire.
    input: list[ModerationChatMessage] | list[list[ModerationChatMessage]]
    model: str | None = None

    def conversations(self) -> list[list[ModerationChatMessage]]:
        """One list of messages per conversation to classify."""
        if self.input and isinstance(self.input[0], list):
            return [list(conv) for conv in self.input if isinstance(conv, list)]
        return [[m for m in self.input if isinstance(m, ModerationChatMessage)]]

    def conversation_texts(self) -> list[list[str]]:
        """The text of every message, one list per conversation."""
        return [[m.text() for m in conv] for conv in self.conversations()]


class MistralModerationResult(BaseModel):
    categories: dict[str, bool]
    category_scores: dict[str, float]


class MistralModerationResponse(BaseModel):
    id: str
    model: str
    results: list[MistralModerationResult]


def dump(model: BaseModel) -> dict[str, Any]:
    """JSON-ready dict without null optional fields (clients of both APIs expect them absent)."""
    return model.model_dump(mode="json", exclude_none=True)
