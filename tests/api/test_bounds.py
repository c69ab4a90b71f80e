"""Every integer a client controls is bounded and strict (fault 6 and 7 of issue 17): values past
what a database column or an engine holds are a 422 naming the field, never an HTTP 500 from an
``OverflowError``; ``true`` is not a number; seeds stay in the range every engine reproduces."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from tests.api.test_errors import assert_error
from tests.support.apps import scripted_client


@pytest.fixture(scope="module")
def client(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TestClient]:
    with scripted_client(tmp_path_factory.mktemp("bounds")) as c:
        yield c


def _unbounded(doc: dict[str, Any]) -> list[str]:
    """Integer fields of request bodies and parameters with no ``maximum``."""
    components = doc.get("components", {}).get("schemas", {})
    found: list[str] = []

    def walk(schema: Any, where: str, seen: frozenset[str]) -> None:
        if not isinstance(schema, dict):
            return
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            if name not in seen:
                walk(components[name], f"{where}<{name}>", seen | {name})
            return
        if schema.get("type") == "integer" and "maximum" not in schema:
            found.append(where)
        for key in ("anyOf", "oneOf", "allOf"):
            for sub in schema.get(key, []):
                walk(sub, where, seen)
        for name, sub in schema.get("properties", {}).items():
            walk(sub, f"{where}.{name}", seen)
        walk(schema.get("items"), where + "[]", seen)
        walk(schema.get("additionalProperties"), where + "{}", seen)

    for path, operations in doc["paths"].items():
        for method, op in operations.items():
            for param in op.get("parameters", []):
                walk(param.get("schema"), f"{method.upper()} {path} ?{param['name']}", frozenset())
            for content in op.get("requestBody", {}).get("content", {}).values():
                walk(content.get("schema"), f"{method.upper()} {path}", frozenset())
    return found


def test_every_integer_in_a_request_has_a_maximum(client: TestClient) -> None:
    assert _unbounded(client.get("/openapi.json").json()) == []


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("rpm", 2**63),
        ("tpm", 2**64),
        ("concurrency", 2**31),
        ("monthly_budget_micros", 2**63),
        ("monthly_budget_micros", -1),
        ("tpm", True),
        ("rpm", "5"),
        ("rpm", 2.5),
    ],
)
def test_project_limits_and_budgets_out_of_range_are_422(
    client: TestClient, field: str, value: object
) -> None:
    r = client.post("/admin/api/projects", json={"name": f"p-{field}-{value!s}", field: value})
    error = assert_error(r, 422, "validation_error", "invalid_request_error")
    assert error["param"] == field


def test_updates_and_keys_are_bounded_too(client: TestClient) -> None:
    project = client.post("/admin/api/projects", json={"name": "bounded"}).json()["id"]
    r = client.patch(f"/admin/api/projects/{project}", json={"monthly_budget_micros": 2**63})
    assert_error(r, 422, "validation_error", "invalid_request_error")
    r = client.post("/admin/api/keys", json={"name": "k", "project_id": project, "rpm": 2**63})
    assert_error(r, 422, "validation_error", "invalid_request_error")
    # the largest values the columns hold are accepted
    r = client.patch(
        f"/admin/api/projects/{project}", json={"monthly_budget_micros": 2**63 - 1, "rpm": 2**31 - 1}
    )
    assert r.status_code == 200, r.text
    assert r.json()["monthly_budget_micros"] == 2**63 - 1


def test_audit_paging_past_int64_is_422(client: TestClient) -> None:
    r = client.get("/admin/api/audit", params={"before_seq": 2**63})
    assert_error(r, 422, "validation_error", "invalid_request_error")
    assert client.get("/admin/api/audit", params={"before_seq": 2**63 - 1}).status_code == 200


@pytest.mark.parametrize("seed", [2**63, 2**32 - 1, -1, True])
def test_seeds_outside_what_engines_reproduce_are_422(client: TestClient, seed: object) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2, "seed": seed}
    assert_error(
        client.post("/v1/chat/completions", json=body), 422, "validation_error", "invalid_request_error"
    )
    mistral = {**body, "random_seed": seed}
    del mistral["seed"]
    assert_error(
        client.post("/v1/chat/completions", json=mistral), 422, "validation_error", "invalid_request_error"
    )
    text = {"model": "echo", "prompt": "hi", "max_tokens": 2, "seed": seed}
    assert_error(client.post("/v1/completions", json=text), 422, "validation_error", "invalid_request_error")


def test_a_seed_in_range_is_accepted(client: TestClient) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    for seed in (0, 2**32 - 2):
        assert client.post("/v1/chat/completions", json={**body, "seed": seed}).status_code == 200


@pytest.mark.parametrize("field", ["max_tokens", "n", "top_logprobs"])
def test_huge_or_boolean_counts_in_inference_requests_are_422(client: TestClient, field: str) -> None:
    body = {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
    for value in (2**63, True):
        r = client.post("/v1/chat/completions", json={**body, field: value})
        assert_error(r, 422, "validation_error", "invalid_request_error")


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_logit_bias_is_refused_not_ignored(client: TestClient, path: str) -> None:
    base: dict[str, object] = (
        {"model": "echo", "messages": [{"role": "user", "content": "hi"}]}
        if "chat" in path
        else {"model": "echo", "prompt": "hi"}
    )
    r = client.post(path, json={**base, "max_tokens": 2, "logit_bias": {"50256": -100}})
    error = assert_error(r, 400, "unsupported_feature", "invalid_request_error")
    assert error["param"] == "logit_bias"
    assert client.post(path, json={**base, "max_tokens": 2, "logit_bias": {}}).status_code == 200
