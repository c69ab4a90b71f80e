"""Text out of uploaded files: plain text, Markdown and PDF (via pypdf), with hard limits.

Only these three kinds are accepted, told apart by name and checked by content (a PDF must
start with ``%PDF-``). PDFs beyond the page limit and encrypted PDFs are refused rather than
half-read, so the user knows what the assistant saw.
"""

from __future__ import annotations

import io
import logging
from dataclasses import dataclass

from alize.errors import InvalidRequestError, PayloadTooLargeError

KINDS = {
    ".txt": "text/plain",
    ".md": "text/markdown",
    ".markdown": "text/markdown",
    ".pdf": "application/pdf",
}


@dataclass(frozen=True, slots=True)
class Extracted:
    text: str
    media_type: str
    pages: int | None


def _suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot >= 0 else ""


def _decode(data: bytes) -> str:
    for encoding in ("utf-8-sig", "utf-16") if data[:2] in (b"\xff\xfe", b"\xfe\xff") else ("utf-8-sig",):
        try:
            return data.decode(encoding)
        except UnicodeDecodeError:
            continue
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return data.decode("latin-1")


def _pdf_text(data: bytes, max_pages: int) -> tuple[str, int]:
    from pypdf import PdfReader
    from pypdf.errors import PdfReadError

    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(data))
        if reader.is_encrypted:
            raise InvalidRequestError(
                "Encrypted PDFs are not supported.", param="file", code="unsupported_file"
            )
        pages = len(reader.pages)
        if pages > max_pages:
            raise PayloadTooLargeError(
                f"The PDF has {pages} pages; at most {max_pages} are allowed.",
                param="file",
                code="too_many_pages",
            )
        text = "\n\n".join((page.extract_text() or "") for page in reader.pages)
    except (PdfReadError, ValueError, KeyError, TypeError) as exc:
        raise InvalidRequestError(
            f"The PDF could not be read: {exc}", param="file", code="unreadable_file"
        ) from exc
    return text, pages


def extract(name: str, data: bytes, *, max_bytes: int, max_pages: int) -> Extracted:
    """The text of an upload, or a clear 4xx (too large, wrong kind, unreadable, empty)."""
    if len(data) > max_bytes:
        raise PayloadTooLargeError(
            f"The file is {len(data)} bytes; at most {max_bytes} are allowed.",
            param="file",
            code="file_too_large",
        )
    media_type = KINDS.get(_suffix(name))
    if media_type is None:
        raise InvalidRequestError(
            "Only .txt, .md and .pdf files can be uploaded.", param="file", code="unsupported_file"
        )
    pages: int | None = None
    if media_type == "application/pdf":
        if not data.startswith(b"%PDF-"):
            raise InvalidRequestError("The file is not a PDF.", param="file", code="unsupported_file")
        text, pages = _pdf_text(data, max_pages)
    else:
        if b"\x00" in data[:4096] and data[:2] not in (b"\xff\xfe", b"\xfe\xff"):
            raise InvalidRequestError("The file is not text.", param="file", code="unsupported_file")
        text = _decode(data)
    if not text.strip():
        raise InvalidRequestError("No text could be found in the file.", param="file", code="empty_file")
    return Extracted(text=text, media_type=media_type, pages=pages)
