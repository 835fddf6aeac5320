"""A real PostgreSQL server for the import tests, started once per session on loopback.

The server runs from Debian's binaries (``initdb`` on PATH or under /usr/lib/postgresql/*/bin; ``.ci/run``
installs the ``postgresql`` package when they are missing) as an unprivileged user. Each test gets its
own database. Rows are written with psycopg, a different driver from the ADBC reader under test.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest


def _bindir() -> Path | None:
    initdb = shutil.which("initdb") or next(iter(sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))), None)
    return Path(initdb).resolve().parent if initdb else None


@dataclass(frozen=True)
class Server:
    port: int
    root: Path

    def dsn(self, dbname: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/{dbname}"


@pytest.fixture(scope="session")
def pg_server() -> Iterator[Server]:
    pytest.importorskip("adbc_driver_postgresql", reason="the postgres extra is not installed (.ci/setup installs it)")
    pytest.importorskip("psycopg", reason="the postgres extra is not installed (.ci/setup installs it)")
    bindir = _bindir()
    if bindir is None:
        pytest.skip("PostgreSQL binaries not found and not installable here (.ci/run installs Debian's postgresql)")
    as_user: list[str] = []
    root = Path(tempfile.mkdtemp(prefix="astra-lake-pg-"))
    if os.geteuid() == 0:  # the server refuses to run as root
        user = next((u for u in ("postgres", "nobody") if _has_user(u)), None)
        if user is None:
            pytest.skip("running as root and no unprivileged user (postgres/nobody) to run PostgreSQL as")
        shutil.chown(root, user)
        as_user = ["runuser", "-u", user, "--"]
    data = root / "data"
    initdb = [*as_user, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres"]
    subprocess.run(initdb, check=True, capture_output=True)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    opts = f"-p {port} -c listen_addresses=127.0.0.1 -k {root} -c fsync=off -c shared_buffers=64MB"
    subprocess.run(
        [*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-o", opts, "-w", "-l", str(root / "log"), "start"],
        check=True,
        capture_output=True,
    )
    try:
        yield Server(port, root)
    finally:
        subprocess.run([*as_user, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def _has_user(name: str) -> bool:
    try:
        pwd.getpwnam(name)
    except KeyError:
        return False
    return True


class AstraDb:
    """One fresh database: run DDL, insert rows (psycopg binds NaN, arrays, bytea, 64-bit ints)."""

    def __init__(self, server: Server, name: str) -> None:
        import psycopg

        self.dsn = server.dsn(name)
        self.con = psycopg.connect(self.dsn, autocommit=True)

    def execute(self, sql: str) -> None:
        self.con.execute(sql)  # type: ignore[arg-type]

    def insert(self, table: str, rows: list[dict[str, Any]]) -> None:
        cols = list(rows[0])
        names = ", ".join(f'"{c}"' for c in cols)
        marks = ", ".join(["%s"] * len(cols))
        with self.con.cursor() as cur:
            cur.executemany(f"INSERT INTO {table} ({names}) VALUES ({marks})", [[r[c] for c in cols] for r in rows])  # type: ignore[arg-type]


@pytest.fixture()
def astra_db(pg_server: Server, request: pytest.FixtureRequest) -> Iterator[AstraDb]:
    import psycopg

    name = "t_" + "".join(c if c.isalnum() else "_" for c in request.node.name.lower())[:50]
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")  # type: ignore[arg-type]
        admin.execute(f"CREATE DATABASE {name}")  # type: ignore[arg-type]
    db = AstraDb(pg_server, name)
    try:
        yield db
    finally:
        db.con.close()
