"""SmolLM2 on a real local Ray cluster (a head and a worker node on 127.0.0.1, one CPU each),
2 Serve replicas of Alizé's llama.cpp worker behind `alize serve --ray`: a conversation's next
turns land on the replica that holds its prompt (prefix affinity); both take traffic; a
replica killed under load ends the streams it carried with an error event (never a silent
[DONE]); new requests succeed on the other; the ledger holds exactly one row per request; and
Serve starts a new replica in place of the dead one.

The cluster's processes are started by this test in their own process groups and stopped by
signalling those groups (never `ray stop`, which would stop every Ray process of the user)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from tests.e2e.conftest import MODEL
from tests.e2e.ray_cluster import local_cluster, replica_pids
from tests.e2e.server import LiveServer, live_server
from tests.support.installed import import_or_missing

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]

import_or_missing("ray.serve")

#: Serve's application of the deployment (NAMESPACE.DEPLOYMENT)
APPLICATION = f"alize.{MODEL}"


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """``127.0.0.1:PORT`` of a head node and one worker node, each with one CPU."""
    with local_cluster(tmp_path_factory.mktemp("ray-logs")) as address:
        yield address


@pytest.fixture(scope="module")
def gateway(ray_cluster: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    env = {
        "ALIZE_RAY__ADDRESS": ray_cluster,
        "ALIZE_RAY__HEALTH_CHECK_PERIOD_S": "2",
        "ALIZE_DEPLOYMENTS": json.dumps([{"name": MODEL, "replicas": 2}]),
        "ALIZE_ENGINE__PARALLEL": "2",
        "ALIZE_ENGINE__CTX_PER_SLOT": "1024",
        "ALIZE_CHAT__ENABLED": "false",
    }
    with live_server(tmp_path_factory.mktemp("ray-gateway"), env, ready_timeout=300) as server:
        yield server


def _served(server: LiveServer) -> dict[str, int]:
    r = httpx.get(f"{server.url}/admin/api/deployments", timeout=30)
    assert r.status_code == 200, r.text
    (deployment,) = [d for d in r.json()["data"] if d["name"] == MODEL]
    served: dict[str, int] = deployment["state"]["served_per_ray_replica"]
    return served


def _chat(server: LiveServer, text: str | list[dict[str, str]], max_tokens: int) -> dict[str, Any]:
    messages = [{"role": "user", "content": text}] if isinstance(text, str) else text
    r = httpx.post(
        f"{server.v1}/chat/completions",
        json={"model": MODEL, "messages": messages, "max_tokens": max_tokens},
        timeout=120,
    )
    return {"status": r.status_code, "id": r.headers.get("x-request-id"), "body": r.json()}


class Stream(threading.Thread):
    """One streamed reply, read to its end: its chunks, and how it ended."""

    def __init__(
        self, server: LiveServer, text: str, max_tokens: int = 300, *, ignore_eos: bool = False
    ) -> None:
        super().__init__(daemon=True)
        self.server, self.text, self.max_tokens, self.ignore_eos = server, text, max_tokens, ignore_eos
        self.tokens = 0
        self.content = ""
        self.ending: str | None = None  # "done", "error" or "silent"
        self.error: dict[str, Any] | None = None
        self.request_id: str | None = None
        self.started = threading.Event()

    def run(self) -> None:
        body: dict[str, Any] = {
            "model": MODEL,
            "messages": [{"role": "user", "content": self.text}],
            "max_tokens": self.max_tokens,
            "stream": True,
        }
        if self.ignore_eos:
            body["ignore_eos"] = True
        with httpx.stream("POST", f"{self.server.v1}/chat/completions", json=body, timeout=120) as r:
            assert r.status_code == 200
            self.request_id = r.headers.get("x-request-id")
            self.ending = "silent"
            for line in r.iter_lines():
                if not line.startswith("data: "):
                    continue
                payload = line[6:]
                if payload == "[DONE]":
                    self.ending = "done"
                    break
                event = json.loads(payload)
                if "error" in event:
                    self.ending, self.error = "error", event["error"]
                    break
                self.tokens += 1
                for choice in event.get("choices", []):
                    self.content += choice["delta"].get("content") or ""
                if self.tokens >= 3:
                    self.started.set()
        self.started.set()


def _replica_pids() -> set[int]:
    return replica_pids(APPLICATION)


def _ledger_rows(server: LiveServer, request_ids: list[str]) -> int:
    r = httpx.get(f"{server.url}/admin/api/usage", params={"group_by": "deployment"}, timeout=30)
    assert r.status_code == 200, r.text
    for rid in request_ids:
        row = httpx.get(f"{server.url}/admin/api/usage/requests/{rid}", timeout=30)
        assert row.status_code == 200, (rid, row.text)
    return sum(int(g["requests"]) for g in r.json()["data"] if g["group"] == MODEL)


def _assistant(content: str) -> dict[str, str]:
    return {"role": "assistant", "content": content}


def _took(server: LiveServer, before: dict[str, int]) -> str:
    """The one replica that started sequences since ``before``."""
    gained = {n: c - before.get(n, 0) for n, c in _served(server).items() if c > before.get(n, 0)}
    assert len(gained) == 1, gained
    return next(iter(gained))


def test_a_conversations_next_turns_land_on_the_replica_that_holds_its_prompt(gateway: LiveServer) -> None:
    """Two conversations start at once, one on each replica (the least busy takes each); their
    next turns, sent one at a time to idle replicas, each go back to the replica of their first
    turn. Serve's own router (the less busy of two at random) would send each to either; least
    busy alone would send all four to the same one."""
    before = _served(gateway)
    # runs to max_tokens, so that it is still streaming when the other conversation starts
    first = Stream(gateway, "Tell me about lighthouses, in detail.", max_tokens=200, ignore_eos=True)
    first.start()
    assert first.started.wait(120)
    took_first = _took(gateway, before)
    before = _served(gateway)
    other = [{"role": "user", "content": "Name three rivers of France."}]
    reply = _chat(gateway, other, 24)
    assert reply["status"] == 200, reply
    took_other = _took(gateway, before)
    first.join(120)
    assert first.ending == "done" and took_other != took_first
    conversations = {
        took_first: [{"role": "user", "content": first.text}, _assistant(first.content)],
        took_other: [*other, _assistant(reply["body"]["choices"][0]["message"]["content"])],
    }
    for turn in ("Tell me more.", "And one more thing?"):
        for replica, messages in conversations.items():
            messages.append({"role": "user", "content": turn})
            before = _served(gateway)
            answer = _chat(gateway, messages, 16)
            assert answer["status"] == 200, answer
            assert _took(gateway, before) == replica, (turn, messages[0]["content"])
            messages.append(_assistant(answer["body"]["choices"][0]["message"]["content"]))


def test_two_ray_replicas_serve_survive_a_kill_and_are_restored(gateway: LiveServer) -> None:
    request_ids: list[str] = []
    rows_before = _ledger_rows(gateway, [])  # the rows of the tests before this one
    # both replicas take traffic: 4 concurrent replies on 2 replicas of 2 slots each
    warm = [Stream(gateway, f"Say hello number {i}.") for i in range(4)]
    for s in warm:
        s.start()
    for s in warm:
        s.join(120)
    assert [s.ending for s in warm] == ["done"] * 4
    request_ids += [s.request_id for s in warm if s.request_id]
    served = _served(gateway)
    assert len(served) == 2 and all(n >= 1 for n in served.values()), served
    pids = _replica_pids()
    assert {int(name.rsplit(":", 1)[1]) for name in served} == pids

    # under load, kill one replica's process
    story = "Write a long story about a lighthouse keeper and a storm, at least five hundred words"
    load = [Stream(gateway, f"{story} ({i}).") for i in range(4)]
    for s in load:
        s.start()
    for s in load:
        assert s.started.wait(120)
    # Serve picks the replica of each request (power of two choices), so the 4 need not split
    # 2 and 2: the victim is the replica that took the most of them (min(pids) was once idle,
    # and every stream ended with [DONE]); the other keeps what it took
    loaded = _served(gateway)
    carried = {int(n.rsplit(":", 1)[1]): loaded.get(n, 0) - served.get(n, 0) for n in loaded}
    victim = max(carried, key=lambda pid: carried[pid])
    survivor_pid = next(pid for pid in pids if pid != victim)
    assert carried[victim] >= 1, carried
    os.kill(victim, signal.SIGKILL)
    for s in load:
        s.join(120)
    request_ids += [s.request_id for s in load if s.request_id]
    endings = [s.ending for s in load]
    assert "silent" not in endings and None not in endings, endings
    assert endings.count("error") >= 1, (endings, carried)
    if carried.get(survivor_pid, 0) >= 1:
        assert endings.count("done") >= 1, (endings, carried)
    for s in load:
        if s.error is not None:
            assert s.error["code"] == "engine_unavailable" and "died" in s.error["message"], s.error

    # new requests succeed, on the replica left
    after = [_chat(gateway, f"Name a colour, please ({i}).", 8) for i in range(3)]
    assert [a["status"] for a in after] == [200] * 3, after
    request_ids += [a["id"] for a in after if a["id"]]
    assert all(c["body"]["choices"][0]["message"]["content"] for c in after)
    survivor = f":{survivor_pid}"
    now = _served(gateway)
    gained = {n: now.get(n, 0) - served.get(n, 0) for n in now}
    assert sum(v for n, v in gained.items() if n.endswith(survivor)) >= 1, gained

    # exactly one ledger row per request
    assert len(request_ids) == 4 + 4 + 3 == len(set(request_ids))
    assert _ledger_rows(gateway, request_ids) - rows_before == len(request_ids)

    # Serve replaces the dead replica
    deadline = time.monotonic() + 120
    while True:
        fresh = _replica_pids()
        if len(fresh) == 2 and victim not in fresh:
            break
        assert time.monotonic() < deadline, f"no replacement replica: {fresh}"
        time.sleep(1)
    assert survivor_pid in fresh
