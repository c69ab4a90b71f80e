"""The fenced blocks of README.md and docs/*.md, as the documentation tests read them.

Every fence names its language. ``bash``, ``sh`` and ``python`` blocks are code: the doc-test
(``tests/e2e/test_docs_run.py``) runs each one against a live server, unless the line just
before the fence is ``<!-- doctest: skip REASON -->``. ``json``, ``yaml`` and ``text`` blocks are
data and diagrams (request bodies, replies, configuration for other programs): never run. A fence
with no language or any other one is refused, so a new command cannot slip past the doc-test
by being written without a tag.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel

ROOT = Path(__file__).resolve().parents[2]
CODE = frozenset({"bash", "sh", "python"})
DATA = frozenset({"json", "yaml", "text"})
FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```[ \t]*$", re.S | re.M)
SKIP = re.compile(r"<!--\s*doctest:\s*skip\b(.*?)-->\Z", re.S)
#: shell words that end one command and start another
SEPARATORS = frozenset({"&&", "||", "|", ";", "&"})


@dataclass(frozen=True)
class Block:
    doc: str  # path relative to the repository
    line: int  # of the opening fence
    lang: str
    body: str
    skip: str | None  # the reason given in the marker, None for a block that runs

    @property
    def where(self) -> str:
        return f"{self.doc}:{self.line}"

    @property
    def is_code(self) -> bool:
        return self.lang in CODE


def documents() -> list[Path]:
    """README.md first (it creates the first key, as a reader would), then docs/*.md by name."""
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def blocks(paths: list[Path] | None = None) -> list[Block]:
    found = []
    for path in paths or documents():
        text = path.read_text()
        for m in FENCE.finditer(text):
            before = text[: m.start()].rstrip()
            marker = SKIP.search(before)
            found.append(
                Block(
                    doc=str(path.relative_to(ROOT)),
                    line=text.count("\n", 0, m.start()) + 1,
                    lang=m.group(1).strip(),
                    body=m.group(2),
                    skip=marker.group(1).strip() if marker else None,
                )
            )
    return found


def runnable() -> list[Block]:
    return [b for b in blocks() if b.is_code and b.skip is None]


def shell_commands(body: str) -> Iterator[list[str]]:
    """The words of each simple command of a shell block (continuations joined, comments and
    leading ``VAR=value`` assignments dropped)."""
    joined = body.replace("\\\n", " ")
    for line in joined.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:  # an open quote: the command goes on over the next lines
            words = shlex.split(line.split("'", 1)[0], comments=True)
        command: list[str] = []
        for word in [*words, ";"]:
            if word in SEPARATORS:
                if command:
                    yield command
                command = []
            elif command or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*=", word):
                command.append(word)


def alize_invocations(body: str) -> Iterator[list[str]]:
    """The arguments of every ``alize ...`` command of a shell block."""
    for words in shell_commands(body):
        if words and (words[0] == "alize" or words[0].endswith("/alize")):
            yield words[1:]


def env_names(body: str) -> set[str]:
    return set(re.findall(r"\b(ALIZE_[A-Z0-9_]+)=", body))


def setting_env_names(model: type[BaseModel], prefix: str = "ALIZE_") -> set[str]:
    """Every environment variable the settings read (nested groups joined with ``__``)."""
    names: set[str] = set()
    for name, field in model.model_fields.items():
        env = f"{prefix}{name.upper()}"
        annotation: Any = field.annotation
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            names |= setting_env_names(annotation, env + "__")
        else:
            names.add(env)
    return names


def check_cli_words(root: Any, args: list[str]) -> str | None:
    """Why ``alize ARGS`` is not a command line the CLI accepts (unknown command or option),
    or None. Typer vendors its own click, so groups are recognised by shape, not by class."""
    command = root
    path = ["alize"]
    rest = list(args)
    while getattr(command, "commands", None) is not None and rest and not rest[0].startswith("-"):
        word = rest.pop(0)
        if word not in command.commands:
            return f"`{' '.join(path)}` has no command {word!r}"
        command = command.commands[word]
        path.append(word)
    if getattr(command, "commands", None) is not None:
        return f"`{' '.join(path)}` is a group, not a command"
    options = {opt for p in command.params for opt in (*p.opts, *p.secondary_opts)} | {"--help"}
    for word in rest:
        if word.startswith("--") and word.split("=", 1)[0] not in options:
            return f"`{' '.join(path)}` has no option {word}"
    return None
