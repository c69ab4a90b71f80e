"""The sandbox runs generated code with limits: passes, failures, timeouts, memory, no network."""

from __future__ import annotations

import time

from alize.cli.sandbox import network_namespace_available, run_python


def test_pass_and_fail() -> None:
    assert run_python("assert 1 + 1 == 2\n").passed
    failed = run_python("assert 1 + 1 == 3, 'arithmetic'\n")
    assert failed.status == "failed" and "AssertionError" in failed.detail


def test_an_endless_loop_is_killed_at_the_timeout() -> None:
    started = time.monotonic()
    outcome = run_python("while True:\n    pass\n", timeout_s=1.0)
    assert outcome.status == "timeout" and time.monotonic() - started < 5


def test_memory_is_capped() -> None:
    outcome = run_python("x = bytearray(2 << 30)\n", memory_bytes=256 << 20)
    assert outcome.status == "failed" and "MemoryError" in outcome.detail


def test_no_environment_and_no_network() -> None:
    assert run_python(
        "import os\nassert 'HOME' not in os.environ and 'PYTHONPATH' not in os.environ\n"
    ).passed
    probe = (
        "import socket\n"
        "s = socket.socket()\n"
        "s.settimeout(2)\n"
        "try:\n"
        "    s.connect(('127.0.0.1', 5432))\n"
        "except OSError:\n"
        "    raise SystemExit(0)\n"
        "raise SystemExit(1)\n"
    )
    outcome = run_python(probe)
    if network_namespace_available():  # PostgreSQL listens there, yet the sandbox cannot reach it
        assert outcome.passed and outcome.network_isolated
