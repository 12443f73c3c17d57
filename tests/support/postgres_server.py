"""A throwaway PostgreSQL server for the tests and benchmarks, and fixtures that use it.

Where the server comes from, first that works:

1. ``WEBHOOKS_EMITTER_TEST_POSTGRES``: a libpq conninfo (``postgresql://...`` or
   ``host=... user=...``) of a server to use; its role must be allowed to create databases.
2. ``initdb``/``pg_ctl`` on ``PATH``, or under ``/usr/lib/postgresql/*/bin`` (the highest
   version; Debian's layout), or shipped inside the PyPI package ``pgserver`` if it is
   installed: a cluster is made in a temporary directory and started on a free port of
   127.0.0.1 (with its Unix socket in that directory), tuned for speed, not durability
   against power cuts (``fsync=off``). As root, the server runs as the ``postgres`` system
   user (or ``nobody``), since PostgreSQL refuses to run as root.

If neither is there, the ``postgres_dsn`` fixture fails (never skips) and says how to get a
server. Fixtures, registered with ``pytest_plugins = ["postgres_server"]`` or imported:

``postgres_dsn`` (session)
    conninfo of the server's maintenance database, for a superuser or a role that may
    create databases.
``postgres_server`` (session)
    the :class:`PostgresServer` (or :class:`ExternalServer`), whose ``restart()`` stops and
    starts it under the same port (an external server: every other session is ended, which
    is what clients see of a restart).
``pg_store_url`` (function)
    the conninfo of a fresh, empty database made for one test and dropped after it.

Run as a program (``python tests/support/postgres_server.py``) it starts a server and prints its
conninfo until interrupted.
"""

from __future__ import annotations

import contextlib
import glob
import importlib.util
import itertools
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Optional, Union

import pytest

ENV_VAR = "WEBHOOKS_EMITTER_TEST_POSTGRES"

#: What to do when no server can be had; the fixture fails with this.
HOW_TO_GET_ONE = (
    "These tests need a PostgreSQL server and found none. Either install PostgreSQL's "
    "server programs (Debian/Ubuntu: `apt-get install postgresql`; the tests find "
    "initdb/pg_ctl on PATH or under /usr/lib/postgresql/*/bin and start a private server), "
    "or `pip install pgserver` (PostgreSQL binaries from PyPI), or point "
    f"{ENV_VAR} at a server whose role may create databases, e.g. "
    f"{ENV_VAR}='postgresql://postgres@127.0.0.1:5432/postgres'."
)

#: Settings of the private server: fast and disposable.
SERVER_SETTINGS = {
    "listen_addresses": "'127.0.0.1'",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "200",
    "shared_buffers": "128MB",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
    "autovacuum_naptime": "10s",
}

#: Seconds a start, a stop or a readiness wait may take before it is a failure.
START_TIMEOUT = 60.0


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError:  # pragma: no cover - the test extra installs it
        pytest.fail(
            "these tests need psycopg 3: pip install -e '.[test]' (or "
            "pip install 'webhooks_emitter[postgres]')",
            pytrace=False,
        )
    return psycopg


def conninfo_to_url(conninfo: str, **changes: Any) -> str:
    """``conninfo`` (a URL or ``key=value`` string) as a ``postgresql://`` URL, with
    ``changes`` applied (``dbname="x"``)."""
    from psycopg.conninfo import conninfo_to_dict

    params = {key: str(value) for key, value in conninfo_to_dict(conninfo).items()}
    params.update({key: str(value) for key, value in changes.items()})
    user = params.pop("user", "")
    password = params.pop("password", None)
    host = params.pop("host", "")
    port = params.pop("port", "")
    dbname = params.pop("dbname", "")
    auth = urllib.parse.quote(user, safe="")
    if password is not None:
        auth += ":" + urllib.parse.quote(password, safe="")
    netloc = (auth + "@" if auth else "") + urllib.parse.quote(host, safe="")
    if port:
        netloc += f":{port}"
    query = urllib.parse.urlencode(params)
    url = f"postgresql://{netloc}/{urllib.parse.quote(dbname, safe='')}"
    return url + (f"?{query}" if query else "")


def find_bindir() -> Optional[Path]:
    """The directory holding ``initdb``, ``pg_ctl`` and ``postgres``, or None.

    ``PATH`` first, then Debian's ``/usr/lib/postgresql/<version>/bin`` (highest version),
    then the binaries the PyPI package ``pgserver`` ships (found without importing it).
    """
    candidates: list[Path] = []
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)

    def version(path: str) -> tuple[int, ...]:
        name = Path(path).parent.name
        return tuple(int(part) for part in re.findall(r"\d+", name)) or (0,)

    for path in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        candidates.append(Path(path))
    spec = importlib.util.find_spec("pgserver")
    if spec is not None and spec.origin:
        candidates.append(Path(spec.origin).parent / "pginstall" / "bin")
    for bindir in candidates:
        if all(os.access(bindir / name, os.X_OK) for name in ("initdb", "pg_ctl", "postgres")):
            return bindir
    return None


def free_port() -> int:
    """A TCP port of 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_until_ready(conninfo: str, timeout: float) -> None:
    """Connect to ``conninfo`` until it answers ``SELECT 1``, for up to ``timeout`` seconds."""
    psycopg = _psycopg()
    deadline = time.monotonic() + timeout
    last: Optional[BaseException] = None
    pause = threading.Event()
    while time.monotonic() < deadline:
        try:
            with psycopg.connect(conninfo, connect_timeout=2, autocommit=True) as conn:
                conn.execute("SELECT 1")
                return
        except psycopg.OperationalError as exc:
            last = exc
        pause.wait(0.02)  # a poll interval, not a guess at how long the start takes
    raise RuntimeError(f"PostgreSQL at {conninfo!r} did not answer within {timeout} s: {last}")


class PostgresServer:
    """A private PostgreSQL cluster in a temporary directory, on 127.0.0.1:``port``.

    ``start()`` makes the cluster (the first time) and starts it; ``stop()`` stops it;
    ``restart()`` does both, keeping the port; ``cleanup()`` stops it and removes the
    directory.
    """

    def __init__(self, bindir: Path, *, settings: Optional[dict[str, str]] = None) -> None:
        self.bindir = bindir
        self.settings = dict(SERVER_SETTINGS, **(settings or {}))
        self.port = 0
        self.user = "postgres"  # the database superuser initdb makes
        self.base = Path(tempfile.mkdtemp(prefix="webhooks-emitter-pg-"))
        self.datadir = self.base / "data"
        self.logfile = self.base / "server.log"
        self.running = False
        # Who owns this cluster: reap_orphans() stops it once this process is gone.
        (self.base / "owner.pid").write_text(str(os.getpid()))
        self._run_as: Optional[pwd.struct_passwd] = None
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root.
            for name in ("postgres", "nobody"):
                try:
                    self._run_as = pwd.getpwnam(name)
                    break
                except KeyError:
                    continue
            if self._run_as is None:
                raise RuntimeError(
                    "running as root, and there is no 'postgres' (nor 'nobody') user to run "
                    "PostgreSQL as: create one (useradd --system postgres) or set " + ENV_VAR
                )
            os.chown(self.base, self._run_as.pw_uid, self._run_as.pw_gid)
            os.chmod(self.base, 0o700)

    @property
    def conninfo(self) -> str:
        """conninfo of the ``postgres`` maintenance database (TCP, the superuser)."""
        return f"host=127.0.0.1 port={self.port} user={self.user} dbname=postgres"

    def _run(self, *args: Union[str, Path], check: bool = True) -> subprocess.CompletedProcess[str]:
        kwargs: dict[str, Any] = {}
        if self._run_as is not None:
            kwargs.update(user=self._run_as.pw_uid, group=self._run_as.pw_gid, extra_groups=[])
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        env["LC_ALL"] = "C"
        return subprocess.run(
            [str(arg) for arg in args],
            check=check,
            capture_output=True,
            text=True,
            env=env,
            cwd=self.base,
            timeout=START_TIMEOUT,
            **kwargs,
        )

    def _initdb(self) -> None:
        try:
            self._run(
                self.bindir / "initdb",
                "-D",
                self.datadir,
                "-U",
                self.user,
                "--auth=trust",
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            )
        except subprocess.CalledProcessError as exc:
            raise RuntimeError(f"initdb failed: {exc.stderr or exc.stdout}") from exc

    def _write_settings(self) -> None:
        settings = dict(self.settings, port=str(self.port))
        settings["unix_socket_directories"] = f"'{self.base}'"
        lines = [f"{name} = {value}" for name, value in settings.items()]
        # The last setting of a name wins: append, so a restart may change the port.
        with open(self.datadir / "postgresql.conf", "a") as conf:
            conf.write("\n# webhooks_emitter tests\n" + "\n".join(lines) + "\n")

    def start(self) -> None:
        """Start the server (making the cluster the first time) and wait until it answers."""
        if self.running:
            return
        if not (self.datadir / "PG_VERSION").exists():
            self._initdb()
        keep_port = self.port != 0
        for _ in range(1 if keep_port else 5):
            if not keep_port:
                self.port = free_port()
            self._write_settings()
            # pg_ctl -w polls the postmaster until it is ready or has died; then a
            # connection over TCP confirms it.
            result = self._run(
                self.bindir / "pg_ctl", "-D", self.datadir, "-l", self.logfile,
                "-w", "-t", str(int(START_TIMEOUT)), "start",
                check=False,
            )
            if result.returncode == 0:
                try:
                    wait_until_ready(self.conninfo, START_TIMEOUT)
                except RuntimeError:
                    pass
                else:
                    self.running = True
                    return
            self._run(self.bindir / "pg_ctl", "-D", self.datadir, "-m", "immediate", "stop",
                      check=False)
        raise RuntimeError(f"PostgreSQL did not start; its log says:\n{self.log_tail()}")

    def stop(self, mode: str = "fast") -> None:
        """Stop the server. ``mode``: ``fast`` (clean: sessions are ended, committed work
        kept) or ``immediate`` (a crash; with ``synchronous_commit=off`` the last commits
        may be lost)."""
        if not self.running:
            return
        self._run(self.bindir / "pg_ctl", "-D", self.datadir, "-m", mode, "-w", "stop",
                  check=False)
        self.running = False

    def restart(self, mode: str = "fast") -> None:
        """Stop the server and start it again on the same port."""
        self.stop(mode)
        self.start()

    def log_tail(self, lines: int = 30) -> str:
        """The end of the server's log."""
        try:
            return "\n".join(self.logfile.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def cleanup(self) -> None:
        """Stop the server at once and remove its directory."""
        self.stop("immediate")
        shutil.rmtree(self.base, ignore_errors=True)


class ExternalServer:
    """A server given by ``WEBHOOKS_EMITTER_TEST_POSTGRES``; it is never stopped.

    ``restart()`` ends every other session of the server's databases made by the tests,
    which is what its clients see of a restart.
    """

    def __init__(self, conninfo: str) -> None:
        self.conninfo = conninfo

    def restart(self, mode: str = "fast") -> None:
        """End every other client session of the test databases."""
        psycopg = _psycopg()
        with psycopg.connect(self.conninfo, autocommit=True) as conn:
            conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                "WHERE pid <> pg_backend_pid() AND datname LIKE 'webhooks_test_%'"
            )

    def cleanup(self) -> None:
        """Nothing: the server is not ours."""


Server = Union[PostgresServer, ExternalServer]


def reap_orphans(bindir: Path) -> None:
    """Stop and remove the clusters of test runs that ended without cleaning up (a killed
    pytest): those whose ``owner.pid`` names a process that no longer exists."""
    pattern = os.path.join(tempfile.gettempdir(), "webhooks-emitter-pg-*")
    for base in glob.glob(pattern):
        try:
            owner = int(Path(base, "owner.pid").read_text())
        except (OSError, ValueError):
            continue
        try:
            os.kill(owner, 0)
            continue  # still running: not an orphan
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        orphan = PostgresServer.__new__(PostgresServer)
        orphan.bindir, orphan.base, orphan.datadir = bindir, Path(base), Path(base) / "data"
        orphan.running = (orphan.datadir / "postmaster.pid").exists()
        orphan._run_as = None
        if os.geteuid() == 0:
            stat = os.stat(base)
            orphan._run_as = pwd.getpwuid(stat.st_uid)
        orphan.cleanup()


def start_server(settings: Optional[dict[str, str]] = None) -> Server:
    """The server to test against (see the module docstring); raises RuntimeError with
    :data:`HOW_TO_GET_ONE` when there is none."""
    external = os.environ.get(ENV_VAR)
    if external:
        wait_until_ready(external, 10.0)
        return ExternalServer(external)
    bindir = find_bindir()
    if bindir is None:
        raise RuntimeError(HOW_TO_GET_ONE)
    reap_orphans(bindir)
    server = PostgresServer(bindir, settings=settings)
    try:
        server.start()
    except BaseException:
        server.cleanup()
        raise
    return server


_database_names = itertools.count(1)


def create_database(admin_conninfo: str, name: Optional[str] = None) -> str:
    """Create an empty database on the server of ``admin_conninfo``; return its conninfo
    (a URL)."""
    psycopg = _psycopg()
    name = name or f"webhooks_test_{os.getpid()}_{next(_database_names)}"
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')
        conn.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
    return conninfo_to_url(admin_conninfo, dbname=name)


def drop_database(admin_conninfo: str, url: str) -> None:
    """Drop the database of ``url``, ending the sessions still on it."""
    psycopg = _psycopg()
    from psycopg.conninfo import conninfo_to_dict

    name = conninfo_to_dict(url)["dbname"]
    with psycopg.connect(admin_conninfo, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        with contextlib.suppress(psycopg.Error):
            conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[Server]:
    """The PostgreSQL server of this test session (started here unless given by
    WEBHOOKS_EMITTER_TEST_POSTGRES); fails, never skips, when there is none."""
    try:
        server = start_server()
    except RuntimeError as exc:
        message = str(exc)
        if message != HOW_TO_GET_ONE:
            message += "\n" + HOW_TO_GET_ONE
        pytest.fail(message, pytrace=False)
    try:
        yield server
    finally:
        server.cleanup()


@pytest.fixture(scope="session")
def postgres_dsn(postgres_server: Server) -> str:
    """conninfo of the session's server, for a role that may create databases."""
    return postgres_server.conninfo


@pytest.fixture
def pg_store_url(postgres_server: Server) -> Iterator[str]:
    """A ``postgresql://`` URL of a fresh, empty database, dropped after the test."""
    url = create_database(postgres_server.conninfo)
    try:
        yield url
    finally:
        if not isinstance(postgres_server, PostgresServer) or postgres_server.running:
            drop_database(postgres_server.conninfo, url)


def main() -> None:
    """Start a server, print its conninfo, and keep it until interrupted."""
    server = start_server()
    print(server.conninfo, flush=True)
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    signal.signal(signal.SIGINT, lambda *_: stopped.set())
    try:
        while not stopped.wait(1.0):
            pass
    finally:
        server.cleanup()


if __name__ == "__main__":
    main()
