"""A real PostgreSQL server for the tests: Debian's postgresql package, a cluster made with
initdb in a temporary folder, started with pg_ctl on a free loopback port and stopped after.
Run as root, the server runs as the unprivileged ``postgres`` user (PostgreSQL refuses root),
so its folder is made directly in the system's temporary folder, which that user can reach
(pytest's own temporary folders are private to root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

INITDB = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))


class PostgresServer:
    def __init__(self):
        assert INITDB, "Debian's postgresql is needed (`make postgres` installs it)"
        self.bin = Path(INITDB[-1]).parent
        self.folder = folder = Path(tempfile.mkdtemp(prefix="lookalike-postgres-"))
        self.data, self.socket_dir = folder / "data", folder / "sockets"
        self.socket_dir.mkdir(parents=True)
        self.port = free_port()
        self.user = "postgres" if os.getuid() == 0 else None
        if self.user:
            account = pwd.getpwnam(self.user)
            for path in (folder, self.socket_dir):
                os.chown(path, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(folder / "server.log"),
                  "-o", f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
                        "-c fsync=off", "start")
        self._databases = 0

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def new_database(self) -> str:
        """A new, empty database; its SQLAlchemy URL."""
        self._databases += 1
        name = f"lookalike{self._databases}"
        self._run("createdb", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name)
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
