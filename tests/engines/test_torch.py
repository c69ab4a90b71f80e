"""The PyTorch engine on the packaged all-MiniLM-L6-v2 folder: sentence embeddings as
sentence-transformers computes them, token limits, and unloading."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator

import numpy as np
import pytest
import pytest_asyncio
from tests.support.installed import import_or_missing

from alize.catalog.sources import minilm_folder
from alize.domain import GenerationRequest, SamplingParams
from alize.engines.base import EngineConfig
from alize.engines.registry import EngineRegistry
from alize.engines.torch import TorchEngine
from alize.errors import EngineUnavailableError, InvalidRequestError, UnsupportedFeatureError

SENTENCES = ["A man is playing the guitar.", "Someone strums a guitar.", "Interest rates rose again."]


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def engine() -> AsyncIterator[TorchEngine]:
    eng = TorchEngine(EngineConfig(kind="torch", model_path=minilm_folder(), threads=2, parallel=2))
    await eng.start()
    yield eng
    await eng.stop()


@pytest.mark.asyncio(loop_scope="module")
async def test_info_describes_an_embeddings_model(engine: TorchEngine) -> None:
    info = engine.info
    assert info.supports_embeddings and not info.supports_chat
    assert info.embedding_dimensions == 384 and info.context_length == 256
    assert info.architecture == "BertModel"


@pytest.mark.asyncio(loop_scope="module")
async def test_vectors_are_normalised_and_similar_for_paraphrases(engine: TorchEngine) -> None:
    result = await engine.embed(SENTENCES)
    vectors = np.array(result.vectors)
    assert vectors.shape == (3, 384)
    assert np.allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    sims = vectors @ vectors.T
    assert sims[0, 1] > 0.6 > sims[0, 2]
    again = await engine.embed(SENTENCES[:1])  # batching does not change a vector
    assert np.allclose(again.vectors[0], vectors[0], atol=1e-5)
    assert result.prompt_tokens > len(SENTENCES) * 2


@pytest.mark.asyncio(loop_scope="module")
async def test_matches_sentence_transformers(engine: TorchEngine) -> None:
    st = import_or_missing("sentence_transformers")
    reference = st.SentenceTransformer(str(minilm_folder()), device="cpu", local_files_only=True)
    expected = reference.encode(SENTENCES, normalize_embeddings=True)
    result = await engine.embed(SENTENCES)
    assert np.allclose(np.array(result.vectors), expected, atol=1e-4)


@pytest.mark.asyncio(loop_scope="module")
async def test_long_inputs_are_refused_not_truncated(engine: TorchEngine) -> None:
    with pytest.raises(InvalidRequestError, match=r"input\[1\] is \d+ tokens long") as caught:
        await engine.embed(["short", "word " * 300])
    assert caught.value.code == "input_too_long"


@pytest.mark.asyncio(loop_scope="module")
async def test_generation_is_not_offered(engine: TorchEngine) -> None:
    request = GenerationRequest(request_id="r", params=SamplingParams(max_tokens=1), prompt="hi")
    with pytest.raises(UnsupportedFeatureError):
        async for _ in engine.generate(request):
            pass
    assert await engine.count_prompt_tokens(request) == 3  # [CLS] hi [SEP]


async def test_stop_unloads_and_the_entry_point_is_registered() -> None:
    assert "torch" in EngineRegistry().kinds
    eng = EngineRegistry().create(EngineConfig(kind="torch", model_path=minilm_folder()))
    assert isinstance(eng, TorchEngine)
    with pytest.raises(EngineUnavailableError):
        await eng.embed(["not loaded"])
    await eng.start()
    assert (await eng.embed(["loaded"])).vectors
    await eng.stop()
    with pytest.raises(EngineUnavailableError):
        _ = eng.info


def test_a_load_waits_for_the_prewarms_imports() -> None:
    """transformers imports its classes lazily: an embeddings model loaded while the start-up
    prewarm imported them once failed with "cannot import name 'AutoModel'" (a clean-clone run).
    A load waits while imports are under way."""
    from alize.engines import torch as torch_engine

    torch_engine._Loaded(minilm_folder(), 1)  # imports done: a load now takes well under 1 s
    done = threading.Event()

    def load() -> None:
        torch_engine._Loaded(minilm_folder(), 1)
        done.set()

    with torch_engine._IMPORTING:  # as the prewarm holds it while it imports
        loader = threading.Thread(target=load, daemon=True)
        loader.start()
        assert not done.wait(1.5), "the load ran while the imports were under way"
    assert done.wait(120)
    loader.join(10)
