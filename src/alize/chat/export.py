"""A conversation as a Markdown document or as JSON, for download."""

from __future__ import annotations

import json
from typing import Any

from alize.chat.conversations import ConversationDetail

_ROLE = {"user": "You", "assistant": "Assistant", "system": "System"}


def to_json(detail: ConversationDetail) -> str:
    return json.dumps(conversation_dict(detail), ensure_ascii=False, indent=2)


def conversation_dict(detail: ConversationDetail) -> dict[str, Any]:
    """One conversation as plain JSON values (the download, and a part of the user's export)."""
    c = detail.conversation
    body: dict[str, Any] = {
        "id": c.id,
        "title": c.title,
        "model": c.model,
        "instructions": c.instructions,
        "created_at": c.created_at.isoformat(),
        "updated_at": c.updated_at.isoformat(),
        "messages": [
            {
                "role": m.role,
                "content": m.content,
                "model": m.model,
                "status": m.status,
                "citations": m.citations,
                "created_at": m.created_at.isoformat(),
            }
            for m in detail.messages
        ],
        "documents": [
            {"id": d.id, "name": d.name, "media_type": d.media_type, "size_bytes": d.size_bytes}
            for d in detail.documents
        ],
    }
    return body


def to_markdown(detail: ConversationDetail) -> str:
    c = detail.conversation
    lines = [
        f"# {c.title or 'Conversation'}",
        "",
        f"*Model: {c.model} · {c.created_at:%Y-%m-%d %H:%M} UTC*",
        "",
    ]
    if c.instructions.strip():
        lines += ["> **Instructions:** " + c.instructions.strip().replace("\n", "\n> "), ""]
    for m in detail.messages:
        suffix = " *(stopped)*" if m.status == "stopped" else ""
        lines += [f"## {_ROLE.get(m.role, m.role)}{suffix}", "", m.content.rstrip(), ""]
        if m.citations:
            lines.append("Sources:")
            lines += [f"- [{c_['n']}] {c_['document']}" for c_ in m.citations]
            lines.append("")
    return "\n".join(lines).rstrip() + "\n"
