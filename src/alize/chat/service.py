"""Every chat service, built once per app in the lifespan and reached through ``Services.chat``."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from alize.catalog.packs.card import chat_rank, common_tasks
from alize.chat.accounts import UserService
from alize.chat.conversations import ConversationService
from alize.chat.documents import DocumentService, Embedder
from alize.chat.language import LanguageGuesser
from alize.chat.login import LoginService
from alize.chat.passwords import PasswordPool
from alize.chat.privacy import PrivacyService
from alize.chat.replies import ReplyService
from alize.chat.sessions import SessionService
from alize.chat.throttle import LoginThrottle
from alize.config import ChatSettings
from alize.deployments.manager import DeploymentManager
from alize.gateway.audit import AuditService
from alize.gateway.pipeline import PolicyPipeline
from alize.store.database import Database


@dataclass(frozen=True, slots=True)
class ChatServices:
    settings: ChatSettings
    users: UserService
    sessions: SessionService
    conversations: ConversationService
    documents: DocumentService
    replies: ReplyService
    embedder: Embedder
    login: LoginService
    #: export and erasure of a user's data (GDPR)
    privacy: PrivacyService
    #: model id -> rank as the default model (the model packs' ``chat_preference``)
    preferences: Mapping[str, int] = field(default_factory=dict)

    def close(self) -> None:
        """Stop the password-hashing threads (at shutdown)."""
        self.users.passwords.close()

    def chat_models(self) -> list[str]:
        """Deployments a conversation can use: all but the embeddings one."""
        return [
            d.name
            for d in self.replies.deployments.list()
            if d.name != self.embedder.model and _chat_capable(d.spec.card)
        ]

    def default_model(self) -> str | None:
        """The deployment a new conversation gets: ``chat.default_model`` when it is deployed,
        else the best chat model deployed (see :func:`alize.catalog.packs.card.chat_rank`)."""
        names = set(self.chat_models())
        if self.settings.default_model in names:
            return self.settings.default_model
        candidates = [d for d in self.replies.deployments.list() if d.name in names]
        if not candidates:
            return None
        cards = {d.name: {**(d.spec.card or {}), "id": d.spec.model_id} for d in candidates}
        tasks = common_tasks(cards.values())
        best = min(
            candidates,
            key=lambda d: (
                chat_rank(cards[d.name], self.preferences, tasks),
                d.name,  # two deployments of one model: the same one every time
            ),
        )
        return best.name


def _chat_capable(card: dict[str, object] | None) -> bool:
    if not card:
        return True
    tasks = card.get("tasks")
    return not (isinstance(tasks, list) and tasks and "chat" not in tasks and "embeddings" in tasks)


def build_chat_services(
    settings: ChatSettings,
    db: Database,
    deployments: DeploymentManager,
    pipeline: PolicyPipeline,
    audit: AuditService,
    secret: bytes,
    preferences: Mapping[str, int] | None = None,
) -> ChatServices:
    passwords = PasswordPool(workers=settings.password_workers, queue_max=settings.password_queue_max)
    users = UserService(db, passwords)
    throttle = LoginThrottle(
        max_failures=settings.login_max_failures,
        max_failures_per_address=settings.login_max_failures_per_address,
        window_s=settings.login_window_s,
        lockout_s=settings.login_lockout_s,
    )
    conversations = ConversationService(db)
    embedder = Embedder(deployments, pipeline, settings.embedding_model)
    documents = DocumentService(db, settings, embedder)
    replies = ReplyService(settings, conversations, documents, pipeline, deployments, LanguageGuesser())
    return ChatServices(
        settings=settings,
        users=users,
        sessions=SessionService(db, settings.session_ttl_s),
        conversations=conversations,
        documents=documents,
        replies=replies,
        embedder=embedder,
        login=LoginService(users, throttle, audit),
        privacy=PrivacyService(db, conversations, secret),
        preferences=dict(preferences or {}),
    )
