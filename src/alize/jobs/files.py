"""Files: uploaded JSONL inputs and the outputs batches write, stored under the data directory.

Where the bytes go: ``<data_dir>/files/<id>``, a name the server chooses; the client's file name
is only a label in the row. How a file lands: the upload is copied into a temporary file in the
same directory while every line is checked, flushed and ``fsync``-ed, renamed into place (an
atomic step), and only then is the row inserted. So a crash can leave at most a stray file with
no row (never a row without its file, never half a file under a real name), and strays and
temporaries are removed by :meth:`FileService.sweep` once they are older than
``STRAY_AGE`` (a live upload between rename and insert takes milliseconds). Deleting removes the
row first, then the bytes, for the same reason.

A file belongs to its project: every lookup is scoped by project id, so another project's file
answers 404 exactly like a file that never existed.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets
import time
from collections.abc import AsyncIterable, Callable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import BinaryIO

from sqlalchemy.ext.asyncio import AsyncSession

from alize.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from alize.jobs.jsonl import OUTPUT_PURPOSES, UPLOAD_PURPOSES, CheckReport, copy_checked
from alize.store.database import Database
from alize.store.ids import utc_now
from alize.store.jobs_models import FileRow
from alize.store.repositories import FileRepository
from alize.store.repositories.files import Order

#: how old a stray (row-less) or temporary file must be before the sweeper removes it
STRAY_AGE = timedelta(hours=1)
MIN_EXPIRY_S = 3600
MAX_EXPIRY_S = 30 * 24 * 3600
_TMP_PREFIX = ".tmp-"


@dataclass(frozen=True, slots=True)
class FileLimits:
    max_bytes: int
    max_lines: int
    max_line_bytes: int


@dataclass(frozen=True, slots=True)
class FileObject:
    """A stored file as the API shows it (OpenAI's FileObject plus Mistral's extra fields)."""

    id: str
    project_id: str
    filename: str
    purpose: str
    bytes: int
    num_lines: int
    sample_type: str | None
    source: str
    created_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class StagedFile:
    """Bytes written and renamed into place, waiting for their row (see :meth:`FileService.commit`)."""

    row: FileRow


def _object(row: FileRow) -> FileObject:
    return FileObject(
        id=row.id,
        project_id=row.project_id,
        filename=row.filename,
        purpose=row.purpose,
        bytes=row.bytes,
        num_lines=row.num_lines,
        sample_type=row.sample_type,
        source=row.source,
        created_at=row.created_at,
        expires_at=row.expires_at,
    )


def new_file_id() -> str:
    return "file-" + secrets.token_hex(12)


def _durable_close(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())
    out.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _clean_name(filename: str | None) -> str:
    """A label only (never a path): the last path component, printable, at most 255 characters."""
    name = (filename or "").replace("\\", "/").rsplit("/", 1)[-1]
    name = "".join(ch for ch in name if ch.isprintable()).strip()
    return name[:255] or "upload.jsonl"


def check_expiry(seconds: int | None) -> int | None:
    if seconds is not None and not MIN_EXPIRY_S <= seconds <= MAX_EXPIRY_S:
        raise InvalidRequestError(
            f"expires_after.seconds must be between {MIN_EXPIRY_S} and {MAX_EXPIRY_S}",
            param="expires_after",
        )
    return seconds


def _report_error(report: CheckReport, limits: FileLimits) -> Exception | None:
    if report.bytes > limits.max_bytes:
        return PayloadTooLargeError(
            f"the file is larger than the limit of {limits.max_bytes} bytes", param="file"
        )
    if report.lines == 0:
        return InvalidRequestError("the file is empty", param="file", code="empty_file")
    if report.lines > limits.max_lines:
        return InvalidRequestError(
            f"the file has {report.lines} lines; at most {limits.max_lines} are allowed",
            param="file",
            code="too_many_lines",
        )
    if report.problems:
        more = report.problem_count - 1
        message = str(report.problems[0]) + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")
        return InvalidRequestError(
            message,
            param="file",
            code="invalid_file",
            extra={"errors": [{"line": p.line, "message": p.message} for p in report.problems]},
        )
    return None


class FileService:
    def __init__(
        self,
        db: Database,
        root: Path,
        limits: FileLimits,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._db = db
        self.root = root
        self.limits = limits
        self._clock = clock

    def path(self, file_id: str) -> Path:
        if not file_id.startswith("file-") or not file_id[5:].isalnum():
            raise NotFoundError(f"No such file: '{file_id[:64]}'", param="file_id")
        return self.root / file_id

    # ----------------------------------------------------------------- writing

    def _write(self, file_id: str, fill: Callable[[BinaryIO], CheckReport]) -> CheckReport:
        """Write through ``fill`` into a temporary file; renamed into place only if ``fill``
        reports no problem (the temporary is removed otherwise, or on any error)."""
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{_TMP_PREFIX}{secrets.token_hex(8)}"
        try:
            with tmp.open("xb") as out:
                report = fill(out)
                if _report_error(report, self.limits) is not None:
                    return report
                out.flush()
                os.fsync(out.fileno())
            tmp.rename(self.root / file_id)
            _fsync_dir(self.root)
            return report
        finally:
            with contextlib.suppress(FileNotFoundError):
                tmp.unlink()

    async def upload(
        self,
        project_id: str,
        source: BinaryIO,
        *,
        filename: str | None,
        purpose: str,
        expires_after_s: int | None = None,
    ) -> FileObject:
        """Check and store an upload (``source`` is read in a worker thread, a chunk at a time)."""
        if purpose in OUTPUT_PURPOSES:
            raise InvalidRequestError(
                f"files with purpose '{purpose}' are written by batches, not uploaded", param="purpose"
            )
        if purpose not in UPLOAD_PURPOSES:
            raise InvalidRequestError(f"purpose must be one of {', '.join(UPLOAD_PURPOSES)}", param="purpose")
        check_expiry(expires_after_s)
        file_id = new_file_id()
        limits = self.limits

        def fill(out: BinaryIO) -> CheckReport:
            return copy_checked(
                source,
                out,
                purpose,
                max_bytes=limits.max_bytes,
                max_lines=limits.max_lines,
                max_line_bytes=limits.max_line_bytes,
            )

        report = await asyncio.to_thread(self._write, file_id, fill)
        error = _report_error(report, limits)
        if error is not None:
            raise error
        now = self._clock()
        row = FileRow(
            id=file_id,
            project_id=project_id,
            filename=_clean_name(filename),
            purpose=purpose,
            bytes=report.bytes,
            num_lines=report.lines,
            sample_type="batch_request" if purpose == "batch" else "instruct",
            source="upload",
            created_at=now,
            expires_at=now + timedelta(seconds=expires_after_s) if expires_after_s else None,
        )
        try:
            async with self._db.transaction() as session:
                await FileRepository(session).add(row)
        except BaseException:
            await asyncio.to_thread(self._unlink, file_id)
            raise
        return _object(row)

    async def stage(
        self,
        project_id: str,
        pages: AsyncIterable[Sequence[str]],
        *,
        filename: str,
        purpose: str,
        sample_type: str,
        source: str = "batch",
        expires_after_s: int | None = None,
    ) -> StagedFile:
        """Write server-made lines (one JSON document each, a page at a time) durably under a
        new id; the row is added by :meth:`commit` in the caller's transaction, together with
        whatever else must agree with it."""
        file_id = new_file_id()
        self.root.mkdir(parents=True, exist_ok=True)
        tmp = self.root / f"{_TMP_PREFIX}{secrets.token_hex(8)}"
        size = lines = 0
        out = await asyncio.to_thread(tmp.open, "xb")
        try:
            async for page in pages:
                data = "".join(line + "\n" for line in page).encode()
                await asyncio.to_thread(out.write, data)
                size, lines = size + len(data), lines + len(page)
            await asyncio.to_thread(_durable_close, out)
            await asyncio.to_thread(tmp.rename, self.root / file_id)
            await asyncio.to_thread(_fsync_dir, self.root)
        finally:
            out.close()
            with contextlib.suppress(FileNotFoundError):
                await asyncio.to_thread(tmp.unlink)
        now = self._clock()
        return StagedFile(
            FileRow(
                id=file_id,
                project_id=project_id,
                filename=filename,
                purpose=purpose,
                bytes=size,
                num_lines=lines,
                sample_type=sample_type,
                source=source,
                created_at=now,
                expires_at=now + timedelta(seconds=expires_after_s) if expires_after_s else None,
            )
        )

    @staticmethod
    async def commit(session: AsyncSession, staged: StagedFile) -> FileObject:
        await FileRepository(session).add(staged.row)
        return _object(staged.row)

    async def discard(self, staged: StagedFile) -> None:
        await asyncio.to_thread(self._unlink, staged.row.id)

    # ----------------------------------------------------------------- reading

    async def get(self, file_id: str, project_id: str) -> FileObject:
        async with self._db.transaction() as session:
            row = await FileRepository(session).get(file_id, project_id)
        if row is None:
            raise NotFoundError(f"No such file: '{file_id[:64]}'", param="file_id")
        return _object(row)

    async def content_path(self, file_id: str, project_id: str) -> tuple[FileObject, Path]:
        found = await self.get(file_id, project_id)
        return found, self.path(found.id)

    async def list(
        self,
        project_id: str,
        *,
        purpose: str | None = None,
        after: str | None = None,
        limit: int = 100,
        offset: int = 0,
        order: Order = "desc",
    ) -> tuple[list[FileObject], int]:
        """A page of the project's files and how many match in all."""
        async with self._db.transaction() as session:
            repo = FileRepository(session)
            rows = await repo.list(
                project_id, purpose=purpose, after=after, limit=limit, offset=offset, order=order
            )
            total = await repo.count(project_id, purpose)
        return [_object(r) for r in rows], total

    # ----------------------------------------------------------------- removing

    def _unlink(self, file_id: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / file_id).unlink()

    async def delete(self, file_id: str, project_id: str) -> None:
        async with self._db.transaction() as session:
            deleted = await FileRepository(session).delete(file_id, project_id)
        if not deleted:
            raise NotFoundError(f"No such file: '{file_id[:64]}'", param="file_id")
        await asyncio.to_thread(self._unlink, file_id)

    async def sweep(self) -> int:
        """Delete expired files, and strays older than ``STRAY_AGE``; returns how many went."""
        removed = 0
        async with self._db.transaction() as session:
            expired = await FileRepository(session).expired(self._clock())
        for row in expired:
            async with self._db.transaction() as session:
                gone = await FileRepository(session).delete_by_id(row.id)
            if gone:
                await asyncio.to_thread(self._unlink, row.id)
                removed += 1
        return removed + await self._sweep_strays()

    async def _sweep_strays(self) -> int:
        cutoff = time.time() - STRAY_AGE.total_seconds()

        def old_entries() -> list[str]:
            if not self.root.is_dir():
                return []
            return [
                entry.name
                for entry in os.scandir(self.root)
                if entry.is_file(follow_symlinks=False) and entry.stat().st_mtime < cutoff
            ]

        names = await asyncio.to_thread(old_entries)
        temporaries = [n for n in names if n.startswith(_TMP_PREFIX)]
        candidates: Sequence[str] = [n for n in names if n.startswith("file-")]
        known: set[str] = set()
        for start in range(0, len(candidates), 500):
            async with self._db.transaction() as session:
                known |= await FileRepository(session).existing(candidates[start : start + 500])
        strays = [*temporaries, *(n for n in candidates if n not in known)]
        for name in strays:
            await asyncio.to_thread(self._unlink_name, name)
        return len(strays)

    def _unlink_name(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            (self.root / name).unlink()
