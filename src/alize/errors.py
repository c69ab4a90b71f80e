"""Alizé's error tree: every failure a client can see, with its HTTP status, ``type`` and ``code``.

Errors are raised as typed exceptions anywhere below the HTTP layer and rendered exactly once,
by ``alize.api.errors``, in the OpenAI shape ``{"error": {"message", "type", "param", "code"}}``
(or as a final SSE ``data:`` event when a stream has already started). Nothing recognises an
error by parsing its message.

::

    AlizeError (500, api_error)
    ├── InvalidRequestError (400, invalid_request_error)
    │   ├── ContextLengthExceededError  code=context_length_exceeded
    │   ├── UnsupportedFeatureError     code=unsupported_feature   (e.g. FIM without FIM tokens)
    │   └── ContentFilterError          code=content_filter
    ├── AuthenticationError (401, authentication_error)   code=invalid_api_key
    ├── PermissionDeniedError (403, permission_error)
    ├── NotFoundError (404, not_found_error)
    │   └── ModelNotFoundError          code=model_not_found
    ├── ConflictError (409, conflict_error)
    ├── PayloadTooLargeError (413, invalid_request_error)  code=payload_too_large
    ├── ValidationFailedError (422, invalid_request_error) code=validation_error
    ├── RateLimitError (429, rate_limit_error)             carries retry_after
    │   └── InsufficientQuotaError      code=insufficient_quota
    ├── ServiceUnavailableError (503, service_unavailable) carries retry_after
    │   ├── QueueFullError              code=queue_full
    │   ├── EngineUnavailableError      code=engine_unavailable (worker crashed, loading failed)
    │   └── ContentFilterUnavailableError code=content_filter_error (filter failed, policy fails closed)
    └── EngineError (500, api_error)    code=engine_error     (the engine failed mid-request)
        └── UpstreamError (502)         code=upstream_error   (a remote provider failed)
"""

from __future__ import annotations

from typing import Any, ClassVar


class AlizeError(Exception):
    """Base of every error a client may see. Subclasses fix status, type and default code."""

    status_code: ClassVar[int] = 500
    error_type: ClassVar[str] = "api_error"
    default_code: ClassVar[str | None] = "internal_error"

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        code: str | None = None,
        headers: dict[str, str] | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.code = code if code is not None else self.default_code
        self.headers: dict[str, str] = dict(headers or {})
        #: extra fields rendered beside message/type/param/code (e.g. content-filter results)
        self.extra: dict[str, object] = dict(extra or {})

    def __reduce__(self) -> tuple[Any, ...]:
        """Pickled by state, whatever the subclass's constructor takes: an error raised in another
        process (a Ray Serve replica) arrives as itself."""
        return (_rebuild, (type(self), self.__dict__))

    def to_dict(self) -> dict[str, object]:
        """The body's ``error`` object; extras never replace the four standard fields."""
        body: dict[str, object] = dict(self.extra)
        body.update(message=self.message, type=self.error_type, param=self.param, code=self.code)
        return body


def _rebuild(cls: type[AlizeError], state: dict[str, Any]) -> AlizeError:
    error = cls.__new__(cls)
    Exception.__init__(error, state.get("message", ""))
    error.__dict__.update(state)
    return error


class InvalidRequestError(AlizeError):
    status_code = 400
    error_type = "invalid_request_error"
    default_code = "invalid_request"


class ContextLengthExceededError(InvalidRequestError):
    default_code = "context_length_exceeded"

    def __init__(self, *, prompt_tokens: int, max_tokens: int, context_length: int) -> None:
        super().__init__(
            f"This model's maximum context length is {context_length} tokens. However, you requested "
            f"{prompt_tokens + max_tokens} tokens ({prompt_tokens} in the messages, {max_tokens} in "
            "the completion). Please reduce the length of the messages or completion.",
            param="messages",
            extra={
                "prompt_tokens": prompt_tokens,
                "max_tokens": max_tokens,
                "context_length": context_length,
            },
        )


class UnsupportedFeatureError(InvalidRequestError):
    default_code = "unsupported_feature"


class ContentFilterError(InvalidRequestError):
    default_code = "content_filter"


class AuthenticationError(AlizeError):
    status_code = 401
    error_type = "authentication_error"
    default_code = "invalid_api_key"


class PermissionDeniedError(AlizeError):
    status_code = 403
    error_type = "permission_error"
    default_code = "permission_denied"


class NotFoundError(AlizeError):
    status_code = 404
    error_type = "not_found_error"
    default_code = "not_found"


class ModelNotFoundError(NotFoundError):
    default_code = "model_not_found"

    def __init__(self, model: str) -> None:
        super().__init__(
            f"The model '{model}' does not exist or you do not have access to it.", param="model"
        )


class ConflictError(AlizeError):
    status_code = 409
    error_type = "conflict_error"
    default_code = "conflict"


class PayloadTooLargeError(AlizeError):
    status_code = 413
    error_type = "invalid_request_error"
    default_code = "payload_too_large"


class ValidationFailedError(AlizeError):
    status_code = 422
    error_type = "invalid_request_error"
    default_code = "validation_error"


def _retry_headers(retry_after: float) -> dict[str, str]:
    """``Retry-After`` in whole seconds (HTTP) and ``retry-after-ms`` (OpenAI SDKs read it)."""
    seconds = max(1, int(retry_after + 0.999))
    return {"Retry-After": str(seconds), "retry-after-ms": str(max(1, int(retry_after * 1000)))}


class RateLimitError(AlizeError):
    status_code = 429
    error_type = "rate_limit_error"
    default_code = "rate_limit_exceeded"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float = 1.0,
        code: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        merged = _retry_headers(retry_after)
        merged.update(headers or {})
        super().__init__(message, code=code, headers=merged)
        self.retry_after = retry_after


class InsufficientQuotaError(RateLimitError):
    error_type = "insufficient_quota"
    default_code = "insufficient_quota"


class ServiceUnavailableError(AlizeError):
    status_code = 503
    error_type = "service_unavailable"
    default_code = "service_unavailable"

    def __init__(
        self,
        message: str,
        *,
        retry_after: float = 1.0,
        code: str | None = None,
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(message, code=code, headers=_retry_headers(retry_after), extra=extra)
        self.retry_after = retry_after


class QueueFullError(ServiceUnavailableError):
    default_code = "queue_full"


class EngineUnavailableError(ServiceUnavailableError):
    default_code = "engine_unavailable"


class ContentFilterUnavailableError(ServiceUnavailableError):
    default_code = "content_filter_error"


class EngineError(AlizeError):
    default_code = "engine_error"


class UpstreamError(EngineError):
    """A remote provider failed or could not be used (502 Bad Gateway)."""

    status_code = 502
    default_code = "upstream_error"
