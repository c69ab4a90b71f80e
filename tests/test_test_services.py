"""scripts/test_services.py, what ``make test`` runs the suite under: it uses the PostgreSQL and
Redis that answer at the configured URLs, or starts throw-away ones, points the tests at them and
leaves nothing behind, even when the run is interrupted."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis
from scripts import test_services as services

from alize.store.testing import postgres_test_url, redis_test_url, require_postgres, services_required

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "scripts" / "test_services.py"

# The "tests" the wrapper runs here: connect to both servers through the settings, report, wait.
_CHILD = textwrap.dedent(
    """
    import json, os, sys, time
    import psycopg, redis
    from sqlalchemy.engine import make_url
    pg = make_url(os.environ["ALIZE_TEST_POSTGRES_URL"]).set(drivername="postgresql")
    with psycopg.connect(pg.render_as_string(hide_password=False)) as connection:
        row = connection.execute("SELECT current_database(), inet_server_port()").fetchone()
    with redis.Redis.from_url(os.environ["ALIZE_TEST_REDIS_URL"]) as client:
        client.set("alize-test:bringup", "ok")
        value = client.get("alize-test:bringup").decode()
    report = {"database": row[0], "port": row[1], "redis": value, "env": dict(os.environ), "pid": os.getpid()}
    open(sys.argv[1], "w").write(json.dumps(report))
    time.sleep(float(sys.argv[2]))
    sys.exit(int(sys.argv[3]))
    """
)


def _unused_port() -> int:
    port = services.free_port()
    with socket.socket() as probe:
        assert probe.connect_ex(("127.0.0.1", port)) != 0
    return port


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/status").read_text().find("State:\tZ") < 0 if sys.platform == "linux" else True


def _interruptible() -> None:
    """In the wrapper's process before it starts: SIGINT and SIGQUIT at their defaults, as at a
    terminal. A suite started in the background by a non-interactive shell (`make test &`, a CI
    step run with `&`) inherits both ignored, and so would the wrapper's child: it would sleep
    through the forwarded SIGINT, and this test would read that as the wrapper's fault."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    signal.signal(signal.SIGQUIT, signal.SIG_DFL)


@pytest.mark.bringup
@pytest.mark.parametrize("interrupt", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_starts_throwaway_servers_when_none_answer_and_removes_them_when_interrupted(
    tmp_path: Path, interrupt: signal.Signals
) -> None:
    if services.postgres_bindir() is None or services.shutil.which("redis-server") is None:
        pytest.skip("no PostgreSQL/Redis binaries here to start throw-away servers from")
    dead_pg, dead_redis = _unused_port(), _unused_port()
    env = {
        **os.environ,
        "ALIZE_TEST_POSTGRES_URL": f"postgresql+psycopg://postgres@127.0.0.1:{dead_pg}/test",
        "ALIZE_TEST_REDIS_URL": f"redis://127.0.0.1:{dead_redis}/0",
        "ALIZE_TEST_REQUIRE_SERVICES": "1",
    }
    report, log = tmp_path / "report.json", tmp_path / "wrapper.log"
    command = [sys.executable, str(SCRIPT), sys.executable, "-c", _CHILD, str(report), "120", "0"]
    with log.open("wb") as out:
        wrapper = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_interruptible
        )
    try:
        deadline = time.monotonic() + 90
        while not report.exists() and wrapper.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert report.exists(), log.read_text()
        time.sleep(0.2)  # the report is written in one call; let it land
        wrapper.send_signal(interrupt)
        assert wrapper.wait(60) == 128 + interrupt, log.read_text()  # the tests died of it too
    finally:
        if wrapper.poll() is None:
            wrapper.kill()
            wrapper.wait()
    output = log.read_text()
    seen = json.loads(report.read_text())
    started = dict(re.findall(r"started (PostgreSQL|Redis) at (\S+) \(pid", output))
    pids = [int(p) for p in re.findall(r"\(pid (\d+), data in", output)]
    dirs = [Path(d) for d in re.findall(r"data in (\S+)\)", output)]
    run = Path(re.findall(r"removed (\S+)$", output, re.MULTILINE)[0])
    assert f"does not answer at {env['ALIZE_TEST_POSTGRES_URL']}" in output
    assert f"does not answer at {env['ALIZE_TEST_REDIS_URL']}" in output
    assert set(started) == {"PostgreSQL", "Redis"} and len(pids) == 2 and len(dirs) == 2, output
    # the tests saw the started servers, through the same two settings, with the configured database
    assert seen["env"]["ALIZE_TEST_POSTGRES_URL"] == started["PostgreSQL"]
    assert seen["env"]["ALIZE_TEST_REDIS_URL"] == started["Redis"]
    assert seen["database"] == "test" and seen["redis"] == "ok"
    assert seen["port"] not in (dead_pg, 5432) and f":{seen['port']}/" in started["PostgreSQL"]
    # and nothing is left: no process, no directory, no listener
    assert not [pid for pid in [*pids, seen["pid"]] if _alive(pid)], output  # servers and tests
    assert not [d for d in [*dirs, run] if d.exists()], output
    for url in started.values():
        port = int(re.findall(r":(\d+)/", url)[0])
        with socket.socket() as probe:
            assert probe.connect_ex(("127.0.0.1", port)) != 0, f"{url} still answers"


def test_uses_the_servers_that_answer_and_passes_the_exit_code_on(tmp_path: Path) -> None:
    asyncio.run(require_postgres())
    try:
        with redis.Redis.from_url(redis_test_url(), socket_connect_timeout=2) as client:
            client.ping()
    except redis.RedisError:
        if services_required():
            raise
        pytest.skip(f"Redis not reachable at {redis_test_url()}")
    report = tmp_path / "report.json"
    command = [sys.executable, str(SCRIPT), "--", sys.executable, "-c", _CHILD, str(report), "0", "3"]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 3, done.stdout + done.stderr
    assert f"PostgreSQL at {postgres_test_url()} answers; using it" in done.stdout
    assert f"Redis at {redis_test_url()} answers; using it" in done.stdout
    assert "start" not in done.stdout
    seen = json.loads(report.read_text())
    assert seen["env"]["ALIZE_TEST_POSTGRES_URL"] == postgres_test_url()
    assert seen["env"]["ALIZE_TEST_REDIS_URL"] == redis_test_url()


def test_without_servers_or_apt_get_it_names_what_to_install(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv(
        "ALIZE_TEST_POSTGRES_URL", f"postgresql+psycopg://postgres@127.0.0.1:{_unused_port()}/t"
    )
    monkeypatch.setenv("ALIZE_TEST_REDIS_URL", f"redis://127.0.0.1:{_unused_port()}/0")
    monkeypatch.setattr(services, "postgres_bindir", lambda: None)
    monkeypatch.setattr(services.shutil, "which", lambda name: None)
    monkeypatch.setattr(services, "BUILD", tmp_path / "build")
    ran = tmp_path / "ran"
    command = [sys.executable, "-c", f"open({str(ran)!r}, 'w')"]

    monkeypatch.setenv("ALIZE_TEST_REQUIRE_SERVICES", "1")
    assert services.main(command) == 2
    out = capsys.readouterr().out
    assert "make test needs PostgreSQL and Redis" in out and "not a Debian machine" in out
    assert "postgresql-server" in out and "redis-server >= 7" in out
    assert not ran.exists(), "required services are missing: the tests must not run"
    assert not list((tmp_path / "build").glob("run-*"))

    monkeypatch.setenv("ALIZE_TEST_REQUIRE_SERVICES", "0")
    assert services.main(command) == 0
    assert ran.exists() and "running the tests anyway" in capsys.readouterr().out
