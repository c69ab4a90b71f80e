"""``alize safety show|set|off``: a deployment's content filters from a terminal.

Like ``alize deploy``, these talk to the admin API of a running server (the policy is part of
the deployment: ``PATCH /admin/api/deployments/NAME`` with ``{"safety": ...}``), so the change
is audited and takes effect on the next request without reloading the model.

``set`` writes one direction's filter whole: categories not named keep their defaults (harm
categories block, health/financial/law are annotated, at the ``--preset``'s threshold: 0.5 for
``balanced``), so the command line says everything that differs from the default.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

import typer

from alize.cli.models import JsonOpt, KeyOpt, UrlOpt, _call, _echo_json, _fail

safety_app = typer.Typer(help="Content filters of deployments: show, set, turn off.", no_args_is_help=True)


class Direction(StrEnum):
    input = "input"
    output = "output"
    both = "both"


class PiiChoice(StrEnum):
    off = "off"
    annotate = "annotate"
    redact = "redact"
    block = "block"


class OnErrorChoice(StrEnum):
    block = "block"
    allow = "allow"


class PresetChoice(StrEnum):
    strict = "strict"
    balanced = "balanced"
    lenient = "lenient"


DeploymentArg = typer.Argument(help="Deployment name.")
DirectionArg = typer.Argument(help="Which filter to write: input, output or both.")
DirectionOffArg = typer.Argument(Direction.both, help="Which filter to remove.")
BlockOpt = typer.Option([], "--block", help="Category that blocks (repeatable).")
AnnotateOpt = typer.Option([], "--annotate", help="Category only reported (repeatable).")
OffOpt = typer.Option([], "--off", help="Category ignored (repeatable).")
ThresholdOpt = typer.Option(
    [], "--threshold", help="CATEGORY=VALUE: score at which its action applies (repeatable)."
)
PiiOpt = typer.Option(PiiChoice.off, "--pii", help="What detected PII does.")
OnErrorOpt = typer.Option(
    OnErrorChoice.block, "--on-error", help="When the classifier fails: block (fail closed) or allow."
)
PresetOpt = typer.Option(
    PresetChoice.balanced,
    "--preset",
    help="Threshold of categories given none: strict 0.35, balanced 0.5, lenient 0.65.",
)
WindowOpt = typer.Option(
    None, "--window", min=1, max=512, help="Check output every N tokens (the stream-cut bound)."
)


def _current(url: str, api_key: str | None, name: str) -> dict[str, Any]:
    view = _call(url, api_key, "GET", f"/admin/api/deployments/{name}")
    return dict(view.get("safety") or {})


def _category(name: str) -> str:
    from alize.safety.policy import RULE_CATEGORIES  # lazily (cli/settings.py says why)

    if name not in RULE_CATEGORIES:
        _fail(f"unknown category '{name}'; known: {', '.join(RULE_CATEGORIES)} (PII: use --pii)")
    return name


def _rules(
    block: list[str], annotate: list[str], off: list[str], thresholds: list[str]
) -> dict[str, dict[str, Any]]:
    rules: dict[str, dict[str, Any]] = {}
    for action, names in (("block", block), ("annotate", annotate), ("off", off)):
        for name in names:
            rules.setdefault(_category(name), {})["action"] = action
    for item in thresholds:
        name, sep, value = item.partition("=")
        try:
            threshold = float(value)
        except ValueError:
            threshold = -1.0
        if not sep or not 0.0 <= threshold <= 1.0:
            _fail(f"--threshold takes CATEGORY=VALUE with VALUE in [0, 1], not '{item}'")
        rules.setdefault(_category(name), {})["threshold"] = threshold
    return rules


@safety_app.command("show")
def show(
    name: str = DeploymentArg,
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Show a deployment's content filters, with the defaults filled in."""
    stored = _current(url, api_key, name)
    if as_json:
        _echo_json(stored or None)
        return
    from alize.safety.policy import RULE_CATEGORIES, SafetyPolicy

    policy = SafetyPolicy.model_validate(stored)
    typer.echo(f"{name}: output checked every {policy.window_tokens} tokens")
    for label, direction in (("input", policy.input), ("output", policy.output)):
        if direction is None:
            typer.echo(f"  {label}: not filtered")
            continue
        settings = f"preset={direction.preset}, pii={direction.pii}"
        typer.echo(f"  {label}: {settings}, on classifier error: {direction.on_error}")
        for category in RULE_CATEGORIES:
            rule = direction.rule(category)
            typer.echo(f"    {category:32} {rule.action:9} at {rule.threshold:.2f}")


@safety_app.command("set")
def set_policy(
    name: str = DeploymentArg,
    direction: Direction = DirectionArg,
    block: list[str] = BlockOpt,
    annotate: list[str] = AnnotateOpt,
    off: list[str] = OffOpt,
    threshold: list[str] = ThresholdOpt,
    pii: PiiChoice = PiiOpt,
    on_error: OnErrorChoice = OnErrorOpt,
    preset: PresetChoice = PresetOpt,
    window: int | None = WindowOpt,
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
) -> None:
    """Write the input and/or output filter of a deployment."""
    safety = _current(url, api_key, name)
    rule_set = {
        "categories": _rules(block, annotate, off, threshold),
        "pii": pii.value,
        "on_error": on_error.value,
        "preset": preset.value,
    }
    for key in ("input", "output") if direction == Direction.both else (direction.value,):
        safety[key] = rule_set
    if window is not None:
        safety["window_tokens"] = window
    _call(url, api_key, "PATCH", f"/admin/api/deployments/{name}", {"safety": safety})
    typer.echo(f"{name}: {direction.value} filter set")


@safety_app.command("off")
def turn_off(
    name: str = DeploymentArg,
    direction: Direction = DirectionOffArg,
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
) -> None:
    """Remove a deployment's input and/or output filter."""
    safety = _current(url, api_key, name)
    for key in ("input", "output") if direction == Direction.both else (direction.value,):
        safety[key] = None
    body = None if safety.get("input") is None and safety.get("output") is None else safety
    _call(url, api_key, "PATCH", f"/admin/api/deployments/{name}", {"safety": body})
    typer.echo(f"{name}: {direction.value} filter off")
