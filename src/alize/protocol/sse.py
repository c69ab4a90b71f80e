"""Server-sent events framing, as OpenAI and Mistral streams use it."""

from __future__ import annotations

DONE = b"data: [DONE]\n\n"


def sse_data(payload: str) -> bytes:
    """One ``data:`` event. JSON payloads never contain raw newlines, so one line suffices."""
    return b"data: " + payload.encode() + b"\n\n"
