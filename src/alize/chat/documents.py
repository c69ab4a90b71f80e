"""Documents of a conversation: upload (extract → chunk → embed → store) and retrieval.

Embeddings come from the embeddings deployment named in settings (``chat.embedding_model``),
called through the gateway's policy pipeline like any ``/v1/embeddings`` request: the user's
project is limited, charged and metered for them (one ledger row per batch, naming the chat
user). When that deployment does not exist, is refused (limits, budget) or fails, passages are
stored without vectors and retrieval falls back to BM25 (see
``alize.chat.retrieval``): documents always work, with or without an embeddings model. A
conversation is ranked by cosine similarity only when every one of its passages carries a
vector from the model available now; otherwise the whole set is ranked by BM25, so scores are
never mixed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime

from alize.chat.chunking import chunk_text
from alize.chat.conversations import DocumentInfo, document_info
from alize.chat.extract import extract
from alize.chat.retrieval import bm25_scores, cosine_scores, pack_vector, top_k, unpack_vector
from alize.config import ChatSettings
from alize.deployments.manager import DeploymentManager
from alize.errors import AlizeError, InvalidRequestError, NotFoundError
from alize.gateway.pipeline import PolicyPipeline
from alize.store.chat_models import ChatChunk, ChatDocument
from alize.store.database import Database
from alize.store.ids import new_id, utc_now
from alize.store.repositories.chat import ConversationRepository, DocumentRepository

log = logging.getLogger(__name__)

EMBED_BATCH = 32


@dataclass(frozen=True, slots=True)
class Passage:
    """A retrieved passage, numbered as the prompt and the citations show it."""

    n: int
    chunk_id: str
    document: str
    text: str
    score: float

    def citation(self) -> dict[str, object]:
        return {"n": self.n, "chunk_id": self.chunk_id, "document": self.document, "text": self.text}


class Embedder:
    """The embeddings deployment, looked up on each use (it may be added or removed at run time)
    and called through the pipeline on the chat user's behalf."""

    def __init__(self, deployments: DeploymentManager, pipeline: PolicyPipeline, model: str) -> None:
        self._deployments = deployments
        self._pipeline = pipeline
        self.model = model

    def available(self) -> bool:
        return any(d.name == self.model for d in self._deployments.list())

    async def embed(
        self, texts: Sequence[str], *, user_id: str, project_id: str | None = None
    ) -> list[list[float]] | None:
        """One vector per text, or None when no embeddings deployment can serve (BM25 then)."""
        if not texts or not self.available():
            return None
        vectors: list[list[float]] = []
        try:
            for start in range(0, len(texts), EMBED_BATCH):
                result = await self._pipeline.embed(
                    self.model,
                    texts[start : start + EMBED_BATCH],
                    f"user:{user_id}",
                    None,
                    project_id=project_id,
                    user_id=user_id,
                )
                vectors.extend(list(v) for v in result.vectors)
        except AlizeError as exc:
            log.warning("embeddings deployment %s failed, ranking by BM25: %s", self.model, exc.message)
            return None
        return vectors if len(vectors) == len(texts) else None


class DocumentService:
    def __init__(
        self,
        db: Database,
        settings: ChatSettings,
        embedder: Embedder,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._db = db
        self._settings = settings
        self._embedder = embedder
        self._clock = clock

    async def _owned(self, user_id: str, conversation_id: str) -> None:
        async with self._db.transaction() as session:
            if await ConversationRepository(session).get(user_id, conversation_id) is None:
                raise NotFoundError(
                    f"Conversation '{conversation_id}' not found.", code="conversation_not_found"
                )

    async def upload(
        self, user_id: str, conversation_id: str, name: str, data: bytes, *, project_id: str | None = None
    ) -> DocumentInfo:
        """Extract, chunk, embed (billed to ``project_id``, the user's project) and store."""
        await self._owned(user_id, conversation_id)
        name = (name.replace("\\", "/").rsplit("/", 1)[-1].strip() or "document")[:255]
        settings = self._settings
        extracted = await asyncio.to_thread(
            extract, name, data, max_bytes=settings.max_upload_bytes, max_pages=settings.max_pdf_pages
        )
        chunks = chunk_text(extracted.text, settings.chunk_chars, settings.chunk_overlap)
        vectors = await self._embedder.embed(chunks, user_id=user_id, project_id=project_id)
        document = ChatDocument(
            id=new_id("doc"),
            conversation_id=conversation_id,
            name=name,
            media_type=extracted.media_type,
            size_bytes=len(data),
            pages=extracted.pages,
            embedding_model=self._embedder.model if vectors is not None else None,
            created_at=self._clock(),
        )
        rows = [
            ChatChunk(
                id=new_id("chunk"),
                document_id=document.id,
                seq=i,
                text=text,
                embedding=pack_vector(vectors[i]) if vectors is not None else None,
            )
            for i, text in enumerate(chunks)
        ]
        async with self._db.transaction() as session:
            repo = DocumentRepository(session)
            if await ConversationRepository(session).get(user_id, conversation_id) is None:
                raise NotFoundError(
                    f"Conversation '{conversation_id}' not found.", code="conversation_not_found"
                )
            if await repo.count(conversation_id) >= settings.max_documents:
                raise InvalidRequestError(
                    f"A conversation holds at most {settings.max_documents} documents.",
                    param="file",
                    code="too_many_documents",
                )
            await repo.add(document, rows)
        return document_info(document)

    async def delete(self, user_id: str, conversation_id: str, document_id: str) -> None:
        await self._owned(user_id, conversation_id)
        async with self._db.transaction() as session:
            if not await DocumentRepository(session).delete(conversation_id, document_id):
                raise NotFoundError(f"Document '{document_id}' not found.")

    async def retrieve(
        self,
        user_id: str,
        conversation_id: str,
        query: str,
        k: int | None = None,
        *,
        project_id: str | None = None,
    ) -> list[Passage]:
        """The ``k`` passages of the conversation's documents most relevant to ``query``; the
        query's embedding is billed to ``project_id`` like the upload's."""
        await self._owned(user_id, conversation_id)
        async with self._db.transaction() as session:
            found = await DocumentRepository(session).chunks(conversation_id)
        if not found:
            return []
        k = k or self._settings.top_k
        texts = [chunk.text for chunk, _ in found]
        scores: list[float] | None = None
        model = self._embedder.model
        if all(doc.embedding_model == model and chunk.embedding for chunk, doc in found):
            query_vector = await self._embedder.embed([query], user_id=user_id, project_id=project_id)
            if query_vector is not None:
                vectors = [unpack_vector(chunk.embedding or b"") for chunk, _ in found]
                scores = cosine_scores(query_vector[0], vectors)
        if scores is None:
            scores = bm25_scores(query, texts)
        return [
            Passage(
                n=rank + 1, chunk_id=found[i][0].id, document=found[i][1].name, text=texts[i], score=scores[i]
            )
            for rank, i in enumerate(top_k(scores, k))
        ]
