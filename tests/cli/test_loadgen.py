"""The load generator's arithmetic: prompts, SLO parsing, goodput and the report's statistics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from alize.cli.loadgen import Result, load_prompts, meets, parse_goodput, summarize


def test_prompt_sets() -> None:
    builtin = load_prompts("builtin", 10, output_len=7)
    assert len(builtin) == 10 and all(p.max_tokens == 7 for p in builtin)
    assert builtin[0].messages == builtin[8].messages  # cycled
    rand = load_prompts("random", 3, output_len=5, input_len=40, seed=1)
    assert all(len(p.messages[0]["content"].split()) == 40 for p in rand)
    assert rand == load_prompts("random", 3, output_len=5, input_len=40, seed=1)  # seeded


def test_jsonl_prompts(tmp_path: Path) -> None:
    path = tmp_path / "p.jsonl"
    lines = [{"prompt": "hello", "max_tokens": 3}, {"messages": [{"role": "user", "content": "hi"}]}]
    path.write_text("\n".join(json.dumps(x) for x in lines) + "\n\n")
    prompts = load_prompts(str(path), 3, output_len=9)
    assert [p.max_tokens for p in prompts] == [3, 9, 3]
    assert prompts[0].messages == [{"role": "user", "content": "hello"}]
    path.write_text('{"text": "x"}\n')
    with pytest.raises(ValueError, match="needs 'prompt' or 'messages'"):
        load_prompts(str(path), 1, output_len=1)


def test_goodput_slos() -> None:
    assert parse_goodput(["ttft:500", "tpot:50"]) == {"ttft": 0.5, "tpot": 0.05}
    with pytest.raises(ValueError):
        parse_goodput(["latency:5"])
    fast = Result(ok=True, ttft_s=0.1, e2el_s=1.0, output_tokens=11)  # tpot 90 ms
    assert meets(fast, {"ttft": 0.2}) and not meets(fast, {"tpot": 0.05})
    assert not meets(Result(ok=False), {"ttft": 1.0})


def test_report_statistics() -> None:
    results = [
        Result(ok=True, ttft_s=0.1, e2el_s=1.1, prompt_tokens=10, output_tokens=11, itl_s=[0.1] * 10),
        Result(ok=True, ttft_s=0.3, e2el_s=2.3, prompt_tokens=10, output_tokens=21, itl_s=[0.1] * 20),
        Result(ok=False, error="HTTP 503"),
    ]
    report = summarize(2.0, results, {"ttft": 0.2})
    assert (report["completed"], report["failed"], report["errors"]) == (2, 1, ["HTTP 503"])
    assert report["output_tokens"] == 32 and report["output_throughput"] == 16.0
    assert report["request_throughput"] == 1.0
    assert report["ttft_ms"]["p50"] == 200.0 and report["ttft_ms"]["mean"] == 200.0
    assert report["tpot_ms"]["mean"] == 100.0
    assert report["itl_ms"]["p99"] == 100.0
    assert report["goodput"]["good_requests"] == 1 and report["goodput"]["requests_per_s"] == 0.5
