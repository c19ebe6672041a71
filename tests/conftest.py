"""End-to-end test fixtures: the real `rookery` binary on ephemeral loopback ports.

Every test gets its own server process, data directory and (on PostgreSQL) database, so tests
are independent and can run in any order.

Fixtures
--------
``server_factory(users=..., backend=..., **overrides) -> Server``
    Starts a server and returns once its listeners accept connections. Keyword arguments:

    - ``users``: ``{name: password}`` created with ``rookery user add`` before the start
      (default: alice/alicepass, bob/bobpass, carol/carolpass);
    - ``backend``: ``"sqlite"`` (default) or ``"postgres"`` (needs
      ``ROOKERY_TEST_POSTGRES_URL``, as exported by ``scripts/pg-start.sh``; each server then
      gets a fresh database, dropped at teardown);
    - any other keyword is a config section or top-level key, merged into the generated
      ``rookery.toml``: ``c2s={"negotiation_timeout_secs": 2}``,
      ``registration={"enabled": True, "min_interval_secs": 0}``, ``session_queue=16``.
      Listen addresses, ``data_dir``, ``domain`` and the store URL are filled in by the factory
      (pass ``domain=`` or ``store={"url": ...}`` to override them).

    Servers still running at teardown are killed; when a test fails, the tail of each server's
    log is attached to the report ("rookery server log").

``server``
    ``server_factory()`` with the defaults: SQLite, users alice, bob and carol.

``backend``
    ``"sqlite"``, and ``"postgres"`` when ``ROOKERY_TEST_POSTGRES_URL`` is set (otherwise that
    parameter is skipped). Use it to run a test on both stores:
    ``def test_x(server_factory, backend): srv = server_factory(backend=backend)``.

The ``Server`` object
---------------------
``host``, ``port`` (STARTTLS), ``direct_tls_port`` (XEP-0368), ``admin_port`` (the admin
HTTP listener), ``http_port`` / ``https_port`` (the public web listeners), ``domain``, ``pid``,
``data_dir``, ``config_path``, ``log_path``, ``users``, ``backend``; ``jid(user)``,
``client(direct_tls=False, local_addr=None, rcvbuf=None)`` (a :class:`xmpp_raw.RawClient` for the STARTTLS
port, or the direct-TLS port), ``await login(user, resource, mechanism=..., direct_tls=...)``
(a raw client logged in and bound), ``user(*args, password=None)`` (runs ``rookery user ...`` against
the same store), ``ctl(*args, input="")`` (runs ``rookery ctl ...`` against the running server),
``admin_token()``, ``rss_kib()``, ``log()``, ``signal(sig)``, ``wait(timeout)`` (exit code),
``stop()`` and ``restart()`` (same ports, data and database).

The binary is ``$ROOKERY_BIN`` (default ``target/debug/rookery``; build it first with
``cargo build -p rookery``).
"""
from __future__ import annotations

import os
import re
import shutil
import signal as _signal
import socket
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import xmpp_raw  # noqa: E402

ROOKERY_BIN = os.environ.get("ROOKERY_BIN", str(HERE.parent / "target" / "debug" / "rookery"))
PG_URL = os.environ.get("ROOKERY_TEST_POSTGRES_URL")
DEFAULT_USERS = {"alice": "alicepass", "bob": "bobpass", "carol": "carolpass"}
START_TIMEOUT = 30.0


_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port that was free a moment ago on 127.0.0.1 (the OS picks it), never one this
    process handed out before: a test that takes a port for its own use (a web page) and
    then starts a server would otherwise get the same port twice, the first not yet bound."""
    while True:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (str, Path)):
        s = str(v).replace("\\", "\\\\").replace('"', '\\"')
        return f'"{s}"'
    if isinstance(v, (list, tuple)):
        # e.g. component={"service": [{"domain": ..., "secret": ...}]}: an array of inline tables
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{_toml_key(k)} = {_toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(f"cannot write {v!r} as TOML")


def _toml_key(k: str) -> str:
    """A bare key when possible, else quoted (e.g. a domain as a key of `[s2s] routes`)."""
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else _toml_value(k)


def to_toml(cfg: dict) -> str:
    """Top-level scalars first, then one table per dict (one level, as rookery.toml has)."""
    lines = [f"{k} = {_toml_value(v)}" for k, v in cfg.items() if not isinstance(v, dict)]
    for k, v in cfg.items():
        if isinstance(v, dict):
            lines.append(f"\n[{k}]")
            lines.extend(f"{_toml_key(kk)} = {_toml_value(vv)}" for kk, vv in v.items())
    return "\n".join(lines) + "\n"


def _psql() -> str | None:
    found = shutil.which("psql")
    if found:
        return found
    for d in sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True):
        if (d / "psql").exists():
            return str(d / "psql")
    return None


class SqliteLock:
    """Another process's hold on a server's SQLite write lock (a backup, an `sqlite3` shell):
    `with SqliteLock(srv):` takes it (BEGIN IMMEDIATE) in a thread of its own and gives it
    back on `release()` or at the end of the block."""

    def __init__(self, srv):
        import threading
        self.path = srv.data_dir / "rookery.db"
        self.held, self.done = threading.Event(), threading.Event()
        self.thread = threading.Thread(target=self._hold)

    def _hold(self):
        import sqlite3
        db = sqlite3.connect(self.path, isolation_level=None, timeout=30)
        db.execute("BEGIN IMMEDIATE")
        self.held.set()
        self.done.wait(60)
        db.execute("COMMIT")
        db.close()

    def __enter__(self):
        self.thread.start()
        assert self.held.wait(10), "the SQLite lock was not taken"
        return self

    def release(self):
        self.done.set()
        self.thread.join()

    def __exit__(self, *exc):
        self.release()


class PgDatabase:
    """A fresh database on the server of ``ROOKERY_TEST_POSTGRES_URL`` (dropped on drop())."""

    def __init__(self, base_url: str):
        self.base_url = base_url
        self.name = "rookery_e2e_" + uuid.uuid4().hex[:12]
        self.psql = _psql()
        if self.psql is None:
            raise RuntimeError("psql not found: cannot create a test database")
        self._run(f"CREATE DATABASE {self.name}")
        parts = urlsplit(base_url)
        self.url = urlunsplit(parts._replace(path="/" + self.name))

    def _run(self, sql: str):
        subprocess.run([self.psql, "-q", "-v", "ON_ERROR_STOP=1", self.base_url, "-c", sql],
                       check=True, capture_output=True, timeout=30)

    def drop(self):
        try:
            self._run(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")
        except (subprocess.SubprocessError, OSError):
            pass


class Server:
    """A running `rookery serve` (see the module docstring)."""

    def __init__(self, workdir: Path, config: dict, users: dict, backend: str,
                 pg: PgDatabase | None):
        self.workdir = workdir
        self.config = config
        self.users = dict(users)
        self.backend = backend
        self.pg = pg
        self.host = "127.0.0.1"
        self.domain = config["domain"]
        self.data_dir = Path(config["data_dir"])
        self.config_path = workdir / "rookery.toml"
        self._write_config()
        self.log_path = workdir / "server.log"
        self.proc: subprocess.Popen | None = None
        self._log_file = None

    def _write_config(self):
        listen = self.config["listen"]

        def port(key: str) -> int | None:
            addr = listen.get(key, "")
            return int(addr.rsplit(":", 1)[1]) if addr else None
        self.port = port("c2s")
        self.direct_tls_port = port("c2s_direct_tls")
        self.admin_port = port("admin")
        self.http_port = port("http")
        self.https_port = port("https")
        self.config_path.write_text(to_toml(self.config))

    def first_start(self, attempts: int = 3):
        """Starts the server for the first time. A port `free_port` chose can be taken by
        another process before the server binds it (tests of several worktrees run side by
        side): then the loopback listeners get fresh ports and the start is tried again."""
        for attempt in range(attempts):
            try:
                return self.start()
            except RuntimeError:
                # The whole log: the error's text keeps only its tail, which a backtrace fills.
                if attempt + 1 == attempts or "address already in use" not in self.log().lower():
                    raise
            self.kill()
            for key, addr in self.config["listen"].items():
                if isinstance(addr, str) and addr.startswith("127.0.0.1:"):
                    self.config["listen"][key] = f"127.0.0.1:{free_port()}"
            self._write_config()

    # ---- process ---------------------------------------------------------------------------
    @property
    def pid(self) -> int:
        return self.proc.pid

    def user(self, *args: str, password: str | None = None) -> subprocess.CompletedProcess:
        """Runs `rookery --config CFG user ARGS...` (password on stdin) against this store."""
        return subprocess.run(
            [ROOKERY_BIN, "--config", str(self.config_path), "user", *args],
            input=(password + "\n") if password is not None else "",
            text=True, capture_output=True, timeout=60, cwd=self.workdir)

    def ctl(self, *args: str, input: str = "") -> subprocess.CompletedProcess:
        """Runs `rookery --config CFG ctl ARGS...` against this running server."""
        return subprocess.run(
            [ROOKERY_BIN, "--config", str(self.config_path), "ctl", *args],
            input=input, text=True, capture_output=True, timeout=60, cwd=self.workdir)

    def admin_token(self) -> str:
        """The admin API token the server generated at its first start."""
        return (self.data_dir / "admin.token").read_text().strip()

    def start(self):
        self._log_file = open(self.log_path, "a")
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        self.proc = subprocess.Popen(
            [ROOKERY_BIN, "serve", "--config", str(self.config_path)],
            cwd=self.workdir, stdout=self._log_file, stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, env=env)
        ports = [p for p in (self.port, self.direct_tls_port, self.http_port,
                             self.https_port) if p]
        deadline = time.monotonic() + START_TIMEOUT
        while ports:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rookery exited with {self.proc.returncode} at start:\n"
                                   + self.log()[-4000:])
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError("rookery did not listen in time:\n" + self.log()[-4000:])
            try:
                socket.create_connection((self.host, ports[0]), 0.5).close()
                ports.pop(0)
            except OSError:
                time.sleep(0.05)

    def signal(self, sig: int = _signal.SIGTERM):
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        """Waits for the process to exit; returns its exit code."""
        return self.proc.wait(timeout)

    def kill(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None

    def stop(self, timeout: float = 15.0) -> int:
        """SIGTERM and wait; kills after `timeout`. Returns the exit code."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        code = self.proc.returncode
        self.kill()
        return code

    def restart(self):
        """Stops and starts again with the same config, ports, data and database."""
        self.stop()
        self.start()

    def crash_restart(self):
        """`kill -9`, then starts again with the same config, ports, data and database: what
        the server acknowledged before must still be there."""
        self.kill()
        self.start()

    # ---- observation -----------------------------------------------------------------------
    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    def rss_kib(self) -> int:
        """Resident set size of the server process (VmRSS), in KiB."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        raise RuntimeError("no VmRSS")

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    # ---- clients ---------------------------------------------------------------------------
    def jid(self, user: str, resource: str | None = None) -> str:
        return f"{user}@{self.domain}" + (f"/{resource}" if resource else "")

    def client(self, *, direct_tls: bool = False, timeout: float = 10.0,
               local_addr: str | None = None, rcvbuf: int | None = None) -> xmpp_raw.RawClient:
        """A raw client (not yet connected); `local_addr` picks the source address, e.g.
        "127.0.0.2", to test per-IP limits; `rcvbuf` shrinks the socket's receive buffer
        (a client that stops reading then blocks the server's writes quickly)."""
        port = self.direct_tls_port if direct_tls else self.port
        return xmpp_raw.RawClient(self.host, port, self.domain, timeout=timeout,
                                  direct_tls=direct_tls, local_addr=local_addr, rcvbuf=rcvbuf)

    async def login(self, user: str, resource: str | None = None, *,
                    mechanism: str = "SCRAM-SHA-1", direct_tls: bool = False,
                    password: str | None = None) -> xmpp_raw.RawClient:
        """A raw client logged in as `user` (password from `users` unless given)."""
        c = self.client(direct_tls=direct_tls)
        await c.login(user, password if password is not None else self.users[user],
                      resource, mechanism=mechanism)
        return c


def _merge(base: dict, overrides: dict) -> dict:
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in base.items()}
    for k, v in overrides.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k].update(v)
        else:
            out[k] = v
    return out


def _add_users(config_path: Path, users: dict, cwd: Path):
    for name, pw in users.items():
        r = subprocess.run([ROOKERY_BIN, "--config", str(config_path), "user", "add", name],
                           input=pw + "\n", text=True, capture_output=True, timeout=60,
                           cwd=cwd)
        if r.returncode != 0:
            raise RuntimeError(f"rookery user add {name} failed: {r.stderr}")


_TEMPLATES: dict = {}


def _sqlite_template(tmp_path_factory, domain: str, users: dict) -> Path:
    """A data dir whose SQLite store holds exactly `users` on `domain`, made once per run
    with `rookery user add` and copied for each server that wants the same accounts."""
    key = (domain, tuple(sorted(users.items())))
    if key not in _TEMPLATES:
        d = tmp_path_factory.mktemp("rookery-accounts")
        cfg = d / "rookery.toml"
        cfg.write_text(to_toml({"domain": domain, "data_dir": str(d / "data")}))
        _add_users(cfg, users, d)
        _TEMPLATES[key] = d / "data"
    return _TEMPLATES[key]


@pytest.fixture
def server_factory(request, tmp_path_factory):
    """Starts rookery servers for one test (see the module docstring)."""
    if not os.access(ROOKERY_BIN, os.X_OK):
        pytest.fail(f"{ROOKERY_BIN} not found: run `cargo build -p rookery` or set ROOKERY_BIN")
    servers: list[Server] = []
    request.node._rookery_servers = servers

    def make(*, users: dict | None = None, backend: str = "sqlite", **overrides) -> Server:
        workdir = tmp_path_factory.mktemp("rookery")
        pg = None
        base = {
            "domain": "localhost",
            "data_dir": str(workdir / "data"),
            "listen": {"c2s": f"127.0.0.1:{free_port()}",
                       "c2s_direct_tls": f"127.0.0.1:{free_port()}",
                       "admin": f"127.0.0.1:{free_port()}",
                       "http": f"127.0.0.1:{free_port()}",
                       "https": f"127.0.0.1:{free_port()}"},
            "log": {"level": "info"},
        }
        if backend == "postgres":
            if not PG_URL:
                pytest.skip("ROOKERY_TEST_POSTGRES_URL not set (scripts/pg-start.sh sets it)")
            pg = PgDatabase(PG_URL)
            base["store"] = {"url": pg.url}
        elif backend != "sqlite":
            raise ValueError(f"unknown backend {backend!r}")
        srv = Server(workdir, _merge(base, overrides),
                     DEFAULT_USERS if users is None else users, backend, pg)
        servers.append(srv)
        if backend == "sqlite" and "store" not in overrides and srv.users:
            # Same accounts as an earlier server: copy its fresh database instead of deriving
            # the credentials again (rookery user add costs ~0.2 s per account).
            shutil.copytree(_sqlite_template(tmp_path_factory, srv.domain, srv.users),
                            srv.data_dir)
        else:
            _add_users(srv.config_path, srv.users, srv.workdir)
        srv.first_start()
        return srv

    yield make
    for srv in servers:
        srv.kill()
        if srv.pg is not None:
            srv.pg.drop()


@pytest.fixture
def server(server_factory) -> Server:
    """A server with the defaults: SQLite, users alice, bob and carol."""
    return server_factory()


BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.skipif(
    not PG_URL, reason="ROOKERY_TEST_POSTGRES_URL not set (scripts/pg-start.sh sets it)"))]


@pytest.fixture(params=BACKENDS)
def backend(request) -> str:
    """Each store backend: sqlite always, postgres when ROOKERY_TEST_POSTGRES_URL is set."""
    return request.param


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed and rep.when in ("setup", "call"):
        for i, srv in enumerate(getattr(item, "_rookery_servers", [])):
            rep.sections.append((f"rookery server log #{i} ({srv.log_path})",
                                 srv.log()[-20000:]))
