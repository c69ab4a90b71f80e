"""Spec assembly (pure): engine choice and settings, prices, the card clients see, and the one
deployment schema shared by the admin API and the settings."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from alize.catalog.cards import ModelCard
from alize.config import DeploymentConfig, DeploymentSettings, EngineSettings
from alize.deployments.specs import (
    LIVE_FIELDS,
    UPDATABLE_FIELDS,
    build_spec,
    engine_config,
    engine_kind,
    parse_deployment,
)
from alize.errors import InvalidRequestError, ValidationFailedError


def _card(**overrides: Any) -> ModelCard:
    data: dict[str, Any] = {
        "id": "tiny-chat",
        "display_name": "Tiny chat",
        "publisher": "Alizé tests",
        "license": "apache-2.0",
        "open_weights": True,
        "tasks": ["chat"],
        "has_chat_template": True,
        "context_length": 2048,
        "source": {"kind": "gguf", "path": "/models/tiny.gguf"},
        "price_input_per_million": 150_000,
        "price_output_per_million": 600_000,
    }
    data.update(overrides)
    return ModelCard.model_validate(data)


DEFAULTS = EngineSettings(parallel=8, ctx_per_slot=4096, threads=2)


def test_engine_settings_come_from_the_deployment_else_the_server_and_the_context_is_capped() -> None:
    card = _card()
    mine = engine_config(
        parse_deployment({"name": "a", "model": "tiny-chat", "parallel": 2, "ctx_per_slot": 1024}),
        card,
        kind="llamacpp",
        path=Path("/m.gguf"),
        defaults=DEFAULTS,
    )
    assert (mine.parallel, mine.ctx_per_slot, mine.threads, mine.model_path) == (2, 1024, 2, Path("/m.gguf"))
    default = engine_config(
        parse_deployment({"name": "a", "model": "tiny-chat"}),
        card,
        kind="llamacpp",
        path=None,
        defaults=DEFAULTS,
    )
    assert (default.parallel, default.ctx_per_slot) == (8, 2048)  # the card's 2048 caps the server's 4096
    tiny = engine_config(
        parse_deployment({"name": "a", "model": "x"}),
        _card(context_length=16),
        kind="llamacpp",
        path=None,
        defaults=DEFAULTS,
    )
    assert tiny.ctx_per_slot == 64  # never below the floor


def test_remote_cards_give_the_remote_engine_its_options() -> None:
    card = _card(
        source={"kind": "remote", "base_url": "http://up:8000/v1", "upstream_model": "m", "api_key_env": "K"},
        tasks=["chat", "embeddings"],
        embedding_dimensions=384,
    )
    options = engine_config(
        parse_deployment({"name": "r", "model": "tiny-chat"}),
        card,
        kind="remote",
        path=None,
        defaults=DEFAULTS,
    ).options
    assert options == {
        "base_url": "http://up:8000/v1",
        "upstream_model": "m",
        "tasks": "chat,embeddings",
        "supports_tools": "false",
        "api_key_env": "K",
        "embedding_dimensions": "384",
    }


def test_engine_kind_override_card_default_and_not_installed() -> None:
    config = parse_deployment({"name": "a", "model": "tiny-chat"})
    assert engine_kind(config, _card(), {"llamacpp"}) == "llamacpp"
    assert engine_kind(config, None, {"llamacpp", "scripted"}, "scripted") == "scripted"
    with pytest.raises(InvalidRequestError) as refused:
        engine_kind(config, _card(source={"kind": "hf", "path": "/models/x"}), {"llamacpp"})
    assert refused.value.code == "engine_not_installed" and "'torch'" in refused.value.message


def test_prices_default_to_the_cards_and_the_shown_card_hides_the_source() -> None:
    card = _card()
    engine = engine_config(
        parse_deployment({"name": "a", "model": "tiny-chat"}),
        card,
        kind="llamacpp",
        path=None,
        defaults=DEFAULTS,
    )
    from_card = build_spec(
        parse_deployment({"name": "a", "model": "tiny-chat"}), card, engine, memory_bytes=7, declared=False
    )
    assert (from_card.prices.input_per_million, from_card.prices.output_per_million) == (150_000, 600_000)
    assert from_card.memory_bytes == 7 and not from_card.declared
    assert from_card.card is not None and "source" not in from_card.card
    assert from_card.card["deployment"]["ctx_per_slot"] == 2048
    own = build_spec(
        parse_deployment({"name": "a", "model": "tiny-chat", "price_output_per_million": 0}),
        card,
        engine,
        memory_bytes=0,
        declared=True,
    )
    assert (own.prices.input_per_million, own.prices.output_per_million) == (150_000, 0)
    assert own.card is not None and own.card["price_output_per_million"] == 0
    free = build_spec(
        parse_deployment({"name": "b", "model": "gone"}), None, engine, memory_bytes=0, declared=True
    )
    assert free.prices.input_per_million == 0 and free.card == free.card | {"id": "gone", "model": "gone"}


def test_one_schema_for_the_admin_api_and_the_settings() -> None:
    """The settings form adds engine and model_path to the admin schema and changes no bound
    (they had drifted: ctx_per_slot >= 256 in one, >= 64 in the other)."""
    assert issubclass(DeploymentSettings, DeploymentConfig)
    shared = set(DeploymentConfig.model_fields)
    assert set(DeploymentSettings.model_fields) - shared == {"engine", "model_path"}
    for name in shared - {"model"}:
        assert repr(DeploymentSettings.model_fields[name]) == repr(DeploymentConfig.model_fields[name])
    assert DeploymentSettings(name="a", ctx_per_slot=64).ctx_per_slot == 64
    assert parse_deployment({"name": "a", "model": "m", "ctx_per_slot": 64}).ctx_per_slot == 64
    declared = DeploymentSettings(name="a", price_input_per_million=5, description="mine")
    assert (declared.price_input_per_million, declared.description) == (5, "mine")
    assert LIVE_FIELDS <= UPDATABLE_FIELDS <= shared


@pytest.mark.parametrize(
    ("data", "param"),
    [
        ({"name": "a", "model": "m", "engine": "torch"}, "engine"),  # the admin API picks no engine
        ({"name": "a", "model": "m", "model_path": "/etc/passwd"}, "model_path"),  # ...nor a file
        ({"name": "a b", "model": "m"}, "name"),
        ({"name": "a", "model": "m", "ctx_per_slot": 63}, "ctx_per_slot"),
        ({"name": "a", "model": "m", "replicas": 17}, "replicas"),
    ],
)
def test_parse_deployment_refuses_with_the_field_named(data: dict[str, Any], param: str) -> None:
    with pytest.raises(ValidationFailedError) as refused:
        parse_deployment(data)
    assert refused.value.param == param
