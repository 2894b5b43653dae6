"""The SQLAlchemy tables: one row per image file, the model ids they refer to, a key/value
table for store metadata, the removals log, and the claims and nodes of the processes that
share the store."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import BigInteger, Index, LargeBinary, String
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


def utcnow() -> datetime:
    return datetime.now(UTC)


class Base(DeclarativeBase):
    pass


class ImageRecord(Base):
    """An image file under images_dir: its content hash, stat, and vector or error."""

    __tablename__ = "images"
    __table_args__ = (
        Index("ix_images_sha256_model", "sha256", "model_id"),
        # Covers counting, listing and browsing one model's indexed paths without the vectors.
        Index("ix_images_model_status_path", "model_id", "status", "path"),
        # Covers counting the rows by status and model, and the indexed ones by how their
        # backgrounds were removed, in one scan (`status`).
        Index("ix_images_status_removal_model", "status", "removal", "model_id"),
    )

    id: Mapped[int] = mapped_column(primary_key=True)
    path: Mapped[str] = mapped_column(unique=True)  # POSIX, relative to images_dir
    sha256: Mapped[str] = mapped_column(String(64))
    # 64 bits on every backend (PostgreSQL's INTEGER has 32: a nanosecond mtime overflows it).
    size: Mapped[int] = mapped_column(BigInteger)
    mtime_ns: Mapped[int] = mapped_column(BigInteger)
    width: Mapped[int | None]
    height: Mapped[int | None]
    # The pipeline's model id, by its key in ``models``: the id, about 90 characters, once
    # per row and per index would be a fifth of a million-image store.
    model_id: Mapped[int | None]
    # The store's write generation when this row was last written: readers that follow the
    # store (the UI) re-read only rows newer than what they hold, without trusting clocks.
    generation: Mapped[int] = mapped_column(default=0, server_default="0", index=True)
    vector: Mapped[bytes | None] = mapped_column(LargeBinary)
    # The way the background was removed (the remover's id, or the path "auto" took).
    removal: Mapped[str | None] = mapped_column(String(96))
    status: Mapped[str] = mapped_column(String(16))
    error: Mapped[str | None]
    # A failed file: the pipeline's reading limits it failed under (retried when they change).
    limits: Mapped[str | None]
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class ModelName(Base):
    """A pipeline's model id (its steps' ids joined), stored once; rows refer to its key."""

    __tablename__ = "models"

    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(unique=True)


class Meta(Base):
    """Store-wide facts: schema version, write generation, last index refresh."""

    __tablename__ = "meta"

    key: Mapped[str] = mapped_column(primary_key=True)
    value: Mapped[str]


class Removal(Base):
    """A path taken out of ``images`` (deleted, or moved away) at a write generation: readers
    that follow the store forget exactly these. Only recent generations are kept."""

    __tablename__ = "removals"

    id: Mapped[int] = mapped_column(primary_key=True)
    generation: Mapped[int] = mapped_column(index=True)
    path: Mapped[str]


class Claim(Base):
    """Work one node has taken on (a file, a content hash, an inbox query), until ``expires``
    (seconds on the database's clock): the node renews it while it works, and another node
    may take it over once it has run out (the first node died)."""

    __tablename__ = "claims"

    key: Mapped[str] = mapped_column(primary_key=True)
    node: Mapped[str] = mapped_column(String(32), index=True)
    expires: Mapped[float]


class Node(Base):
    """A process working on the store (`lookalike run` or `index`), as `lookalike status`
    lists it; times are seconds on the database's clock."""

    __tablename__ = "nodes"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    host: Mapped[str]
    pid: Mapped[int]
    # Where ``pid`` means something: this boot of this machine's pid namespace (containers on
    # one host name have pid spaces of their own).
    pid_space: Mapped[str | None]
    limits: Mapped[str | None]  # the pipeline's reading limits: equal on every node
    command: Mapped[str] = mapped_column(String(16))
    model: Mapped[str]
    since: Mapped[float]
    heartbeat: Mapped[float]
    lease: Mapped[float]  # its claims' lease: not heard from for a few, it is gone
    queue: Mapped[int] = mapped_column(default=0)
    embedded: Mapped[int] = mapped_column(default=0)
    last_problem: Mapped[str | None]
    http: Mapped[str | None]  # the URL it answers HTTP on, if it does
    onnx_providers: Mapped[str | None]  # what runs its ONNX models, once they are loaded
