"""The engine benchmark's report: the JSON written as it goes, the Markdown tables and the plot
(``bench/engine.py --render-only`` redraws them from a JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from engine_systems import COLORS, LABELS, PHASES, SYSTEMS


def write_json(report: dict[str, Any], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")


def _case(report: dict[str, Any], key: str, n: int, phase: str) -> dict[str, Any] | None:
    case = report["systems"].get(key, {}).get("results", {}).get(str(n), {}).get(phase)
    return dict(case) if case else None


def _flag(case: dict[str, Any]) -> str:
    return "*" if case.get("errors") or case.get("short_requests") else ""


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}×" if a is not None and b else "—"


def markdown(report: dict[str, Any]) -> str:
    systems = [k for k in SYSTEMS if k in report["systems"]]
    cfg = report["config"]
    m = report["machine"]
    v = report.get("versions", {})
    levels = cfg["concurrency"]
    lines = [
        f"Model {cfg['model']}, {cfg['max_tokens']} output tokens per request, {cfg['threads']} threads, "
        f"{cfg['parallel']} slots, {cfg['rounds']} request(s) per client per batch. "
        f"{m['cpu_model']}, {m['nproc']} CPUs, load average at start {m.get('loadavg_at_start')}; "
        f"{report['date']}.",
        f"Versions: xllamacpp {v.get('xllamacpp')}, llama-cpp-python {v.get('llama-cpp-python')}, "
        f"alize {v.get('alize')}.",
        f"Alizé served with: {cfg.get('alize_policies', 'not recorded (before 2026-12-01)')}.",
        (
            f"Arrivals: each client waits a seeded random 0-{cfg['think_ms']:g} ms before each request "
            "(the same waits for every system)."
            if cfg.get("think_ms")
            else "Arrivals: lockstep (each client's next request leaves the moment its previous one ends)."
        ),
        "",
        "**Aggregate output tokens/s** (higher is better)",
        "",
    ]
    head = ["Concurrency", "Prompt", *(LABELS[k] for k in systems)]
    has_ratio_inproc = "alize" in systems and "xllamacpp" in systems
    has_ratio_llcpp = "alize" in systems and "llama-cpp-python" in systems
    if has_ratio_inproc:
        head.append("Alizé / in-process")
    if has_ratio_llcpp:
        head.append("Alizé / llama-cpp-python")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in levels:
        for phase in PHASES:
            row = [str(n), phase]
            tps: dict[str, float | None] = {}
            for k in systems:
                c = _case(report, k, n, phase)
                tps[k] = c["tokens_per_s"] if c else None
                ok = c is not None and c["tokens_per_s"] is not None
                row.append(f"{c['tokens_per_s']:.1f}{_flag(c)}" if c and ok else "—")
            if has_ratio_inproc:
                row.append(_ratio(tps["alize"], tps["xllamacpp"]))
            if has_ratio_llcpp:
                row.append(_ratio(tps["alize"], tps["llama-cpp-python"]))
            lines.append("| " + " | ".join(row) + " |")
    lines += ["", "**Time to first token, p50 / p99 in ms** (lower is better)", ""]
    head = ["Concurrency", "Prompt", *(LABELS[k] for k in systems)]
    if has_ratio_inproc:
        head.append("Alizé / in-process (p50)")
    if has_ratio_llcpp:
        head.append("Alizé / llama-cpp-python (p50)")
    lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in levels:
        for phase in PHASES:
            row = [str(n), phase]
            p50: dict[str, float | None] = {}
            for k in systems:
                c = _case(report, k, n, phase)
                p50[k] = c["ttft_p50_ms"] if c else None
                if c and c["ttft_p50_ms"] is not None:
                    row.append(f"{c['ttft_p50_ms']:.0f} / {c['ttft_p99_ms']:.0f}{_flag(c)}")
                else:
                    row.append("—")
            if has_ratio_inproc:
                row.append(_ratio(p50["alize"], p50["xllamacpp"]))
            if has_ratio_llcpp:
                row.append(_ratio(p50["alize"], p50["llama-cpp-python"]))
            lines.append("| " + " | ".join(row) + " |")
    lines += _cpu_table(report, systems, levels)
    notes = ["", "\\* errors or requests shorter than max_tokens in this cell; see the JSON."]
    for k in systems:
        s = report["systems"][k]
        if s.get("failed"):
            notes.append(f"- {LABELS[k]}: failed: {s['failed']}")
        eos = s.get("info", {}).get("eos_mode")
        if eos and eos != "ignore_eos":
            notes.append(f"- {LABELS[k]}: output length forced with `{eos}`.")
    if "llama-cpp-python" in systems:
        notes.append(
            "- llama-cpp-python's server decodes one sequence at a time; concurrent requests wait in turn."
        )
    return "\n".join(lines + notes) + "\n"


def _cpu_table(report: dict[str, Any], systems: list[str], levels: list[int]) -> list[str]:
    """CPU ms per output token of each process part, for the systems that measure it."""

    def cpu(key: str, n: int, phase: str) -> dict[str, float]:
        return (_case(report, key, n, phase) or {}).get("cpu_ms_per_token") or {}

    parts = [
        (k, part)
        for k in systems
        for part in ("gateway", "engine")
        if any(part in cpu(k, n, ph) for n in levels for ph in PHASES)
    ]
    if not parts:
        return []
    head = ["Concurrency", "Prompt", *(f"{LABELS[k]}: {part}" for k, part in parts)]
    lines = [
        "",
        "**CPU per output token, ms** (user + system of the server's process and of the engine's)",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for n in levels:
        for phase in PHASES:
            row = [str(n), phase]
            for k, part in parts:
                value = cpu(k, n, phase).get(part)
                row.append("—" if value is None else f"{value:.2f}")
            lines.append("| " + " | ".join(row) + " |")
    return lines


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = report["config"]["concurrency"]
    fig, (ax_tps, ax_ttft) = plt.subplots(1, 2, figsize=(12, 4.8))
    for key in SYSTEMS:
        if key not in report["systems"]:
            continue
        for phase, style in (("cold", "-"), ("warm", "--")):
            xs, tps, ttft = [], [], []
            for n in levels:
                c = _case(report, key, n, phase)
                if c and c["tokens_per_s"] is not None:
                    xs.append(n)
                    tps.append(c["tokens_per_s"])
                    ttft.append(c["ttft_p50_ms"])
            if not xs:
                continue
            label = f"{LABELS[key]}, {phase}"
            ax_tps.plot(xs, tps, style, marker="o", color=COLORS[key], label=label)
            ax_ttft.plot(xs, ttft, style, marker="o", color=COLORS[key], label=label)
    for ax in (ax_tps, ax_ttft):
        ax.set_xscale("log", base=2)
        ax.set_xticks(levels, [str(n) for n in levels])
        ax.set_xlabel("concurrent requests")
        ax.grid(True, alpha=0.3)
    ax_tps.set_ylabel("aggregate output tokens/s")
    ax_tps.set_title("Throughput")
    ax_ttft.set_ylabel("TTFT p50 (ms)")
    ax_ttft.set_yscale("log")
    ax_ttft.set_title("Time to first token (p50)")
    ax_tps.legend(fontsize=8)
    cfg = report["config"]
    fig.suptitle(
        f"{cfg['model']}, {cfg['max_tokens']} tokens/request, {cfg['threads']} threads, "
        f"{report['machine']['cpu_model']} ({report['date'][:10]})",
        fontsize=10,
    )
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
