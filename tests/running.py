"""Helpers for tests that run ``lookalike`` as a subprocess, as a user would."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

LOOKALIKE = str(Path(sys.executable).parent / "lookalike")
TIMEOUT = 120


class RunningCommand:
    """``lookalike COMMAND`` on a workspace as a subprocess, its output in ``log_name``."""

    def __init__(self, workspace, command: str, args: tuple[str, ...], log_name: str):
        self.workspace = workspace
        self.log_path = workspace.root / log_name
        self.log_file = open(self.log_path, "a")  # noqa: SIM115 - lives as long as the process
        self.process = subprocess.Popen(
            [LOOKALIKE, command, "--config", str(workspace.config), *args],
            stdout=self.log_file, stderr=subprocess.STDOUT,
        )

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_for(self, condition, what: str, timeout: float = TIMEOUT):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if condition():
                return
            assert self.process.poll() is None, f"lookalike exited:\n{self.log()}"
            time.sleep(0.2)
        pytest.fail(f"timed out waiting for {what}; log:\n{self.log()[-5000:]}")

    def stop(self, signum: int = signal.SIGTERM) -> int:
        self.process.send_signal(signum)
        try:
            return self.process.wait(timeout=30)
        finally:
            self.log_file.close()

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait()
        self.log_file.close()


class RunningService(RunningCommand):
    """``lookalike run`` on a workspace, its log in ``service.log``."""

    def __init__(self, workspace, wait: bool = True, args: tuple[str, ...] = ()):
        super().__init__(workspace, "run", args, "service.log")
        if wait:
            self.wait_for(lambda: "watching" in self.log(), "the service to start")


def free_port() -> int:
    """A TCP port nothing listens on at the moment."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def query_db(workspace, sql: str, *params) -> list[tuple]:
    """Rows of ``sql`` on the workspace's SQLite file, read as any other program would."""
    connection = sqlite3.connect(workspace.root / "lookalike.db", timeout=30)
    try:
        return connection.execute(sql, params).fetchall()
    except sqlite3.OperationalError as exc:  # the service has not created the schema yet
        if "no such table" in str(exc):
            return []
        raise
    finally:
        connection.close()


def stored(workspace) -> dict[str, tuple[str, str]]:
    """path -> (status, sha256) as the store holds it now."""
    rows = query_db(workspace, "SELECT path, status, sha256 FROM images")
    return {path: (status, sha) for path, status, sha in rows}


def lookalike(workspace, *args: str, env=None) -> subprocess.CompletedProcess:
    return subprocess.run([LOOKALIKE, *args, "--config", str(workspace.config)],
                          capture_output=True, text=True, timeout=TIMEOUT, env=env)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def answer_of(workspace, name: str) -> dict | None:
    path = workspace.inbox / f"{name}.neighbours.json"
    return json.loads(path.read_text()) if path.exists() else None
