"""Moderator service, wire models and the OpenAI / Mistral renderings."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from openai.types import ModerationCreateResponse

from alize.protocol.moderation import (
    MistralChatModerationRequest,
    MistralModerationRequest,
    OpenAIModerationRequest,
    dump,
)
from alize.safety.categories import MISTRAL_CATEGORIES, OPENAI_CATEGORIES
from alize.safety.classifier import ContentClassifier
from alize.safety.moderator import Moderator, create_moderator
from alize.safety.render import to_mistral, to_openai

TEXT_WITH_PII = "Please send the invoice to jean.dupont@example.fr, thank you."


@pytest.fixture(scope="module")
def moderator() -> Moderator:
    return create_moderator()


def test_factory_is_lazy_and_builds_once() -> None:
    built: list[int] = []
    lock = threading.Lock()

    def factory() -> ContentClassifier:
        with lock:
            built.append(1)
        return ContentClassifier.from_path()

    mod = Moderator(factory)
    assert built == []
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda t: mod.classify([t]), ["one", "two", "three", "four"]))
    assert built == [1]
    assert all(len(r) == 1 for r in results)


def test_result_has_all_categories_and_pii(moderator: Moderator) -> None:
    benign, with_pii = moderator.classify(["What is the capital of Portugal?", TEXT_WITH_PII])
    assert list(benign.scores) == list(MISTRAL_CATEGORIES)
    assert list(benign.openai_scores) == list(OPENAI_CATEGORIES)
    assert not benign.flagged and benign.pii == ()
    assert with_pii.categories["pii"] and with_pii.scores["pii"] == 1.0
    assert [s.kind for s in with_pii.pii] == ["EMAIL"]


def test_thresholds_are_data(moderator: Moderator) -> None:
    strict = Moderator(lambda: moderator.classifier, thresholds={"financial": 0.0})
    assert strict.classify(["hello there"])[0].categories["financial"]
    with pytest.raises(ValueError, match="unknown"):
        Moderator(lambda: moderator.classifier, thresholds={"nope": 0.5})
    with pytest.raises(ValueError):
        Moderator(lambda: moderator.classifier, thresholds={"law": 1.5})


def test_batches_match_single_calls(moderator: Moderator) -> None:
    texts = [f"Sentence number {i} about gardening and tomatoes." for i in range(7)]
    small = Moderator(lambda: moderator.classifier, batch_size=3)
    batched = small.classify(texts)
    single = [moderator.classify([t])[0] for t in texts]
    for a, b in zip(batched, single, strict=True):
        assert a.scores == pytest.approx(b.scores, abs=1e-5)


def test_openai_rendering_validates_with_the_sdk(moderator: Moderator) -> None:
    request = OpenAIModerationRequest.model_validate({"input": ["hello", TEXT_WITH_PII], "model": "omni"})
    response = to_openai(moderator.classify(request.texts()), request.model)
    body = dump(response)
    parsed = ModerationCreateResponse.model_validate(body)
    assert len(parsed.results) == 2
    assert "hate/threatening" in body["results"][0]["category_scores"]
    assert body["model"] == "omni" and body["id"].startswith("modr-")


def test_openai_request_accepts_text_parts() -> None:
    request = OpenAIModerationRequest.model_validate({"input": [{"type": "text", "text": "hi"}]})
    assert request.texts() == ["hi"]
    assert OpenAIModerationRequest.model_validate({"input": "solo"}).texts() == ["solo"]


def test_mistral_rendering_shape(moderator: Moderator) -> None:
    request = MistralModerationRequest.model_validate(
        {"input": "hello", "model": "mistral-moderation-latest"}
    )
    body = dump(to_mistral(moderator.classify(request.texts()), request.model))
    assert set(body) == {"id", "model", "results"}
    (result,) = body["results"]
    assert set(result) == {"categories", "category_scores"}
    assert set(result["categories"]) == set(MISTRAL_CATEGORIES)
    assert all(isinstance(v, bool) for v in result["categories"].values())


def test_chat_moderation_single_and_multiple_conversations(moderator: Moderator) -> None:
    single = MistralChatModerationRequest.model_validate(
        {
            "model": "m",
            "input": [
                {"role": "user", "content": "Hi, my card is 4111 1111 1111 1111"},
                {"role": "assistant", "content": [{"type": "text", "text": "Noted."}]},
            ],
        }
    )
    assert len(single.conversations()) == 1
    body = dump(to_mistral(moderator.classify_conversations(single.conversation_texts()), single.model))
    assert len(body["results"]) == 1 and body["results"][0]["categories"]["pii"] is True

    several = MistralChatModerationRequest.model_validate(
        {"input": [[{"role": "user", "content": "hello"}], [{"role": "user", "content": "a@b.example"}]]}
    )
    results = moderator.classify_conversations(several.conversation_texts())
    assert [r.categories["pii"] for r in results] == [False, True]


def test_conversation_pii_offsets_index_the_transcript(moderator: Moderator) -> None:
    messages = ["first message", "mail me at a@b.example"]
    (result,) = moderator.classify_conversations([messages])
    transcript = "\n\n".join(messages)
    assert [transcript[s.start : s.end] for s in result.pii] == ["a@b.example"]
