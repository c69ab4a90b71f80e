"""``alize files upload|list|get|rm`` and ``alize batch create|list|status|cancel|results``.

They talk HTTP to a running server (``--url`` / ``ALIZE_URL``, ``--api-key`` / ``ALIZE_API_KEY``)
with the same routes an OpenAI client uses, so what they show is what any client sees.
``alize batch create --wait`` and ``alize batch status --wait`` draw a progress bar of lines done
until the batch is over.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

import httpx
import typer

from alize.cli.models import JsonOpt, KeyOpt, UrlOpt, _call, _echo_json, _fail

files_app = typer.Typer(help="Files: batch inputs and outputs, fine-tuning data.", no_args_is_help=True)
batch_app = typer.Typer(help="Batch jobs: many requests at the batch price.", no_args_is_help=True)

_OVER = ("completed", "failed", "expired", "cancelled")
_InputArg = typer.Argument(..., exists=True, dir_okay=False, help="A JSONL file.")
_OutputOpt = typer.Option(None, "-o", "--output", help="Write here (default: standard output).")


def _client(url: str, api_key: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
    return httpx.Client(base_url=url, headers=headers, timeout=httpx.Timeout(600.0, connect=5.0))


def _checked(response: httpx.Response) -> httpx.Response:
    if response.status_code >= 400:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text
        _fail(f"{response.status_code}: {message}")
    return response


@files_app.command("upload")
def files_upload(
    path: Path = _InputArg,
    purpose: str = typer.Option("batch", help="`batch` or `fine-tune`."),
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Upload a JSONL file (checked line by line; problems are reported with their line numbers)."""
    try:
        with _client(url, api_key) as client, path.open("rb") as handle:
            response = _checked(
                client.post("/v1/files", files={"file": (path.name, handle)}, data={"purpose": purpose})
            )
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the Alizé server at {url} ({type(exc).__name__})")
    data = response.json()
    if as_json:
        _echo_json(data)
    else:
        typer.echo(f"{data['id']}  {data['num_lines']} lines, {data['bytes']} bytes")


@files_app.command("list")
def files_list(
    purpose: str | None = typer.Option(None, help="Only files with this purpose."),
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """The project's files, newest first."""
    data = _call(url, api_key, "GET", "/v1/files" + (f"?purpose={purpose}" if purpose else ""))
    if as_json:
        _echo_json(data)
        return
    for item in data["data"]:
        typer.echo(f"{item['id']}  {item['purpose']:<13} {item['num_lines']:>7} lines  {item['filename']}")


@files_app.command("get")
def files_get(
    file_id: str,
    output: Path | None = _OutputOpt,
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
) -> None:
    """Download a file's content."""
    try:
        with _client(url, api_key) as client:
            content = _checked(client.get(f"/v1/files/{file_id}/content")).content
    except httpx.HTTPError as exc:
        _fail(f"cannot reach the Alizé server at {url} ({type(exc).__name__})")
    if output is None:
        sys.stdout.buffer.write(content)
    else:
        output.write_bytes(content)


@files_app.command("rm")
def files_rm(file_id: str, url: str = UrlOpt, api_key: str | None = KeyOpt) -> None:
    """Delete a file (refused while a batch still reads it)."""
    _call(url, api_key, "DELETE", f"/v1/files/{file_id}")
    typer.echo(f"deleted {file_id}")


def _line(batch: dict[str, Any]) -> str:
    counts = batch["request_counts"]
    failed = f", {counts['failed']} failed" if counts["failed"] else ""
    return (
        f"{batch['id']}  {batch['status']:<11} {counts['completed']}/{counts['total']} done"
        f"{failed}  {batch['endpoint']}"
    )


def _bar(batch_id: str, done: int, total: int, width: int = 30) -> str:
    filled = width * done // max(1, total)
    return f"\r{batch_id} [{'#' * filled}{'-' * (width - filled)}] {done}/{total} lines"


def _wait(url: str, api_key: str | None, batch_id: str, poll_s: float) -> dict[str, Any]:
    """Poll until the batch is over, redrawing a bar of lines done (completed + failed) on
    standard error whenever the count moves."""
    batch: dict[str, Any] = _call(url, api_key, "GET", f"/v1/batches/{batch_id}")
    shown = -1
    while True:
        counts = batch["request_counts"]
        done = counts["completed"] + counts["failed"]
        if done != shown:
            sys.stderr.write(_bar(batch_id, done, counts["total"]))
            sys.stderr.flush()
            shown = done
        if batch["status"] in _OVER:
            sys.stderr.write(f"  {batch['status']}\n")
            return batch
        time.sleep(poll_s)
        batch = _call(url, api_key, "GET", f"/v1/batches/{batch_id}")


@batch_app.command("create")
def batch_create(
    input_file: str = typer.Argument(..., help="A file id (file-...) or a local JSONL path to upload first."),
    endpoint: str = typer.Option("/v1/chat/completions", help="What every line calls."),
    window: str = typer.Option("24h", help="Completion window: unfinished lines expire after it."),
    wait: bool = typer.Option(False, help="Wait with a progress bar until the batch is over."),
    poll_s: float = typer.Option(1.0, help="Seconds between polls while waiting."),
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Create a batch over an uploaded file (or upload the local file first)."""
    file_id = input_file
    if not input_file.startswith("file-"):
        path = Path(input_file)
        if not path.is_file():
            _fail(f"{input_file}: neither a file id nor a readable file")
        with _client(url, api_key) as client, path.open("rb") as handle:
            response = _checked(
                client.post("/v1/files", files={"file": (path.name, handle)}, data={"purpose": "batch"})
            )
        file_id = response.json()["id"]
    body = {"input_file_id": file_id, "endpoint": endpoint, "completion_window": window}
    batch = _call(url, api_key, "POST", "/v1/batches", body)
    if wait:
        batch = _wait(url, api_key, batch["id"], poll_s)
    _echo_json(batch) if as_json else typer.echo(_line(batch))


@batch_app.command("list")
def batch_list(url: str = UrlOpt, api_key: str | None = KeyOpt, as_json: bool = JsonOpt) -> None:
    """The project's batches, newest first."""
    data = _call(url, api_key, "GET", "/v1/batches?limit=100")
    if as_json:
        _echo_json(data)
        return
    for batch in data["data"]:
        typer.echo(_line(batch))


@batch_app.command("status")
def batch_status(
    batch_id: str,
    wait: bool = typer.Option(False, help="Wait with a progress bar until the batch is over."),
    poll_s: float = typer.Option(1.0, help="Seconds between polls while waiting."),
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """A batch's status and counters (with --wait, follow it to the end)."""
    batch = (
        _wait(url, api_key, batch_id, poll_s)
        if wait
        else _call(url, api_key, "GET", f"/v1/batches/{batch_id}")
    )
    _echo_json(batch) if as_json else typer.echo(_line(batch))


@batch_app.command("cancel")
def batch_cancel(batch_id: str, url: str = UrlOpt, api_key: str | None = KeyOpt) -> None:
    """Cancel a batch: no new line starts; finished lines are kept (and billed)."""
    typer.echo(_line(_call(url, api_key, "POST", f"/v1/batches/{batch_id}/cancel")))


@batch_app.command("results")
def batch_results(
    batch_id: str,
    errors: bool = typer.Option(False, "--errors", help="The error file instead of the output file."),
    output: Path | None = _OutputOpt,
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
) -> None:
    """Download a finished batch's output (or error) lines."""
    batch = _call(url, api_key, "GET", f"/v1/batches/{batch_id}")
    file_id = batch["error_file_id" if errors else "output_file_id"]
    if file_id is None:
        _fail(f"the batch has no {'error' if errors else 'output'} file (status {batch['status']})")
    files_get(file_id, output=output, url=url, api_key=api_key)
