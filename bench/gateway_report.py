"""bench/gateway.py's summary (added latency, highest sustained requests/s, the targets) and plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

COLORS = {"direct": "tab:gray", "alize": "tab:blue", "alize-shared": "tab:cyan", "litellm": "tab:red"}
#: the issue's targets: at most this many ms added at p50, at least this many times LiteLLM's req/s
TARGET_ADDED_P50_MS = 2.0
TARGET_RATIO = 3.0


def _sustained(rows: list[dict[str, Any]]) -> float | None:
    """The best requests/s over the levels where no request failed."""
    good = [r["requests_per_s"] for r in rows if r["failed"] == 0 and r["ok"] > 0]
    return max(good) if good else None


def _minus(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else round(a - b, 3)


def summarise(report: dict[str, Any]) -> dict[str, Any]:
    systems = report["systems"]
    direct = systems.get("direct", {})
    out: dict[str, Any] = {}
    for name, data in systems.items():
        if "latency" not in data:
            out[name] = {"error": data.get("error")}
            continue
        row: dict[str, Any] = {}
        for mode in ("json", "stream"):
            lat, base = data["latency"][mode], direct.get("latency", {}).get(mode, {})
            row[mode] = {
                "p50_ms": lat["p50_ms"],
                "p99_ms": lat["p99_ms"],
                "added_p50_ms": _minus(lat["p50_ms"], base.get("p50_ms")) if name != "direct" else 0.0,
                "added_p99_ms": _minus(lat["p99_ms"], base.get("p99_ms")) if name != "direct" else 0.0,
                "sustained_requests_per_s": _sustained(data["throughput"][mode]),
                # the server's own CPU per sequential request (its process tree; not the upstream's)
                "server_cpu_ms_per_request": lat.get("server_cpu_ms_per_request"),
            }
        if data.get("ledger_rows") is not None:
            row["ledger_rows"] = data["ledger_rows"]
        out[name] = row
    lite = out.get("litellm", {})
    for name in ("alize", "alize-shared"):
        mine = out.get(name, {})
        if "json" not in mine:
            continue
        for mode in ("json", "stream"):
            theirs = lite.get(mode, {}).get("sustained_requests_per_s") if "json" in lite else None
            ours = mine[mode]["sustained_requests_per_s"]
            ratio = round(ours / theirs, 2) if ours and theirs else None
            mine[mode]["vs_litellm_requests_per_s"] = ratio
            added = mine[mode]["added_p50_ms"]
            mine[mode]["meets_added_p50_target"] = added is not None and added <= TARGET_ADDED_P50_MS
            mine[mode]["meets_ratio_target"] = ratio is not None and ratio >= TARGET_RATIO
    pods = report.get("per_pod_tpm")
    if pods:
        out["per_pod_tpm"] = {
            "tpm_limit": pods["tpm_limit"],
            **{
                name: pods[name].get("tokens_admitted", pods[name].get("error"))
                for name in ("litellm", "alize-shared")
                if name in pods
            },
        }
    return out


def plot(report: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    summary = report["summary"]
    names = [n for n in summary if "json" in summary.get(n, {})]
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    ax_lat, ax_json, ax_stream = axes
    width = 0.2
    for i, name in enumerate(names):
        for j, mode in enumerate(("json", "stream")):
            cell = summary[name][mode]
            x = j + (i - len(names) / 2) * width + width / 2
            ax_lat.bar(
                x,
                cell["p50_ms"] or 0,
                width * 0.9,
                color=COLORS.get(name, "k"),
                label=name if j == 0 else None,
            )
            ax_lat.plot([x], [cell["p99_ms"] or 0], "k_", markersize=12)
    ax_lat.set_xticks([0, 1], ["non-streamed", "streamed"])
    ax_lat.set_ylabel("ms, one client (bar p50, tick p99)")
    ax_lat.set_title("Latency to the last byte")
    ax_lat.legend()
    for ax, mode in ((ax_json, "json"), (ax_stream, "stream")):
        for name in names:
            rows = report["systems"][name]["throughput"][mode]
            xs = [r["clients"] for r in rows]
            ys = [r["requests_per_s"] for r in rows]
            ax.plot(xs, ys, marker="o", color=COLORS.get(name, "k"), label=name)
            for r in rows:
                if r["failed"]:
                    ax.plot([r["clients"]], [r["requests_per_s"]], "x", color="k")
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("concurrent clients")
        ax.set_ylabel("requests/s, log scale (x: some failed)")
        ax.set_title(f"Throughput, {'streamed' if mode == 'stream' else 'non-streamed'}")
        ax.grid(True, alpha=0.3)
        ax.legend()
    machine = report["machine"]
    fig.suptitle(
        f"Gateway overhead, fake upstream on loopback; {machine['cpu_model']}, {machine['nproc']} CPUs"
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
