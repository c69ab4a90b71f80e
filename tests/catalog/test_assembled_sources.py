"""Chunked model packages are assembled lazily, once, atomically — checked with a fake package."""

from __future__ import annotations

import sys
import textwrap
import threading
from pathlib import Path

import pytest

from alize.catalog.cards import PackagedSource
from alize.catalog.sources import (
    ModelSourceUnavailableError,
    existing_path,
    is_assembled,
    is_available,
    resolve_path,
)

FAKE = textwrap.dedent(
    """
    import time
    from pathlib import Path

    CALLS = Path(__file__).with_name("calls.txt")

    def assemble(output_path, overwrite=False):
        with CALLS.open("a") as f:
            f.write("x")
        if {fail!r}:
            Path(output_path).write_bytes(b"partial")
            raise ValueError("Assembled file sha256 did not match expected value")
        time.sleep(0.05)
        Path(output_path).write_bytes(b"GGUF" + b"\\0" * 1000)
        return Path(output_path)
    """
)


def fake_package(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str, *, fail: bool = False) -> Path:
    pkg = tmp_path / "site" / name
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text(FAKE.format(fail=fail))
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return pkg / "calls.txt"


def test_assembled_once_lazily_and_atomically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls = fake_package(tmp_path, monkeypatch, "alize_fake_chunks_ok")
    source = PackagedSource(package="alize-fake-chunks-ok", file="m.gguf", assembled=True)
    cache = tmp_path / "cache"
    assert is_available(source)
    assert existing_path(source, cache_dir=cache) is None
    assert not calls.exists()  # nothing assembled just by asking

    results: list[Path] = []
    threads = [
        threading.Thread(target=lambda: results.append(resolve_path(source, cache_dir=cache)))
        for _ in range(4)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and len(results) == 4
    path = results[0]
    assert path == cache / "alize-fake-chunks-ok" / "m.gguf"
    assert calls.read_text() == "x"  # one build, even with four concurrent callers
    assert is_assembled(source, cache) and existing_path(source, cache_dir=cache) == path
    assert oct(path.stat().st_mode & 0o777) == "0o644"

    path.write_bytes(b"tampered")  # a changed file is not trusted: it is rebuilt
    assert not is_assembled(source, cache)
    assert resolve_path(source, cache_dir=cache).read_bytes().startswith(b"GGUF")
    assert calls.read_text() == "xx"


def test_failed_assembly_leaves_nothing(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_package(tmp_path, monkeypatch, "alize_fake_chunks_bad", fail=True)
    source = PackagedSource(package="alize-fake-chunks-bad", file="m.gguf", assembled=True)
    cache = tmp_path / "cache"
    with pytest.raises(ModelSourceUnavailableError, match="sha256 did not match") as err:
        resolve_path(source, cache_dir=cache)
    assert err.value.code == "model_source_unavailable"
    folder = cache / "alize-fake-chunks-bad"
    assert sorted(p.name for p in folder.iterdir()) == ["m.gguf.lock"]


def test_assembled_package_missing(tmp_path: Path) -> None:
    source = PackagedSource(package="alize-fake-chunks-absent", file="m.gguf", assembled=True)
    assert not is_available(source)
    with pytest.raises(ModelSourceUnavailableError, match="not installed"):
        resolve_path(source, cache_dir=tmp_path)
