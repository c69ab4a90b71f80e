"""How pulling a model pack fails, each error with its HTTP status and code (the admin API and
the CLI show them as they are)."""

from __future__ import annotations

from alize.errors import AlizeError, ServiceUnavailableError, UpstreamError


class PackDownloadError(UpstreamError):
    """pip could not fetch the pack's wheels (index unreachable, a wheel missing there...)."""

    default_code = "pack_download_failed"


class PackIntegrityError(UpstreamError):
    """What the index served is not what the project checked: a hash, a size or a header differs."""

    default_code = "pack_integrity_error"


class InsufficientStorageError(AlizeError):
    status_code = 507
    error_type = "insufficient_storage"
    default_code = "insufficient_storage"


class PackCancelledError(ServiceUnavailableError):
    default_code = "pack_pull_cancelled"
