"""Run a command (``make test`` runs the suite) with the PostgreSQL and Redis the tests need.

Usage: ``python scripts/test_services.py [--] COMMAND [ARG...]``

The storage, rate-limit and tenancy tests talk to a real PostgreSQL and a real Redis, found through
``ALIZE_TEST_POSTGRES_URL`` and ``ALIZE_TEST_REDIS_URL`` (defaults in ``alize.store.testing``).
When those answer (CI machines run both as services) they are used as they are and nothing is
started, so CI time does not change. When one does not, this script starts a throw-away server for
the run: installed from Debian's ``postgresql`` / ``redis-server`` packages if missing (as
``install-test-tools.sh`` does for Chromium), its own data directory under ``build/test-services``,
loopback only, a free port chosen now, trust auth for the test user, no durability; it points the
command at it through the same two settings and stops it and removes its directory afterwards,
whether the command passed, failed or was interrupted (SIGINT, SIGTERM, SIGHUP). If this script is
itself killed with SIGKILL the kernel stops the servers (``PR_SET_PDEATHSIG``) and the next run
removes the directories that are left.

PostgreSQL refuses to run as root, so under root its server runs as the Debian ``postgres`` user.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import psycopg
import redis
from sqlalchemy.engine import make_url

from alize.store.testing import postgres_test_url, redis_test_url, services_required

ROOT = Path(__file__).resolve().parents[1]
BUILD = ROOT / "build" / "test-services"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 15.0
PACKAGES = {"PostgreSQL": "postgresql", "Redis": "redis-server"}
SETTINGS = {"PostgreSQL": "ALIZE_TEST_POSTGRES_URL", "Redis": "ALIZE_TEST_REDIS_URL"}
WHAT_TO_INSTALL = {
    "PostgreSQL": "the PostgreSQL server >= 15 (initdb and postgres; e.g. `dnf install postgresql-server`, "
    "`brew install postgresql@15`)",
    "Redis": "redis-server >= 7 (e.g. `dnf install redis`, `brew install redis`)",
}


class ServicesError(RuntimeError):
    """A throw-away server could not be provided; the message says what to do."""


def say(message: str) -> None:
    print(f"test services: {message}", flush=True)


@dataclass
class Started:
    """A throw-away server this run owns: stopped with ``stop_signal``, then its directory removed."""

    name: str
    url: str
    process: subprocess.Popen[bytes]
    directory: Path
    stop_signal: signal.Signals


def postgres_error(url: str) -> str | None:
    """Why the PostgreSQL at this SQLAlchemy URL does not answer ``SELECT 1``, or None if it does."""
    conninfo = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        with psycopg.connect(conninfo, connect_timeout=3) as connection:
            connection.execute("SELECT 1")
    except psycopg.Error as exc:
        return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return None


def redis_error(url: str) -> str | None:
    """Why the Redis at this URL does not answer PING, or None if it does."""
    try:
        with redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2) as client:
            client.ping()
    except (OSError, redis.RedisError) as exc:
        return str(exc) or type(exc).__name__
    return None


def free_port() -> int:
    """A loopback port nobody listens on now (the server binds it a moment later; a lost race is
    retried by the caller)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def postgres_bindir(roots: Sequence[Path] = (Path("/usr/lib/postgresql"),)) -> Path | None:
    """Where ``initdb`` and ``postgres`` are: Debian keeps them off PATH, one folder per major."""
    found = [
        bindir
        for root in roots
        for bindir in root.glob("*/bin")
        if (bindir / "initdb").is_file() and (bindir / "postgres").is_file()
    ]
    if found:
        return max(found, key=lambda b: int(b.parent.name) if b.parent.name.isdigit() else 0)
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb and shutil.which("postgres") else None


def install(names: Sequence[str], apt_get: str | None = None) -> None:
    """Install the Debian packages for these services, or say what to install elsewhere."""
    apt_get = apt_get or shutil.which("apt-get")
    if apt_get is None:
        urls = {"PostgreSQL": postgres_test_url(), "Redis": redis_test_url()}
        where = ", ".join(f"{name} at {SETTINGS[name]}={urls[name]}" for name in names)
        what = " and ".join(WHAT_TO_INSTALL[name] for name in names)
        raise ServicesError(
            f"make test needs {' and '.join(names)}: none answers ({where}), and this is not a Debian "
            f"machine, where apt-get would install them. Install {what}, or point the setting at a "
            "running server."
        )
    packages = [PACKAGES[name] for name in names]
    say(f"installing Debian packages {' '.join(packages)}")
    sudo = [] if os.geteuid() == 0 else ["sudo"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for command in ([apt_get, "update", "-qq"], [apt_get, "install", "-y", "-qq", *packages]):
        if subprocess.run([*sudo, *command], env=env, stdout=subprocess.DEVNULL).returncode:
            raise ServicesError(f"`{' '.join(command)}` failed; install {' '.join(packages)} by hand")


def _as_user(user: str | None) -> dict[str, object]:
    """Popen arguments that drop to ``user`` (its own group only), or nothing."""
    if user is None:
        return {}
    return {"user": user, "group": pwd.getpwnam(user).pw_gid, "extra_groups": []}


def _spawn(
    command: list[str], log: Path, user: str | None, death_signal: signal.Signals
) -> subprocess.Popen[bytes]:
    """Start a server in its own session (a terminal's Ctrl-C goes to the tests, and this script
    stops the server only once they are done), as ``user`` when given. On Linux the server gets
    ``death_signal`` if this script dies without cleaning up (set after the user switch, which
    would clear it)."""

    def die_with_parent() -> None:
        with contextlib.suppress(OSError, AttributeError):
            ctypes.CDLL(None, use_errno=True).prctl(1, int(death_signal))  # PR_SET_PDEATHSIG

    with log.open("ab") as out:
        return subprocess.Popen(  # type: ignore[call-overload, no-any-return]
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent if sys.platform == "linux" else None,
            **_as_user(user),
        )


def _run_as(command: list[str], user: str | None, log: Path) -> None:
    with log.open("ab") as out:
        done = subprocess.run(  # type: ignore[call-overload]
            command,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            timeout=120,
            **_as_user(user),
        )
    if done.returncode:
        raise ServicesError(f"`{' '.join(command)}` failed:\n{log.read_text(errors='replace')[-2000:]}")


def _wait_ready(process: subprocess.Popen[bytes], log: Path, check: Callable[[], str | None]) -> bool:
    """True once ``check`` passes; False if the server exited (e.g. it lost the port race)."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        if check() is None:
            return True
        time.sleep(0.1)
    raise ServicesError(
        f"not ready after {START_TIMEOUT_S:.0f} s:\n{log.read_text(errors='replace')[-2000:]}"
    )


def _run_directory(parent: Path, name: str, user: str | None) -> Path:
    """A fresh directory for one server. A server run as another user needs to reach it; where it
    cannot (a checkout under /root), the directory goes under the system temp folder instead, and a
    pointer in the build folder lets a later run remove it if this one is killed."""
    directory = parent / name
    directory.mkdir(parents=True)
    if user is None:
        return directory
    owner = pwd.getpwnam(user)
    os.chown(directory, owner.pw_uid, owner.pw_gid)
    if subprocess.run(["test", "-w", str(directory)], **_as_user(user)).returncode == 0:  # type: ignore[call-overload]
        return directory
    directory.rmdir()
    elsewhere = Path(tempfile.mkdtemp(prefix=f"alize-test-{name}-"))
    os.chown(elsewhere, owner.pw_uid, owner.pw_gid)
    (parent / f"{name}.elsewhere").write_text(str(elsewhere))
    return elsewhere


def _binaries() -> dict[str, Path | None]:
    """Where each server's programs are: PostgreSQL's bin folder, the redis-server program."""
    redis_server = shutil.which("redis-server")
    return {"PostgreSQL": postgres_bindir(), "Redis": Path(redis_server) if redis_server else None}


def start_postgres(bindir: Path, configured: str, parent: Path) -> Started:
    """initdb + postgres on a free loopback port; the configured user and database, trust auth."""
    url = make_url(configured)
    user = url.username or "postgres"
    database = url.database or "test"
    runner = None
    if os.geteuid() == 0:
        try:
            runner = pwd.getpwnam("postgres").pw_name
        except KeyError as exc:
            raise ServicesError("PostgreSQL refuses to run as root and there is no `postgres` user") from exc
    directory = _run_directory(parent, "postgres", runner)
    data, log = directory / "data", directory / "server.log"
    locale = ["--locale=C.UTF-8"] if sys.platform == "linux" else ["--no-locale"]
    initdb = [str(bindir / "initdb"), "-D", str(data), "-U", user, "-A", "trust", "-E", "UTF8", *locale]
    _run_as([*initdb, "--no-sync"], runner, log)
    for _ in range(3):
        port = free_port()
        local = url.set(host="127.0.0.1", port=port, password=None)
        server = [str(bindir / "postgres"), "-D", str(data), "-p", str(port)]
        server += ["-c", "listen_addresses=127.0.0.1", "-c", "unix_socket_directories="]
        server += ["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"]
        # SIGINT is PostgreSQL's fast shutdown; SIGQUIT (if this script dies) its immediate one.
        process = _spawn(server, log, runner, signal.SIGQUIT)
        started = Started(
            "PostgreSQL", local.render_as_string(hide_password=False), process, directory, signal.SIGINT
        )
        with _stopped_unless_returned(started):
            admin = local.set(database="postgres").render_as_string(hide_password=False)
            if _wait_ready(process, log, functools.partial(postgres_error, admin)):
                conninfo = make_url(admin).set(drivername="postgresql").render_as_string(hide_password=False)
                with psycopg.connect(conninfo, autocommit=True) as connection:
                    if database != "postgres":
                        quoted = database.replace('"', '""')
                        connection.execute(f'CREATE DATABASE "{quoted}"')
                return started
    raise ServicesError(f"PostgreSQL did not start:\n{log.read_text(errors='replace')[-2000:]}")


def start_redis(binary: Path, configured: str, parent: Path) -> Started:
    """redis-server on a free loopback port, nothing persisted."""
    directory = _run_directory(parent, "redis", None)
    log = directory / "server.log"
    db = urlsplit(configured).path.strip("/") or "0"
    for _ in range(3):
        port = free_port()
        command = [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--dir", str(directory)]
        command += ["--save", "", "--appendonly", "no", "--daemonize", "no"]
        process = _spawn(command, log, None, signal.SIGTERM)
        started = Started("Redis", f"redis://127.0.0.1:{port}/{db}", process, directory, signal.SIGTERM)
        with _stopped_unless_returned(started):
            if _wait_ready(process, log, functools.partial(redis_error, started.url)):
                return started
    raise ServicesError(f"Redis did not start:\n{log.read_text(errors='replace')[-2000:]}")


@contextlib.contextmanager
def _stopped_unless_returned(server: Started) -> Iterator[None]:
    """Stop a server that is not handed to the caller (startup failed, timed out or was interrupted)."""
    try:
        yield
    except BaseException:
        stop(server)
        raise


def stop(server: Started) -> None:
    """Stop the server (its own clean shutdown, SIGKILL after STOP_TIMEOUT_S) and wait for it."""
    if server.process.poll() is None:
        server.process.send_signal(server.stop_signal)
        try:
            server.process.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            server.process.kill()
            server.process.wait()


def remove_run(run: Path) -> None:
    """Remove a run's folder, and the temp folders its pointers name."""
    for pointer in run.glob("*.elsewhere"):
        shutil.rmtree(pointer.read_text().strip(), ignore_errors=True)
    shutil.rmtree(run, ignore_errors=True)


def sweep(build: Path) -> None:
    """Remove what runs killed before their cleanup left (their owner process is gone)."""
    for run in build.glob("run-*"):
        owner = run / "owner.pid"
        with contextlib.suppress(FileNotFoundError, ValueError):
            pid = int(owner.read_text())
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                remove_run(run)


@contextlib.contextmanager
def provided_services(build: Path | None = None) -> Iterator[dict[str, str]]:
    """The environment the tests need: the configured servers if they answer, else throw-away
    ones, stopped and removed on exit."""
    build = build or BUILD
    urls = {"PostgreSQL": postgres_test_url(), "Redis": redis_test_url()}
    errors = {"PostgreSQL": postgres_error(urls["PostgreSQL"]), "Redis": redis_error(urls["Redis"])}
    for name, error in errors.items():
        if error is None:
            say(f"{name} at {urls[name]} answers; using it")
    missing = [name for name, error in errors.items() if error is not None]
    started: list[Started] = []
    run = build / f"run-{os.getpid()}-{secrets.token_hex(3)}"
    made = [folder for folder in (build, build.parent) if not folder.exists()]  # build first
    sweep(build)
    try:
        if missing:
            run.mkdir(parents=True)
            run.chmod(0o755)
            (run / "owner.pid").write_text(str(os.getpid()))
            absent = [name for name, found in _binaries().items() if name in missing and found is None]
            if absent:
                install(absent)
            binaries = _binaries()
            for name in missing:
                say(f"{name} does not answer at {urls[name]} ({errors[name]}); starting a throw-away one")
                found = binaries[name]
                if found is None:
                    raise ServicesError(f"{PACKAGES[name]} was installed but its server is not found")
                start = start_postgres if name == "PostgreSQL" else start_redis
                server = start(found, urls[name], run)
                started.append(server)
                urls[name] = server.url
                say(f"started {name} at {server.url} (pid {server.process.pid}, data in {server.directory})")
        yield {"ALIZE_TEST_POSTGRES_URL": urls["PostgreSQL"], "ALIZE_TEST_REDIS_URL": urls["Redis"]}
    finally:
        for server in reversed(started):
            stop(server)
        if missing:
            remove_run(run)
        for folder in [build, *made[1:]]:  # ours, and the build folder if this run made it; if empty
            with contextlib.suppress(OSError):
                folder.rmdir()
        if started:
            names = " and ".join(f"{s.name} (pid {s.process.pid})" for s in started)
            say(f"stopped {names}; removed {run}")


def run_command(command: list[str], env: dict[str, str]) -> int:
    """Run the tests as a child and return its exit status. SIGINT is passed on, unless a terminal
    sent it to the whole foreground group (the tests have it then, and finish their own way);
    SIGTERM/SIGHUP unwind this script, which terminates the tests before stopping the servers."""
    child = subprocess.Popen(command, env={**os.environ, **env})

    def forward(signum: int, _frame: FrameType | None) -> None:
        if not _terminal_sent_it():
            with contextlib.suppress(ProcessLookupError):
                child.send_signal(signum)

    try:
        signal.signal(signal.SIGINT, forward)
        code = child.wait()
    finally:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)  # the cleanup that follows must not be cut short
        if child.poll() is None:  # only if this script is unwinding: the tests must not outlive it
            child.terminate()
            try:
                child.wait(STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return 128 - code if code < 0 else code


def _terminal_sent_it() -> bool:
    try:
        return os.tcgetpgrp(sys.stdin.fileno()) == os.getpgrp()
    except (OSError, ValueError):
        return False


def _raise_exit(signum: int, _frame: FrameType | None) -> None:
    raise SystemExit(128 + signum)


def main(argv: list[str]) -> int:
    command = argv[1:] if argv[:1] == ["--"] else argv
    if not command:
        print(__doc__, file=sys.stderr)
        return 2
    handled = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
    previous = {signum: signal.getsignal(signum) for signum in handled}
    for signum in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, _raise_exit)  # unwind, so that the finally clauses stop everything
    try:
        with provided_services() as env:
            return run_command(command, env)
    except KeyboardInterrupt:
        return 130
    except ServicesError as exc:
        say(str(exc))
        if services_required():
            return 2
        say("running the tests anyway; those that need the missing service are skipped")
        return run_command(command, {})
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
