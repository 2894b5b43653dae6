"""The inbox's answers: where each query's JSON goes, and whether a query is answered.

An answer records the sha256 of the query it answers, so a query is answered again exactly
when its content changed, whatever its mtime says (``mv``, ``cp -p``, rsync and unzip keep
old mtimes).
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from lookalike.daemon.files import ANSWER_SUFFIX

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
