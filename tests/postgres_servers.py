"""PostgreSQL for the store's tests: a database of its own on the machine's server for a test (a
unique name, dropped after), and a private server in a temp directory for the tests that stop and
start one (initdb, run as the `postgres` user when the tests run as root, which initdb refuses)."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

MACHINE = "postgresql://postgres@127.0.0.1:5432"


def _binaries() -> Path:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not versions:
        raise RuntimeError("PostgreSQL's server binaries (initdb) are not installed")
    return versions[-1].parent


def create_database(server: str = MACHINE) -> str:
    """A new, empty database on `server`; its URL."""
    name = f"oncall_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    return f"{server}/{name}"


def drop_database(url: str) -> None:
    server, _, name = url.rpartition("/")
    with psycopg.connect(f"{server}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
def postgres_url() -> Iterator[str]:
    """A database of this test's own on the machine's PostgreSQL."""
    url = create_database()
    yield url
    drop_database(url)


class PrivateServer:
    """A PostgreSQL server of the test's own, on a free port: stop() and start() it at will."""

    def __init__(self, directory: Path):
        self.directory = directory
        self.data = directory / "data"
        self.port = _free_port()
        self.bin = _binaries()
        self.user = "postgres" if os.geteuid() == 0 else getpass.getuser()
        directory.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            shutil.chown(directory, self.user)
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync", "-E", "UTF8")
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}"

    def _run(self, program: str, *args: str) -> None:
        argv = [str(self.bin / program), *args]
        if os.geteuid() == 0:
            argv = ["runuser", "-u", self.user, "--", *argv]
        subprocess.run(argv, check=True, capture_output=True, timeout=60)

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.directory / "log"), "-w", "-t", "30", "-o",
                  f"-p {self.port} -k {self.directory} -c listen_addresses=127.0.0.1 -c fsync=off", "start")
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                psycopg.connect(f"{self.url}/postgres", connect_timeout=2).close()
                return
            except psycopg.OperationalError:
                time.sleep(0.1)
        raise RuntimeError(f"the private PostgreSQL did not start: {(self.directory / 'log').read_text()}")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def private_postgres() -> Iterator[PrivateServer]:
    """A PostgreSQL server of this test's own, started; stopped and removed at the end whatever happened.

    Its directory is not under pytest's temp root, which only root may enter."""
    directory = Path(tempfile.mkdtemp(prefix="oncall-pg-"))
    directory.chmod(0o755)
    server = PrivateServer(directory / "server")
    server.start()
    try:
        yield server
    finally:
        try:
            server.stop()
        except subprocess.CalledProcessError:
            pass   # stopped by the test already
        shutil.rmtree(directory, ignore_errors=True)
