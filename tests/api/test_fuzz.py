"""Fuzzing the OpenAPI document with schemathesis (issue 17): generated requests to every
operation get no 5xx, and no answer contradicts the documented schema (status code, content
type, body, headers).

The run is bounded for the suite (``ALIZE_FUZZ_EXAMPLES`` examples per operation, 3 by
default); ``make fuzz`` runs the same test with many more. The app is the real one over scripted
engines, in open mode, so the fuzzer reaches the admin API too. Left out: adding a model from a
local path and benchmarking (they inspect files and load engines: seconds per example, and
covered by their own tests).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

schemathesis = pytest.importorskip("schemathesis")
from fastapi.testclient import TestClient  # noqa: E402
from hypothesis import HealthCheck, settings  # noqa: E402
from schemathesis.specs.openapi.checks import (  # noqa: E402
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from tests.support.apps import SCENARIOS, scripted_app  # noqa: E402

from alize.api.app import create_app  # noqa: E402
from alize.config import DeploymentSettings, Settings  # noqa: E402

EXAMPLES = int(os.environ.get("ALIZE_FUZZ_EXAMPLES", "3"))
SKIPPED = {("POST", "/admin/api/models"), ("POST", "/admin/api/models/{model_id}/benchmark")}


def _settings(data_dir: Path) -> Settings:
    return Settings(
        data_dir=data_dir,
        default_model="echo",
        load_on_start=True,
        deployments=[
            DeploymentSettings(name=s, engine="scripted", model_path=Path(s), parallel=4, ctx_per_slot=256)
            for s in SCENARIOS
        ],
    )


schema = schemathesis.openapi.from_dict(create_app(_settings(Path("unused"))).openapi())


def _not_a_server_error(ctx: object, response: object, case: object) -> bool:
    status = response.status_code  # type: ignore[attr-defined]
    assert status < 500, f"{status}: {response.text[:500]}"  # type: ignore[attr-defined]
    return True


CHECKS = [
    _not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
]


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with scripted_app(_settings(tmp_path_factory.mktemp("fuzz"))) as c:
        yield c


@schema.parametrize()
@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,
)
def test_the_api_matches_its_documented_schema(case: object, client: TestClient) -> None:
    if (case.method, case.path) in SKIPPED:  # type: ignore[attr-defined]
        pytest.skip("inspects local files or loads engines; tested on its own")
    kwargs = case.as_transport_kwargs(base_url="http://127.0.0.1")  # type: ignore[attr-defined]
    kwargs.pop("follow_redirects", None)
    cookies = kwargs.pop("cookies", None) or {}
    if cookies:  # per-request cookies are deprecated in httpx: send them as the header
        headers = dict(kwargs.get("headers") or {})
        headers["cookie"] = "; ".join(f"{k}={v}" for k, v in cookies.items())
        kwargs["headers"] = headers
    if isinstance(kwargs.get("data"), bytes | str):  # raw bodies go as content in httpx
        kwargs["content"] = kwargs.pop("data")
    files = kwargs.get("files")
    if isinstance(files, list):  # a multipart number is sent as its text (httpx takes no int part)
        kwargs["files"] = [
            (k, (v[0], str(v[1])) if isinstance(v, tuple) and isinstance(v[1], int) else v) for k, v in files
        ]
    response = client.request(**kwargs, follow_redirects=False)
    response.request.read()  # multipart bodies are streams; the checks read the request back
    case.validate_response(response, checks=CHECKS)  # type: ignore[attr-defined]
