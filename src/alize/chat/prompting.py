"""The messages sent to the model for one turn: instructions, language, sources, history.

Everything the model is told besides the conversation goes into one leading system message:
the conversation's (or agent's) instructions, "Answer in <language>." and the retrieved
passages, numbered so the reply can cite them as [1], [2].
"""

from __future__ import annotations

from collections.abc import Sequence

from alize.chat.conversations import MessageInfo
from alize.chat.documents import Passage
from alize.chat.language import ANSWER_IN
from alize.domain import Message


def system_prompt(instructions: str, language: str | None, passages: Sequence[Passage]) -> str:
    parts = [instructions.strip()] if instructions.strip() else []
    if language in ANSWER_IN:
        parts.append(ANSWER_IN[language])
    if passages:
        sources = "\n\n".join(f"[{p.n}] ({p.document})\n{p.text}" for p in passages)
        parts.append(
            "Use these numbered sources from the user's documents when they are relevant, and cite "
            f"them as [1], [2] where you use them.\n\n{sources}"
        )
    return "\n\n".join(parts)


def turn_messages(history: Sequence[MessageInfo], system: str, max_history: int) -> tuple[Message, ...]:
    """System message (if any) plus the last ``max_history`` messages that have text."""
    kept = [m for m in history if m.role in ("user", "assistant") and m.content.strip()][-max_history:]
    while kept and kept[0].role != "user":  # a conversation sent to a model starts with the user
        kept.pop(0)
    messages: list[Message] = [Message(role="system", content=system)] if system else []
    for m in kept:
        messages.append(Message(role="user" if m.role == "user" else "assistant", content=m.content))
    return tuple(messages)
