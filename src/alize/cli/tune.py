"""``alize models tune MODEL``: measure, on this machine, the llama.cpp settings and the weight
format a model runs fastest with, and store the result on its card.

The measuring happens here, in the CLI's process, on workers it starts itself (the server is left
to serve; run the command on the server's machine, which is what "this machine" means). The model
file comes from the card the server holds (``GET /admin/api/models/{id}``); requantised variants
are written under ``<data_dir>/variants`` (the same ``ALIZE_DATA_DIR`` the server reads), and the
result is posted to ``POST /admin/api/models/{id}/tuning``, which checks a chosen variant file
in its sandboxed inspector before any deployment loads it. ``--no-record`` only prints.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from alize.cli.models import JsonOpt, KeyOpt, UrlOpt, _call, _echo_json, _fail
from alize.cli.settings import load_settings
from alize.errors import AlizeError

if TYPE_CHECKING:  # imported when the command runs (cli/settings.py says why)
    from alize.catalog.cards import ModelCard
    from alize.catalog.tuning import Tuning

OutputOpt = typer.Option(None, "--output", help="Also write the result here (JSON).")


def _card(url: str, api_key: str | None, model_id: str) -> ModelCard:
    from alize.catalog.cards import ModelCard

    data: dict[str, Any] = _call(url, api_key, "GET", f"/admin/api/models/{model_id}")
    data = {k: v for k, v in data.items() if k not in ("engine", "deployments")}
    return ModelCard.model_validate(data)


def summary_lines(model_id: str, tuning: Tuning) -> list[str]:
    """What the command prints: settings, each trial, each variant, the bandwidth bound."""
    s = tuning.settings
    base = tuning.baseline_decode_tokens_per_second
    lines = [
        f"{model_id} tuned on {tuning.machine} in {tuning.duration_s:.0f} s:",
        f"  settings   threads {s.threads}, batch {s.batch_size}, flash attention {s.flash_attn}, "
        f"KV {s.kv_cache_type}, weights {tuning.variant_format or 'packaged'}"
        + (f", recommended slots {s.recommended_parallel}" if s.recommended_parallel else ""),
        f"  decode     {tuning.decode_tokens_per_second:,.1f} tok/s (defaults: {base:,.1f} tok/s"
        + (f", {tuning.decode_tokens_per_second / base:.2f}x)" if base else ")"),
        f"  prefill    {tuning.prefill_tokens_per_second:,.1f} tok/s",
    ]
    if tuning.cold_start_s is not None:
        lines.append(f"  start      {tuning.cold_start_s:.2f} s (a worker with the tuned settings)")
    if tuning.bandwidth is not None:
        b = tuning.bandwidth
        lines.append(
            f"  bound      {b.bound_tokens_per_second:,.1f} tok/s = {b.memory_bandwidth_gb_s:.1f} GB/s "
            f"(measured copy) / {b.bytes_per_token / 1e6:,.1f} MB per token; decode is "
            f"{b.fraction_of_bound:.0%} of it"
        )
    lines.append("  trials:")
    for t in tuning.trials:
        extra = (
            f", {t.throughput_tokens_per_second:,.1f} tok/s total" if t.throughput_tokens_per_second else ""
        )
        ppl = f", perplexity {t.perplexity:.3f}" if t.perplexity else ""
        lines.append(
            f"    {'*' if t.kept else ' '} {t.setting}={t.value}: decode {t.decode_tokens_per_second:,.1f}, "
            f"prefill {t.prefill_tokens_per_second:,.1f} tok/s{extra}{ppl} {t.note}".rstrip()
        )
    lines.append(
        f"  variants (perplexity over {tuning.perplexity_tokens} tokens of {tuning.perplexity_text}):"
    )
    for v in tuning.variants:
        lines.append(
            f"    {'*' if v.kept else ' '} {v.format:8} {v.size_bytes / 1e6:7,.1f} MB  decode "
            f"{v.decode_tokens_per_second:,.1f} tok/s  perplexity {v.perplexity:.3f} "
            f"({v.perplexity_change:+.2%})  {v.note}"
        )
    return lines


def tune(
    model_id: str = typer.Argument(help="Catalog model id (a llama.cpp model)."),
    runs: int = typer.Option(3, min=1, max=10, help="Measured runs per setting (median), after a warm-up."),
    variants: bool = typer.Option(True, "--variants/--no-variants", help="Try requantised weight formats."),
    slots: bool = typer.Option(True, "--slots/--no-slots", help="Measure throughput at 1-8 streams."),
    record: bool = typer.Option(True, "--record/--no-record", help="Store the result on the card."),
    output: Path | None = OutputOpt,
    url: str = UrlOpt,
    api_key: str | None = KeyOpt,
    as_json: bool = JsonOpt,
) -> None:
    """Measure threads, batch size, flash attention, KV cache type, slots and weight formats on
    this machine; keep what is faster with its quality held (perplexity within 1 %)."""
    import xllamacpp

    from alize.deployments.tuning import TunePlan, Tuner

    card = _card(url, api_key, model_id)
    if card.engine != "llamacpp":
        _fail(f"'{model_id}' runs on the {card.engine} engine; only llama.cpp models are tuned")
    from alize.catalog.sources import resolve_path

    settings = load_settings()
    try:
        path = resolve_path(card.source)
    except AlizeError as exc:
        _fail(exc.message)
    defaults = settings.engine
    from alize.engines.base import EngineConfig

    plan = TunePlan(
        runs=runs,
        variants=variants,
        slots=slots,
        defaults=EngineConfig(kind="llamacpp", threads=defaults.threads, batch_size=defaults.batch_size),
        start_parallel=defaults.quick_start_slots or defaults.parallel,
        start_ctx_per_slot=min(defaults.ctx_per_slot, card.context_length),
    )
    with typer.progressbar(length=1, label="tuning", item_show_func=lambda item: item, file=None) as bar:
        shown = 0

        def progress(what: str, done: int, total: int) -> None:
            nonlocal shown
            bar.length = total
            bar.current_item = what
            bar.update(done - shown)
            shown = done

        tuner = Tuner(
            model_id,
            path,
            plan,
            variants_dir=settings.data_dir / "variants",
            engine_features=str(xllamacpp.get_system_info()),
            progress=progress,
        )
        try:
            tuning = asyncio.run(tuner.run())
        except AlizeError as exc:
            _fail(exc.message)
    if output is not None:
        output.write_text(json.dumps(tuning.model_dump(mode="json"), indent=2) + "\n")
    if record:
        _call(url, api_key, "POST", f"/admin/api/models/{model_id}/tuning", tuning.model_dump(mode="json"))
    if as_json:
        _echo_json(tuning.model_dump(mode="json"))
        return
    for line in summary_lines(model_id, tuning):
        typer.echo(line)
    typer.echo("stored on the card; deployments use it from their next load" if record else "not recorded")
