"""Chunking, extraction, BM25 / embedding retrieval, and the prompt built from passages."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import pytest
from tests.chat.conftest import Gateway, ledger
from tests.support.scripted_engine import EMBED_VOCAB

from alize.chat.accounts import UserInfo, UserService
from alize.chat.chunking import chunk_text
from alize.chat.conversations import ConversationService
from alize.chat.documents import DocumentService, Embedder
from alize.chat.extract import extract
from alize.chat.language import ANSWER_IN
from alize.chat.prompting import system_prompt
from alize.chat.retrieval import bm25_scores, cosine_scores, pack_vector, top_k, unpack_vector
from alize.config import ChatSettings
from alize.errors import InvalidRequestError, NotFoundError, PayloadTooLargeError
from alize.store import Database

LIGHTHOUSE = (
    "The Zorvath lighthouse stands on Quenby island.\n\n"
    "It was built in 1894 by Maelis Ardent; its light is green.\n\n"
    "The village bakery sells rye bread on Tuesdays."
)


def test_chunks_respect_size_overlap_and_keep_every_word() -> None:
    text = "\n\n".join(f"Paragraph {i}. " + " ".join(f"word{i}_{j}" for j in range(40)) for i in range(12))
    chunks = chunk_text(text, size=300, overlap=60)
    assert len(chunks) > 5
    assert all(0 < len(c) <= 300 for c in chunks)
    words = set(text.split())
    assert words <= set(" ".join(chunks).split())
    # consecutive chunks share text (the overlap)
    assert any(set(a.split()[-3:]) & set(b.split()[:12]) for a, b in itertools.pairwise(chunks))
    assert chunk_text("   \n\n  ") == []
    assert chunk_text("short") == ["short"]


def test_bm25_ranks_the_passage_sharing_rare_words_first() -> None:
    passages = LIGHTHOUSE.split("\n\n")
    scores = bm25_scores("Who built the Zorvath lighthouse?", passages)
    assert top_k(scores, 1) == [0]
    assert scores[2] < scores[0] / 2  # shares only "the"
    assert bm25_scores("quantum", LIGHTHOUSE.split("\n\n")) == [0, 0, 0]
    assert top_k(bm25_scores("bread Tuesday bakery", passages), 1) == [2]
    assert bm25_scores("anything", []) == []


def test_cosine_and_vector_packing() -> None:
    vectors = [[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]]
    assert top_k(cosine_scores([0.0, 2.0], vectors), 2) == [1, 2]
    assert unpack_vector(pack_vector([0.5, -1.25])) == [0.5, -1.25]


def test_extract_text_markdown_and_limits() -> None:
    assert extract("a.txt", "héllo".encode(), max_bytes=100, max_pages=1).text == "héllo"
    assert extract("notes.MD", b"# Title", max_bytes=100, max_pages=1).media_type == "text/markdown"
    with pytest.raises(PayloadTooLargeError):
        extract("a.txt", b"x" * 101, max_bytes=100, max_pages=1)
    with pytest.raises(InvalidRequestError):
        extract("a.exe", b"MZ", max_bytes=100, max_pages=1)
    with pytest.raises(InvalidRequestError):
        extract("fake.pdf", b"not a pdf", max_bytes=100, max_pages=1)
    with pytest.raises(InvalidRequestError):
        extract("empty.txt", b"  \n ", max_bytes=100, max_pages=1)


def _pdf(pages: int) -> bytes:
    """A minimal PDF whose pages each draw one line of text (built by hand, no writer library)."""
    objects = ["<< /Type /Catalog /Pages 2 0 R >>"]
    kids = " ".join(f"{4 + 2 * i} 0 R" for i in range(pages))
    objects.append(f"<< /Type /Pages /Kids [{kids}] /Count {pages} >>")
    objects.append("<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for i in range(pages):
        stream = f"BT /F1 12 Tf 72 720 Td (Page {i + 1} mentions Quenby) Tj ET"
        objects.append(
            f"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Contents {5 + 2 * i} 0 R "
            "/Resources << /Font << /F1 3 0 R >> >> >>"
        )
        objects.append(f"<< /Length {len(stream)} >>\nstream\n{stream}\nendstream")
    out = b"%PDF-1.4\n"
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(len(out))
        out += f"{number} 0 obj\n{body}\nendobj\n".encode()
    xref = len(out)
    out += f"xref\n0 {len(objects) + 1}\n0000000000 65535 f \n".encode()
    out += "".join(f"{o:010d} 00000 n \n" for o in offsets).encode()
    out += f"trailer\n<< /Size {len(objects) + 1} /Root 1 0 R >>\nstartxref\n{xref}\n%%EOF\n".encode()
    return out


def test_extract_pdf_text_and_page_limit() -> None:
    found = extract("doc.pdf", _pdf(2), max_bytes=100_000, max_pages=5)
    assert found.pages == 2 and "Page 2 mentions Quenby" in found.text
    with pytest.raises(PayloadTooLargeError) as caught:
        extract("doc.pdf", _pdf(3), max_bytes=100_000, max_pages=2)
    assert caught.value.code == "too_many_pages"


class _NoEmbeddings(Embedder):
    """No embeddings deployment exists: ``available()`` is what the real manager would say."""

    def __init__(self) -> None:
        self.model = "all-minilm-l6-v2"

    def available(self) -> bool:
        return False


class _BagOfWords(Embedder):
    """Vectors from a fixed vocabulary with no pipeline behind them (for tests about storage)."""

    def __init__(self) -> None:
        self.model = "bag"

    def available(self) -> bool:
        return True

    async def embed(
        self, texts: Sequence[str], *, user_id: str, project_id: str | None = None
    ) -> list[list[float]] | None:
        return [[float(t.lower().count(w)) for w in EMBED_VOCAB] for t in texts]


@pytest.mark.parametrize("embeddings", [False, True], ids=["bm25", "embeddings"])
async def test_upload_and_retrieve(
    db: Database, users: tuple[UserService, UserInfo, UserInfo], gateway: Gateway, embeddings: bool
) -> None:
    _, alice, bob = users
    conversations = ConversationService(db)
    c = await conversations.create(alice.id, model="m")
    settings = ChatSettings(chunk_chars=100, chunk_overlap=0, top_k=2)
    documents = DocumentService(db, settings, gateway.embedder if embeddings else _NoEmbeddings())
    info = await documents.upload(alice.id, c.id, "../../lighthouse.txt", LIGHTHOUSE.encode())
    assert info.name == "lighthouse.txt"
    assert info.embedding_model == ("bag" if embeddings else None)
    passages = await documents.retrieve(alice.id, c.id, "Which bakery sells bread?")
    assert [p.n for p in passages] == [1, 2]
    assert "bakery" in passages[0].text and passages[0].document == "lighthouse.txt"
    with pytest.raises(NotFoundError):
        await documents.retrieve(bob.id, c.id, "bread")
    with pytest.raises(NotFoundError):
        await documents.upload(bob.id, c.id, "x.txt", b"hello")
    prompt = system_prompt("Be brief.", "fr", passages)
    assert prompt.startswith(f"Be brief.\n\n{ANSWER_IN['fr']}") and "Réponds en français." in prompt
    assert "[1] (lighthouse.txt)\n" in prompt and "[2] (lighthouse.txt)" in prompt
    await documents.delete(alice.id, c.id, info.id)
    assert await documents.retrieve(alice.id, c.id, "bread") == []


async def test_document_embeddings_are_metered_to_the_users_project(
    db: Database, users: tuple[UserService, UserInfo, UserInfo], gateway: Gateway
) -> None:
    _, alice, _ = users
    c = await ConversationService(db).create(alice.id, model="m")
    documents = DocumentService(db, ChatSettings(chunk_chars=100, chunk_overlap=0), gateway.embedder)
    info = await documents.upload(alice.id, c.id, "l.txt", LIGHTHOUSE.encode(), project_id=alice.project_id)
    assert info.embedding_model == "bag"
    [row] = await ledger(gateway.tenancy, alice.project_id)
    words = len(LIGHTHOUSE.split())
    assert (row.status, row.deployment, row.model, row.user_id) == ("success", "bag", "bag-model", alice.id)
    assert row.prompt_tokens == words and row.completion_tokens == 0 and row.cost_micros == words
    await documents.retrieve(alice.id, c.id, "bakery bread", project_id=alice.project_id)
    rows = await ledger(gateway.tenancy, alice.project_id)
    assert len(rows) == 2 and {r.user_id for r in rows} == {alice.id}


async def test_a_refused_embedding_falls_back_to_bm25(
    db: Database, users: tuple[UserService, UserInfo, UserInfo], gateway: Gateway
) -> None:
    _, alice, _ = users
    c = await ConversationService(db).create(alice.id, model="m")
    project = await gateway.tenancy.projects.create("broke", monthly_budget_micros=1)
    documents = DocumentService(db, ChatSettings(chunk_chars=100, chunk_overlap=0), gateway.embedder)
    info = await documents.upload(alice.id, c.id, "l.txt", LIGHTHOUSE.encode(), project_id=project.id)
    assert info.embedding_model is None  # over budget: stored without vectors, ranked by BM25
    passages = await documents.retrieve(alice.id, c.id, "bakery bread", project_id=project.id)
    assert "bakery" in passages[0].text


async def test_document_count_is_limited(db: Database, users: tuple[UserService, UserInfo, UserInfo]) -> None:
    _, alice, _ = users
    c = await ConversationService(db).create(alice.id, model="m")
    documents = DocumentService(db, ChatSettings(max_documents=1), _NoEmbeddings())
    await documents.upload(alice.id, c.id, "a.txt", b"first")
    with pytest.raises(InvalidRequestError):
        await documents.upload(alice.id, c.id, "b.txt", b"second")
