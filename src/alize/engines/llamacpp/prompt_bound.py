"""An upper bound on a chat prompt's tokens, found in the gateway with no call to the worker.

Why: the gateway must know a prompt's size before it admits the request (the budget holds its
cost, the token limits count it, the context must hold it and the reply). Counting it exactly
is one HTTP round trip to the worker per request (3 ms p50 on an idle 2-core machine, and it
waits behind the worker's decode when other streams run), before anything can start. Most
requests are far from every one of those edges, and for them an upper bound decides exactly as
the count would: the gateway uses the bound and counts only where it cannot (see
:mod:`alize.gateway.prompt_count`).

The bound: the chat template the worker itself uses (llama.cpp's ``/props`` reports it, with the
BOS and EOS texts) is rendered here with jinja2 in a sandbox, with the settings llama.cpp's
jinja engine and Hugging Face's ``apply_chat_template`` both use (``trim_blocks``,
``lstrip_blocks``, loop controls). Every token of a byte-level BPE or SentencePiece vocabulary
stands for at least one byte of the text it was cut from (a special token such as
``<|im_start|>`` for all of its bytes), so the rendered text's UTF-8 length bounds its tokens;
on top come at most a BOS, an EOS and SentencePiece's leading space, and a margin for the few
places where jinja2 and llama.cpp's renderer could differ in whitespace.

Only plain chats are bounded. With tools, a JSON schema, or tool calls in the history,
llama.cpp may render its own tool prompt or reshape the messages, so those are counted. A
template that jinja2 cannot render, or a request it fails on, is counted too. The bound is
checked against the worker's own count at the end of each stream (:meth:`PromptBound.check`):
one prompt over its bound switches the bound off for this worker and says so in the log.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
from collections import OrderedDict
from typing import Any

from alize.domain import GenerationRequest
from alize.engines.openai_wire import message_json

log = logging.getLogger(__name__)

#: tokens no text accounts for (BOS, EOS, SentencePiece's leading space), with room to spare
FIXED_MARGIN = 16
#: and a share of the text, for whitespace the two renderers could place differently
RELATIVE_MARGIN = 50  # one token in 50 bytes
#: bounds remembered until the worker reports the real count (a stream never finished is dropped)
REMEMBERED = 4096


class PromptBound:
    """The bound for one worker's model; built from what the worker reports at start-up."""

    def __init__(self, template: str, *, bos_token: str, eos_token: str) -> None:
        import jinja2
        import jinja2.ext
        import jinja2.sandbox

        env = jinja2.sandbox.ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise
        env.globals["strftime_now"] = _strftime_now
        self._template = env.from_string(template)
        # a special token is one token whatever its text; any text of at least a byte bounds it
        self._bos = bos_token or "<s>"
        self._eos = eos_token or "</s>"
        self._pending: OrderedDict[str, int] = OrderedDict()
        self.enabled = True

    @classmethod
    def from_props(cls, props: dict[str, Any]) -> PromptBound | None:
        """From llama.cpp's ``/props``; None when it names no template or jinja2 rejects it."""
        template = props.get("chat_template")
        if not isinstance(template, str) or not template:
            return None
        try:
            return cls(
                template,
                bos_token=str(props.get("bos_token") or ""),
                eos_token=str(props.get("eos_token") or ""),
            )
        except Exception as exc:  # a template jinja2 cannot compile: every prompt is counted
            log.info("prompt bound off: the chat template does not compile here (%s)", exc)
            return None

    def tokens(self, request: GenerationRequest) -> int | None:
        """At least as many tokens as the worker will count for ``request``; None when only the
        worker can say (not a plain chat, or the template fails on it)."""
        if not self.enabled or not self._plain_chat(request):
            return None
        messages = [message_json(m) for m in request.messages]
        try:
            text = self._template.render(
                messages=messages,
                add_generation_prompt=True,
                bos_token=self._bos,
                eos_token=self._eos,
            )
        except Exception:  # raise_exception in the template, or anything jinja2 refuses
            return None
        size = len(text.encode("utf-8"))
        bound = size + size // RELATIVE_MARGIN + FIXED_MARGIN
        self._pending[request.request_id] = bound
        if len(self._pending) > REMEMBERED:
            self._pending.popitem(last=False)
        return bound

    def check(self, request_id: str, counted: int) -> None:
        """The worker's own count for a request this bound was given for: one count over its
        bound switches the bound off, so a template this module renders wrongly costs one
        request's exactness, never more."""
        bound = self._pending.pop(request_id, None)
        if bound is not None and counted > bound and self.enabled:
            self.enabled = False
            log.warning(
                "prompt bound off: the worker counted %d prompt tokens where the bound was %d; "
                "every prompt is counted by the worker from now on",
                counted,
                bound,
            )

    @staticmethod
    def _plain_chat(request: GenerationRequest) -> bool:
        if not request.messages or request.tools or request.params.json_schema is not None:
            return False
        return all(not m.tool_calls and m.role != "tool" for m in request.messages)


def _tojson(value: Any, indent: int | None = None) -> str:
    return json.dumps(value, ensure_ascii=False, indent=indent)


def _raise(message: str) -> None:
    raise ValueError(message)


def _strftime_now(fmt: str) -> str:
    return dt.datetime.now().strftime(fmt)
