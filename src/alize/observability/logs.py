"""Structured logs: one JSON object per line, with the request id of the HTTP request it
belongs to, and never a secret.

- :data:`request_id` is a context variable the HTTP layer sets for each request (from a valid
  ``x-request-id`` header, else a new one); every record logged while serving it carries it.
- :class:`JsonFormatter` writes ``ts``, ``level``, ``logger``, ``message``, ``request_id`` and
  the whitelisted ``extra`` fields of :data:`FIELDS` (ledger facts: ids, deployment, project,
  status, token counts, timings). Prompt or completion text is never among them.
- :class:`RedactSecrets` masks anything shaped like an Alizé API key (``alz-...``) or a bearer
  credential in any message, including third-party ones, as a last line of defence.
- :class:`SettledLog` is a request observer that writes one ``request settled`` line per ledger row.
"""

from __future__ import annotations

import contextvars
import json
import logging
import re
import sys
import uuid
from datetime import UTC, datetime
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the logging set-up is imported by every CLI command: none needs the ledger's
    from alize.gateway.observer import Settled

#: the id of the HTTP request being served (``-`` outside one)
request_id: contextvars.ContextVar[str] = contextvars.ContextVar("alize_request_id", default="-")

#: the ``extra`` fields a log line may carry: facts about a request, never its content
FIELDS = (
    "ledger_id",
    "deployment",
    "project",
    "status",
    "code",
    "prompt_tokens",
    "completion_tokens",
    "cached_tokens",
    "cost_micros",
    "latency_ms",
    "ttft_ms",
    "method",
    "route",
    "http_status",
)

_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_SECRETS = re.compile(r"(alz-[A-Za-z0-9_-]{6})[A-Za-z0-9_-]+|((?i:bearer)\s+)\S+")


def new_request_id(offered: str | None = None) -> str:
    """The client's ``x-request-id`` if it is a short plain token, else a fresh one."""
    if offered is not None and _ID.match(offered):
        return offered
    return "http_" + uuid.uuid4().hex


def redact(text: str) -> str:
    """Mask key material: an ``alz-`` key keeps its short visible prefix, a bearer value goes."""
    return _SECRETS.sub(lambda m: (m.group(1) + "…") if m.group(1) else (m.group(2) + "…"), text)


class RedactSecrets(logging.Filter):
    """Rewrites each record's message with :func:`redact` (args merged first)."""

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": redact(record.getMessage()),
            "request_id": request_id.get(),
        }
        for name in FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                entry[name] = value
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False, default=str)


def configure_logging(level: str, *, json_lines: bool) -> None:
    """Root logging for ``alize serve``: JSON lines (or plain text) on stderr, secrets redacted."""
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(RedactSecrets())
    if json_lines:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per engine call is noise


class SettledLog:
    """One ``request settled`` line per ledger row (its facts, never its text)."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self._log = logger or logging.getLogger("alize.requests")

    def refused(self, deployment: str, project: str, code: str) -> None:
        self._log.info("request refused", extra={"deployment": deployment, "project": project, "code": code})

    def started(self, deployment: str, project: str, *, queue_s: float, cold_start_s: float | None) -> None:
        return None

    def token_gap(self, deployment: str, seconds: float) -> None:
        return None

    def settled(self, outcome: Settled) -> None:
        r = outcome.record
        self._log.info(
            "request settled",
            extra={
                "ledger_id": r.request_id,
                "deployment": outcome.deployment,
                "project": r.project_id,
                "status": str(r.status),
                "code": r.error_code,
                "prompt_tokens": r.prompt_tokens,
                "completion_tokens": r.completion_tokens,
                "cached_tokens": r.cached_tokens,
                "cost_micros": r.cost_micros,
                "latency_ms": r.latency_ms,
                "ttft_ms": r.ttft_ms,
            },
        )
