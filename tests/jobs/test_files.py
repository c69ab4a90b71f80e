"""Files: checked line by line on upload, stored under names the server picks, scoped to a
project, never half-written, swept when expired or stray."""

from __future__ import annotations

import io
import json
import os
import time
from pathlib import Path

import pytest
from tests.jobs.conftest import Clock

from alize.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from alize.gateway.projects import ProjectService
from alize.jobs.files import FileLimits, FileService
from alize.store import Database

LIMITS = FileLimits(max_bytes=4096, max_lines=10, max_line_bytes=512)


def line(custom_id: str, content: str = "hi") -> dict[str, object]:
    return {
        "custom_id": custom_id,
        "method": "POST",
        "url": "/v1/chat/completions",
        "body": {"model": "m", "messages": [{"role": "user", "content": content}]},
    }


def jsonl(*items: object) -> io.BytesIO:
    return io.BytesIO("\n".join(json.dumps(i) for i in items).encode() + b"\n")


async def _setup(db: Database, tmp_path: Path, clock: Clock) -> tuple[FileService, str, str]:
    projects = ProjectService(db)
    a = await projects.create("a")
    b = await projects.create("b")
    return FileService(db, tmp_path / "files", LIMITS, clock=clock), a.id, b.id


def _names(service: FileService) -> list[str]:
    return sorted(os.listdir(service.root)) if service.root.exists() else []


async def test_upload_stores_under_a_server_chosen_name(db: Database, tmp_path: Path, clock: Clock) -> None:
    files, project, _ = await _setup(db, tmp_path, clock)
    stored = await files.upload(
        project, jsonl(line("a"), line("b")), filename="../../etc/passwd", purpose="batch"
    )
    assert stored.filename == "passwd" and stored.num_lines == 2 and stored.purpose == "batch"
    assert stored.sample_type == "batch_request" and stored.source == "upload"
    assert _names(files) == [stored.id]  # the client's name is only a label
    assert (files.root / stored.id).read_bytes() == jsonl(line("a"), line("b")).getvalue()
    assert stored.bytes == (files.root / stored.id).stat().st_size


@pytest.mark.parametrize(
    ("content", "line_no", "words"),
    [
        (b'{"custom_id": "a", "body": {}}\nnot json\n', 2, "not valid JSON"),
        (b'{"custom_id": "a", "body": {}}\n\n{"custom_id": "b", "body": {}}\n', 2, "empty line"),
        (
            b'{"custom_id": "a", "body": {}}\n{"custom_id": "a", "body": {}}\n',
            2,
            "repeated (first on line 1)",
        ),
        (b'{"custom_id": "a", "method": "GET", "url": "/v1/embeddings", "body": {}}\n', 1, "method"),
        (b'{"custom_id": "a", "method": "POST", "url": "/v1/images", "body": {}}\n', 1, "url"),
        (b'{"custom_id": "a", "body": "text"}\n', 1, "body"),
        (b"[1, 2]\n", 1, "JSON object"),
        (b'{"custom_id": "a", "body": {}}\n\xff\xfe\n', 2, "UTF-8"),
        (b'{"custom_id": "a", "body": {}, "extra": 1}\n', 1, "unknown field"),
        (b'{"custom_id": "' + b"x" * 600 + b'", "body": {}}\n', 1, "longer than the limit of 512 bytes"),
    ],
)
async def test_bad_lines_are_refused_by_number_and_leave_nothing(
    db: Database, tmp_path: Path, clock: Clock, content: bytes, line_no: int, words: str
) -> None:
    files, project, _ = await _setup(db, tmp_path, clock)
    with pytest.raises(InvalidRequestError) as info:
        await files.upload(project, io.BytesIO(content), filename="f.jsonl", purpose="batch")
    assert info.value.status_code == 400
    assert info.value.message.startswith(f"line {line_no}:") and words in info.value.message
    assert info.value.extra["errors"][0]["line"] == line_no  # type: ignore[index]
    assert _names(files) == []  # no partial write, no temporary left behind
    assert (await files.list(project))[1] == 0


async def test_several_problems_are_counted(db: Database, tmp_path: Path, clock: Clock) -> None:
    files, project, _ = await _setup(db, tmp_path, clock)
    with pytest.raises(InvalidRequestError) as info:
        await files.upload(project, io.BytesIO(b"x\ny\nz\n"), filename="f", purpose="batch")
    assert "(and 2 more problems)" in info.value.message
    assert [e["line"] for e in info.value.extra["errors"]] == [1, 2, 3]  # type: ignore[attr-defined]


async def test_empty_oversized_and_too_long_files(db: Database, tmp_path: Path, clock: Clock) -> None:
    files, project, _ = await _setup(db, tmp_path, clock)
    with pytest.raises(InvalidRequestError) as empty:
        await files.upload(project, io.BytesIO(b""), filename="f", purpose="batch")
    assert empty.value.code == "empty_file"
    big = jsonl(*(line(str(i), "x" * 400) for i in range(12)))
    with pytest.raises(PayloadTooLargeError) as large:
        await files.upload(project, big, filename="f", purpose="batch")
    assert large.value.status_code == 413
    many = jsonl(*(line(str(i)) for i in range(11)))
    assert len(many.getvalue()) < LIMITS.max_bytes
    with pytest.raises(InvalidRequestError) as lines:
        await files.upload(project, many, filename="f", purpose="batch")
    assert lines.value.code == "too_many_lines"
    assert _names(files) == []


async def test_purposes(db: Database, tmp_path: Path, clock: Clock) -> None:
    files, project, _ = await _setup(db, tmp_path, clock)
    for purpose in ("batch_output", "assistants", ""):
        with pytest.raises(InvalidRequestError):
            await files.upload(project, jsonl(line("a")), filename="f", purpose=purpose)
    chat = {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]}
    stored = await files.upload(project, jsonl(chat), filename="train.jsonl", purpose="fine-tune")
    assert stored.sample_type == "instruct"
    no_answer = {"messages": [{"role": "user", "content": "q"}]}
    with pytest.raises(InvalidRequestError) as info:
        await files.upload(project, jsonl(chat, no_answer), filename="f", purpose="fine-tune")
    assert info.value.message.startswith("line 2:") and "assistant" in info.value.message


async def test_another_projects_file_is_not_found(db: Database, tmp_path: Path, clock: Clock) -> None:
    files, mine, theirs = await _setup(db, tmp_path, clock)
    stored = await files.upload(mine, jsonl(line("a")), filename="f", purpose="batch")
    with pytest.raises(NotFoundError):
        await files.get(stored.id, theirs)
    with pytest.raises(NotFoundError):
        await files.delete(stored.id, theirs)
    assert (await files.list(theirs))[0] == []
    assert (await files.get(stored.id, mine)).id == stored.id
    with pytest.raises(NotFoundError):  # ids that could be paths are not even looked at
        files.path("../secret_key")


async def test_list_orders_pages_and_filters(db: Database, tmp_path: Path, clock: Clock) -> None:
    files, project, _ = await _setup(db, tmp_path, clock)
    ids = []
    for i in range(5):
        clock.advance(1)
        ids.append((await files.upload(project, jsonl(line(str(i))), filename=f"{i}", purpose="batch")).id)
    chat = {"messages": [{"role": "assistant", "content": "a"}]}
    await files.upload(project, jsonl(chat), filename="t", purpose="fine-tune")
    newest, total = await files.list(project, purpose="batch", limit=2)
    assert [f.id for f in newest] == ids[::-1][:2] and total == 5
    rest, _ = await files.list(project, purpose="batch", after=newest[-1].id, limit=10)
    assert [f.id for f in rest] == ids[::-1][2:]
    oldest, _ = await files.list(project, purpose="batch", order="asc", limit=2, offset=1)
    assert [f.id for f in oldest] == ids[1:3]


async def test_delete_removes_row_and_bytes(db: Database, tmp_path: Path, clock: Clock) -> None:
    files, project, _ = await _setup(db, tmp_path, clock)
    stored = await files.upload(project, jsonl(line("a")), filename="f", purpose="batch")
    await files.delete(stored.id, project)
    assert _names(files) == []
    with pytest.raises(NotFoundError):
        await files.get(stored.id, project)


async def test_sweeper_deletes_expired_files_and_old_strays(
    db: Database, tmp_path: Path, clock: Clock
) -> None:
    files, project, _ = await _setup(db, tmp_path, clock)
    short = await files.upload(project, jsonl(line("a")), filename="f", purpose="batch", expires_after_s=3600)
    kept = await files.upload(project, jsonl(line("b")), filename="g", purpose="batch")
    stray = files.root / "file-0123456789abcdef01234567"  # bytes of a crash between rename and insert
    stray.write_text("{}\n")
    tmp = files.root / ".tmp-deadbeef"  # a write cut short
    tmp.write_text("{")
    fresh = files.root / "file-fedcba9876543210fedcba98"  # an upload in flight right now
    fresh.write_text("{}\n")
    old = time.time() - 2 * 3600
    for path in (stray, tmp):
        os.utime(path, (old, old))
    assert await files.sweep() == 2  # strays only: nothing has expired yet
    clock.advance(3601)
    assert await files.sweep() == 1
    assert _names(files) == sorted([kept.id, fresh.name])
    with pytest.raises(NotFoundError):
        await files.get(short.id, project)
    with pytest.raises(InvalidRequestError):
        await files.upload(project, jsonl(line("c")), filename="f", purpose="batch", expires_after_s=60)
