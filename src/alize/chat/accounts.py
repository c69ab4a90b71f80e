"""People who log in to the chat: created by an administrator, passwords hashed with argon2id.

Only the argon2 hash is stored. Authentication spends the same work whether or not the email
exists (a dummy hash is verified), so timing does not tell which addresses have accounts.
Hashing runs in :class:`~alize.chat.passwords.PasswordPool`, never on the event loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from argon2 import PasswordHasher
from sqlalchemy.exc import IntegrityError

from alize.chat.passwords import PasswordPool
from alize.errors import AuthenticationError, ConflictError, NotFoundError, ValidationFailedError
from alize.store.chat_models import ChatUser
from alize.store.database import Database
from alize.store.ids import new_id, utc_now
from alize.store.repositories import ProjectRepository
from alize.store.repositories.chat import ChatSessionRepository, ChatUserRepository

LANGUAGES = ("en", "fr", "de", "es", "it")
MIN_PASSWORD = 8


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: str
    project_id: str
    email: str
    language: str | None


@dataclass(frozen=True, slots=True)
class UserSummary:
    """What an administrator sees of an account (never its password hash)."""

    id: str
    project_id: str
    email: str
    language: str | None
    created_at: datetime
    disabled_at: datetime | None


def _info(row: ChatUser) -> UserInfo:
    return UserInfo(id=row.id, project_id=row.project_id, email=row.email, language=row.language)


def _summary(row: ChatUser) -> UserSummary:
    return UserSummary(row.id, row.project_id, row.email, row.language, row.created_at, row.disabled_at)


def user_not_found(user_id: str) -> NotFoundError:
    return NotFoundError(f"Chat user '{user_id}' not found.", param="user_id")


def normalise_email(email: str) -> str:
    email = email.strip().lower()
    local, _, domain = email.partition("@")
    if not local or not domain or len(email) > 320 or any(c.isspace() for c in email):
        raise ValidationFailedError("a valid email address is required", param="email")
    return email


class UserService:
    def __init__(
        self,
        db: Database,
        hasher: PasswordHasher | PasswordPool | None = None,
        *,
        clock: Callable[[], datetime] = utc_now,
    ) -> None:
        self._db = db
        self.passwords = hasher if isinstance(hasher, PasswordPool) else PasswordPool(hasher)
        self._clock = clock
        self._dummy_hash: str | None = None

    async def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = await self.passwords.hash("not a password of anyone")
        return self._dummy_hash

    async def create(self, project: str, email: str, password: str) -> UserInfo:
        """A user in ``project`` (its id or name); 409 when the email is taken."""
        email = normalise_email(email)
        if len(password) < MIN_PASSWORD:
            raise ValidationFailedError(
                f"passwords need at least {MIN_PASSWORD} characters", param="password"
            )
        password_hash = await self.passwords.hash(password)
        try:
            async with self._db.transaction() as session:
                projects = ProjectRepository(session)
                row = await projects.get(project) or await projects.get_by_name(project)
                if row is None:
                    raise NotFoundError(f"Project '{project}' not found.", param="project")
                user = ChatUser(
                    id=new_id("user"),
                    project_id=row.id,
                    email=email,
                    password_hash=password_hash,
                    language=None,
                    created_at=self._clock(),
                    disabled_at=None,
                )
                await ChatUserRepository(session).add(user)
        except IntegrityError:
            raise ConflictError(f"A user with email '{email}' already exists.", param="email") from None
        return _info(user)

    async def authenticate(self, email: str, password: str) -> UserInfo:
        """The user with these credentials, or 401 (the same error for every failure)."""
        try:
            email = normalise_email(email)
        except ValidationFailedError:
            email = ""
        async with self._db.transaction() as session:
            user = await ChatUserRepository(session).get_by_email(email) if email else None
        live = user is not None and user.disabled_at is None
        stored = user.password_hash if user is not None and live else await self._dummy()
        ok = await self.passwords.verify(stored, password) and live
        if not ok or user is None:
            raise AuthenticationError("Wrong email or password.", code="invalid_credentials")
        return _info(user)

    async def id_of(self, email: str) -> str | None:
        """The id of the account with this email, if any (for audit records, never shown)."""
        try:
            email = normalise_email(email)
        except ValidationFailedError:
            return None
        async with self._db.transaction() as session:
            user = await ChatUserRepository(session).get_by_email(email)
        return user.id if user is not None else None

    async def list(self, project_id: str | None = None) -> list[UserSummary]:
        """Accounts of one project (``None``: of every project)."""
        async with self._db.transaction() as session:
            return [_summary(u) for u in await ChatUserRepository(session).list(project_id)]

    async def get(self, user_id: str, *, project_id: str | None = None) -> UserSummary:
        """One account; 404 when it does not exist or lies outside ``project_id``."""
        async with self._db.transaction() as session:
            user = await ChatUserRepository(session).get(user_id)
        if user is None or (project_id is not None and user.project_id != project_id):
            raise user_not_found(user_id)
        return _summary(user)

    async def set_disabled(
        self, user_id: str, disabled: bool, *, project_id: str | None = None
    ) -> UserSummary:
        """Disable (every session ends at once: the next request is 401) or enable an account."""
        await self.get(user_id, project_id=project_id)
        async with self._db.transaction() as session:
            user = await ChatUserRepository(session).get(user_id)
            if user is None:
                raise user_not_found(user_id)
            if disabled and user.disabled_at is None:
                user.disabled_at = self._clock()
                await ChatSessionRepository(session).delete_of_user(user_id)
            elif not disabled:
                user.disabled_at = None
            await session.flush()
            return _summary(user)

    async def set_language(self, user_id: str, language: str | None) -> UserInfo:
        if language is not None and language not in LANGUAGES:
            raise ValidationFailedError(f"language must be one of {', '.join(LANGUAGES)}", param="language")
        async with self._db.transaction() as session:
            user = await ChatUserRepository(session).get(user_id)
            if user is None:
                raise NotFoundError("user not found")
            user.language = language
            await session.flush()
            return _info(user)
