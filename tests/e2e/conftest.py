"""Live servers shared by the e2e tests: one general server, one with a single slot."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from tests.e2e.server import LiveServer, live_server

MODEL = "smollm2-135m-instruct"


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """The embedded default, 8 slots: what `alize serve` gives a user, a little smaller."""
    with live_server(
        tmp_path_factory.mktemp("server"),
        {
            "ALIZE_ENGINE__PARALLEL": "8",
            "ALIZE_ENGINE__CTX_PER_SLOT": "4096",
            # 32 concurrent replies on 8 slots and 2 busy cores can wait past the 120 s default;
            # the tests count tokens and outcomes, not latency
            "ALIZE_LIMITS__QUEUE_TIMEOUT_S": "600",
        },
    ) as s:
        yield s


@pytest.fixture(scope="module")
def one_slot_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    """One slot and a wait queue of one: admission, disconnects and the queue bound are visible."""
    with live_server(
        tmp_path_factory.mktemp("one-slot"),
        {
            "ALIZE_ENGINE__PARALLEL": "1",
            "ALIZE_ENGINE__CTX_PER_SLOT": "2048",
            "ALIZE_LIMITS__QUEUE_MAX": "1",
        },
    ) as s:
        yield s
