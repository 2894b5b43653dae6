"""A real PostgreSQL server for the tests: Debian's postgresql package, a cluster made with
initdb in a temporary folder, started with pg_ctl on a free loopback port and stopped after.
Run as root, the server runs as the unprivileged ``postgres`` user (PostgreSQL refuses root),
so its folder is made directly in the system's temporary folder, which that user can reach
(pytest's own temporary folders are private to root). Connections over TCP need the password,
as on a real server; the tools the fixtures run use the server's socket instead."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

INITDB = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
PASSWORD = "catalogue-secret"


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
        password_file = folder / "password"
        password_file.write_text(PASSWORD)
        if self.user:
            os.chown(password_file, account.pw_uid, account.pw_gid)
        self._run("initdb", "-D", str(self.data), "--auth-local=trust",
                  "--auth-host=scram-sha-256", f"--pwfile={password_file}", "-U", "postgres",
                  "--no-sync", "-E", "UTF8")
        self.start()
        self._databases = 0

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-l", str(self.folder / "server.log"),
                  "-o", f"-p {self.port} -k {self.socket_dir} -c listen_addresses=127.0.0.1 "
                        "-c fsync=off", "start")

    def restart(self, down_seconds: float) -> None:
        """Stop the server (every connection dropped), leave it down, start it again."""
        self.stop_only()
        time.sleep(down_seconds)
        self.start()

    def stop_only(self) -> None:
        """Stop the server, keeping its data (``start`` brings it back)."""
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")

    def _run(self, program: str, *args: str) -> None:
        command = [str(self.bin / program), *args]
        if self.user:
            command = ["runuser", "-u", self.user, "--", *command]
        subprocess.run(command, check=True, capture_output=True, timeout=120)

    def new_database(self, password: str = PASSWORD) -> str:
        """A new, empty database; its SQLAlchemy URL (with ``password``)."""
        self._databases += 1
        name = f"lookalike{self._databases}"
        self._run("createdb", "-h", str(self.socket_dir), "-p", str(self.port), "-U", "postgres",
                  name)
        return f"postgresql+psycopg://postgres:{password}@127.0.0.1:{self.port}/{name}"

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-w", "-m", "fast", "stop")
        shutil.rmtree(self.folder, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]
