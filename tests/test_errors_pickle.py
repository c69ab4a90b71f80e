"""Alizé's errors survive pickling whatever their constructor takes: an error raised in a Ray
Serve replica's process reaches the gateway as itself (its class, message, code, headers)."""

from __future__ import annotations

import pickle

import pytest

from alize.errors import (
    AlizeError,
    ContextLengthExceededError,
    EngineUnavailableError,
    InvalidRequestError,
    RateLimitError,
)


@pytest.mark.parametrize(
    "error",
    [
        ContextLengthExceededError(prompt_tokens=10, max_tokens=5, context_length=12),
        EngineUnavailableError("the worker died", retry_after=3),
        InvalidRequestError("bad", param="messages", code="upstream_rejected"),
        RateLimitError("slow down", retry_after=2, code="upstream_rate_limited"),
    ],
)
def test_an_error_pickles_as_itself(error: AlizeError) -> None:
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error)
    assert copy.to_dict() == error.to_dict() and copy.headers == error.headers
    assert copy.status_code == error.status_code
