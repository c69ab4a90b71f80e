"""HTTP routes of the chat web app (the only part of ``alize.chat`` that knows FastAPI)."""

from __future__ import annotations

from fastapi import APIRouter

from alize.chat.routes import auth, conversations, documents, pages, replies


def chat_routers() -> list[APIRouter]:
    return [auth.router, conversations.router, replies.router, documents.router, pages.router]
