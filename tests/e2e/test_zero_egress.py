"""Zero egress, proven: the whole platform (serve, a chat on llama.cpp, an embedding on PyTorch,
a moderation) runs without any process opening a connection to a non-loopback address.

Two independent witnesses, over the server and every process it starts:

* an audit hook (``sys.addaudithook``, installed through ``sitecustomize`` in every Python
  process of the tree) records each ``socket.connect``, ``sendto`` and ``getaddrinfo`` made
  from Python with its address (what a library phoning home, e.g. a model hub client, would
  do), including attempts that fail and connections too short to be sampled;
* a sampler reads ``/proc/<pid>/fd`` and ``/proc/net/{tcp,tcp6,udp,udp6}`` every 20 ms and
  records every socket of the tree with a non-loopback peer (C/C++ code, e.g. llama.cpp, too).

Both must see the loopback traffic they are meant to see (gateway to worker), so a broken
witness cannot pass the test by seeing nothing.
"""

from __future__ import annotations

import ipaddress
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest
from tests.e2e.conftest import MODEL
from tests.e2e.server import live_server

pytestmark = pytest.mark.e2e

HOOK = """
import ipaddress, json, os, socket, sys
_LOG = os.environ["ALIZE_TEST_EGRESS_LOG"]

def _loopback(host):
    if host in ("localhost", "", None) or str(host).endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(str(host).split("%")[0]).is_loopback
    except ValueError:
        return False

def _hook(event, args):
    if event not in ("socket.connect", "socket.sendto", "socket.getaddrinfo"):
        return
    if event == "socket.getaddrinfo":
        host = args[0]
    else:
        address = args[1]
        if not isinstance(address, tuple):
            return  # a unix socket
        host = address[0]
    host = host.decode() if isinstance(host, bytes) else host
    with open(_LOG, "a") as out:
        out.write(json.dumps({"pid": os.getpid(), "event": event, "host": str(host),
                              "loopback": _loopback(host)}) + "\\n")

sys.addaudithook(_hook)
with open(_LOG, "a") as out:
    out.write(json.dumps({"pid": os.getpid(), "event": "loaded", "host": "", "loopback": True}) + "\\n")
"""


def _tree(root: int) -> set[int]:
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            parents[int(entry)] = int(stat.rsplit(")", 1)[1].split()[1])
    found, frontier = {root}, [root]
    while frontier:
        pid = frontier.pop()
        children = [p for p, parent in parents.items() if parent == pid and p not in found]
        found.update(children)
        frontier.extend(children)
    return found


def _peer(hex_address: str) -> str:
    host, _, port = hex_address.partition(":")
    raw = bytes.fromhex(host)
    if len(raw) == 4:
        ip = ipaddress.IPv4Address(raw[::-1])
    else:  # /proc writes IPv6 as four little-endian 32-bit words
        ip = ipaddress.IPv6Address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))
    return f"{ip}:{int(port, 16)}"


def _sockets(pid: int) -> dict[str, str]:
    """inode -> remote address of every inet socket of the process's network namespace."""
    table: dict[str, str] = {}
    for kind in ("tcp", "tcp6", "udp", "udp6"):
        try:
            lines = Path(f"/proc/{pid}/net/{kind}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            table[fields[9]] = _peer(fields[2])
    return table


def _is_quiet_or_local(peer: str) -> bool:
    host = peer.rsplit(":", 1)[0]
    ip = ipaddress.ip_address(host)
    return (
        ip.is_loopback
        or ip.is_unspecified
        or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)
    )


class Sampler(threading.Thread):
    def __init__(self, root: int) -> None:
        super().__init__(daemon=True)
        self.root = root
        self.stop = threading.Event()
        self.foreign: set[str] = set()
        self.loopback_peers = 0
        self.samples = 0

    def run(self) -> None:
        while not self.stop.is_set():
            for pid in _tree(self.root):
                table = _sockets(pid)
                try:
                    fds = os.listdir(f"/proc/{pid}/fd")
                except OSError:
                    continue
                for fd in fds:
                    try:
                        target = os.readlink(f"/proc/{pid}/fd/{fd}")
                    except OSError:
                        continue
                    if target.startswith("socket:["):
                        peer = table.get(target[8:-1])
                        if peer is None:
                            continue
                        if not _is_quiet_or_local(peer):
                            self.foreign.add(f"pid {pid}: {peer}")
                        elif not peer.endswith(":0"):
                            self.loopback_peers += 1
            self.samples += 1
            self.stop.wait(0.02)


def _run_a_batch(client: httpx.Client) -> None:
    """Two chat lines through the file store, the queue and the embedded worker, to the end."""
    lines = [
        {
            "custom_id": f"line-{i}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {"model": MODEL, "messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 4},
        }
        for i in range(2)
    ]
    body = "\n".join(json.dumps(line) for line in lines).encode()
    upload = client.post("/files", data={"purpose": "batch"}, files={"file": ("in.jsonl", body)})
    assert upload.status_code == 200, upload.text
    created = client.post(
        "/batches",
        json={
            "input_file_id": upload.json()["id"],
            "endpoint": "/v1/chat/completions",
            "completion_window": "24h",
        },
    )
    assert created.status_code == 200, created.text
    deadline = time.monotonic() + 180
    batch = created.json()
    while batch["status"] not in ("completed", "failed", "cancelled", "expired"):
        assert time.monotonic() < deadline, batch
        time.sleep(0.5)
        batch = client.get(f"/batches/{batch['id']}").json()
    assert batch["status"] == "completed" and batch["request_counts"]["completed"] == 2, batch


def test_serve_chat_embed_moderate_and_batch_without_any_egress(tmp_path: Path) -> None:
    hook_dir = tmp_path / "hook"
    hook_dir.mkdir()
    (hook_dir / "sitecustomize.py").write_text(HOOK)
    log = tmp_path / "egress.jsonl"
    env = {
        "PYTHONPATH": os.pathsep.join([str(hook_dir), os.environ.get("PYTHONPATH", "")]),
        "ALIZE_TEST_EGRESS_LOG": str(log),
        "ALIZE_ENGINE__PARALLEL": "2",
        "ALIZE_ENGINE__CTX_PER_SLOT": "1024",
    }
    with live_server(tmp_path, env) as server:
        sampler = Sampler(server.process.pid)
        sampler.start()
        try:
            with httpx.Client(base_url=server.v1, timeout=180) as client:
                chat = client.post(
                    "/chat/completions",
                    json={
                        "model": MODEL,
                        "messages": [{"role": "user", "content": "Say hello."}],
                        "max_tokens": 8,
                    },
                )
                assert chat.status_code == 200, chat.text
                assert chat.headers["x-alize-model"] == MODEL
                embedding = client.post(
                    "/embeddings", json={"model": "all-minilm-l6-v2", "input": ["a sentence"]}
                )
                assert embedding.status_code == 200, embedding.text
                assert embedding.headers["x-alize-model"] == "all-minilm-l6-v2"
                assert len(embedding.json()["data"][0]["embedding"]) == 384
                moderation = client.post("/moderations", json={"input": "How do I bake bread?"})
                assert moderation.status_code == 200, moderation.text
                # fault 7 on the real engine: a lone tool message is a 400 at once, not a hang
                lone = client.post(
                    "/chat/completions", json={"model": MODEL, "messages": [{"role": "tool"}]}, timeout=30
                )
                assert lone.status_code == 400 and lone.json()["error"]["code"] == "invalid_tool_message"
                _run_a_batch(client)
        finally:
            sampler.stop.set()
            sampler.join(10)
    events = [json.loads(line) for line in log.read_text().splitlines()]
    foreign = [e for e in events if not e["loopback"]]
    assert foreign == [], foreign
    assert sampler.foreign == set(), sampler.foreign
    # the witnesses work: the hook ran in the server and its llama.cpp worker (the event loop is
    # uvloop, whose C sockets raise no audit events: the sampler sees those), and the sampler saw
    # the gateway's loopback connections to the worker
    assert len({e["pid"] for e in events if e["event"] == "loaded"}) >= 2, events[:5]
    assert sampler.samples > 10 and sampler.loopback_peers > 0


def test_the_witnesses_see_a_foreign_peer(tmp_path: Path) -> None:
    """Both witnesses report a process that connects to a non-loopback address (a UDP
    ``connect`` to TEST-NET-1: it sets the peer without sending a packet)."""
    (tmp_path / "sitecustomize.py").write_text(HOOK)
    log = tmp_path / "egress.jsonl"
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "ALIZE_TEST_EGRESS_LOG": str(log)}
    code = (
        "import socket, sys, time\n"
        "s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)\n"
        "s.connect(('192.0.2.1', 9))\n"
        "print('connected', flush=True)\n"
        "time.sleep(30)\n"
    )
    child = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "connected"
        sampler = Sampler(child.pid)
        sampler.start()
        while sampler.samples < 3:
            sampler.stop.wait(0.02)
        sampler.stop.set()
        sampler.join(10)
    finally:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()
    assert any(peer.endswith("192.0.2.1:9") for peer in sampler.foreign), sampler.foreign
    events = [json.loads(line) for line in log.read_text().splitlines()]
    assert {"event": "socket.connect", "host": "192.0.2.1", "loopback": False}.items() <= next(
        e for e in events if e["event"] == "socket.connect"
    ).items()
