"""The chat web app's HTTP side: its routes (login, conversations, documents, streamed replies,
the page and its assets) and the static front end under ``static/``.

The services behind them live in :mod:`alize.chat`, which knows nothing of HTTP; these routers
parse a body, call a service and encode the reply, like every other router under ``alize.api``.
"""

from __future__ import annotations

from fastapi import APIRouter

from alize.api.webchat import auth, conversations, documents, pages, replies


def chat_routers() -> list[APIRouter]:
    return [auth.router, conversations.router, replies.router, documents.router, pages.router]
