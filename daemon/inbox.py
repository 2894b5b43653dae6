"""The inbox's answers: where each query's JSON goes, whether a query is answered, and the
answering itself (``InboxAnswerer``).

An answer records the sha256 of the query it answers, so a query is answered again exactly
when its content changed, whatever its mtime says (``mv``, ``cp -p``, rsync and unzip keep
old mtimes). A shared inbox gets one answer per query, whichever node claims it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

from lookalike.base.atomic import write_atomically
from lookalike.base.errors import LookalikeError, TransientError, UnreadableFile
from lookalike.base.files import ANSWER_SUFFIX, TEXT_SUFFIX, stored_name
from lookalike.daemon.retry import RetriedWrites, RetryTimes
from lookalike.pipeline.pipeline import Pipeline
from lookalike.search.follow import FollowedIndex
from lookalike.search.query import answer_queries, answer_texts, read_text_query
from lookalike.store.nodes import ThisNode

log = logging.getLogger(__name__)

# The longest file name most filesystems take (bytes); pathconf says when it is less.
NAME_MAX = 255
DIGEST_CHARS = 8


def answer_path(query: Path) -> Path:
    """``<query name>.neighbours.json`` beside the query; when that name would be too long
    for the filesystem, the query name is cut (at a character boundary) and ``~`` plus the
    first 8 hex digits of the sha256 of its full name are put before the suffix."""
    name = os.fsencode(query.name)
    limit = _name_max(query.parent)
    if len(name) + len(ANSWER_SUFFIX) <= limit:
        return query.with_name(query.name + ANSWER_SUFFIX)
    digest = hashlib.sha256(name).hexdigest()[:DIGEST_CHARS]
    keep = limit - len(ANSWER_SUFFIX) - 1 - DIGEST_CHARS
    while keep and name[keep] & 0xC0 == 0x80:  # not inside a UTF-8 character
        keep -= 1
    return query.with_name(os.fsdecode(name[:keep]) + "~" + digest + ANSWER_SUFFIX)


def _name_max(folder: Path) -> int:
    try:
        return min(NAME_MAX, os.pathconf(folder, "PC_NAME_MAX"))
    except (OSError, ValueError):
        return NAME_MAX


def query_digest(query: Path) -> str | None:
    """The sha256 of the query's content, or None when it cannot be read."""
    try:
        with open(query, "rb") as file:
            return hashlib.file_digest(file, "sha256").hexdigest()
    except OSError:
        return None


def is_answered(query: Path, digest: str) -> bool:
    """True when the query's answer is there and answers this content."""
    try:
        answer = json.loads(answer_path(query).read_bytes())
    except (OSError, ValueError):
        return False
    return isinstance(answer, dict) and answer.get("query_sha256") == digest


class InboxAnswerer:
    """Answers settled queries from the service's index; an answer another node holds, or one
    that could not be written, is tried again later (``retries``)."""

    def __init__(self, pipeline: Pipeline, index: FollowedIndex, node: ThisNode, k: int,
                 retries: RetryTimes, claim_retry_seconds: float, write_retry_seconds: float):
        self.pipeline, self.index, self.node, self.k = pipeline, index, node, k
        self.retries = retries
        self.claim_retry_seconds, self.write_retry_seconds = (claim_retry_seconds,
                                                              write_retry_seconds)
        self._writes = RetriedWrites()

    def answer(self, paths: list[Path]) -> None:
        """Answer the queries not answered yet that this node could claim."""
        unanswered = {}
        for path in paths:
            digest = query_digest(path)
            if digest is not None and not is_answered(path, digest):
                unanswered[f"query:{stored_name(path.name)}:{digest}"] = path, digest
        held = self.node.claims.take(unanswered)
        try:
            self._answer_claimed([unanswered[key] for key in held])
        finally:
            self.node.claims.release(held)
        for key in unanswered.keys() - held:
            self.retries.later(unanswered[key][0], self.claim_retry_seconds)

    def _answer_claimed(self, claimed: list[tuple[Path, str]]) -> None:
        queries, texts = [], []
        for path, digest in claimed:
            if is_answered(path, digest):  # by the node that held it before
                continue
            is_text = path.suffix.lower() == TEXT_SUFFIX
            try:
                data = read_text_query(path) if is_text else self.pipeline.read_file(path)
            except UnreadableFile as exc:
                log.warning("query %s: %s", stored_name(path.name), exc)
                continue
            except LookalikeError as exc:  # not an image, not words: answered with why
                data = exc
            (texts if is_text else queries).append((path, digest, data))
        for answering, asked in ((answer_queries, queries), (answer_texts, texts)):
            if asked:
                self._answer_each(answering, asked)

    def _answer_each(self, answering, queries: list[tuple[Path, str, Any]]) -> None:
        try:
            answers = answering(self.pipeline, self.index,
                                [(stored_name(path.name), data) for path, _, data in queries],
                                self.k)
        except TransientError as exc:  # out of memory: the queries wait for a retry
            log.warning("queries %s: %s; trying again later",
                        ", ".join(stored_name(path.name) for path, _, _ in queries), exc)
            for path, _, _ in queries:
                self.retries.later(path, self.write_retry_seconds)
            return
        for (path, digest, _), answer in zip(queries, answers, strict=True):
            answer["query_sha256"] = digest
            self._write(path, answer)

    def _write(self, path: Path, answer: dict) -> None:
        try:
            write_atomically(answer_path(path), json.dumps(answer, indent=2).encode())
        except OSError as exc:  # the query stays unanswered until a retry works
            self._writes.failed(path, f"cannot write answer for {answer['query']}: {exc}")
            self.retries.later(path, self.write_retry_seconds)
            return
        self._writes.succeeded(path, f"answer for {answer['query']}")
        if "error" in answer:
            log.warning("answered %s with error: %s", answer["query"], answer["error"])
        else:
            log.info("answered %s (%d neighbours)", answer["query"], len(answer["neighbours"]))
