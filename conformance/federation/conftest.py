"""Fixtures of the federation suite: one Rookery and each available peer (Prosody,
ejabberd), started once per module in a shared work directory.

Peers that are not installed are skipped with the reason (run.sh installs them on Debian).
On failure the tail of every server's log is attached to the report.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parents[1] / "tests"))

import servers  # noqa: E402
from dns import DnsServer  # noqa: E402

MODE = os.environ.get("FEDERATION_MODE", "dialback")


@pytest.fixture(scope="session")
def workdir():
    d = Path(tempfile.mkdtemp(prefix="rookery-federation-"))
    d.chmod(0o755)
    yield d
    if os.environ.get("FEDERATION_KEEP") != "1":
        shutil.rmtree(d, ignore_errors=True)


@pytest.fixture(scope="session")
def certs(workdir):
    return servers.make_certs(workdir / "certs")


@pytest.fixture(scope="session")
def dns():
    d = DnsServer().start()
    yield d
    d.stop()


@pytest.fixture(scope="session")
def running(request):
    """Every server started in this session, for the failure report."""
    lst: list[servers.Server] = []
    request.session._federation_servers = lst
    return lst


@pytest.fixture(scope="session")
def rookery(workdir, certs, dns, running):
    if not os.access(servers.ROOKERY_BIN, os.X_OK):
        pytest.fail(f"{servers.ROOKERY_BIN} not found: cargo build -p rookery first")
    r = servers.Rookery(workdir, certs, MODE, dns)
    running.append(r)
    r.start()
    yield r
    r.stop()


@pytest.fixture(scope="session")
def rookery_cluster(workdir, certs, dns, running):
    """Two nodes of a Rookery cluster (servers.RookeryNode) on a fresh database of the
    PostgreSQL of ROOKERY_TEST_POSTGRES_URL (scripts/pg-start.sh) and a nats-server."""
    base = os.environ.get("ROOKERY_TEST_POSTGRES_URL")
    nats_bin = shutil.which("nats-server") or "/usr/sbin/nats-server"
    if not base or not os.access(nats_bin, os.X_OK):
        pytest.skip("needs PostgreSQL (ROOKERY_TEST_POSTGRES_URL) and nats-server")
    db = "rookery_federation_cluster"
    psql = lambda sql: subprocess.run(["psql", "-q", "-v", "ON_ERROR_STOP=1", base, "-c", sql],  # noqa: E731
                                      check=True, capture_output=True, timeout=30)
    psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")
    psql(f"CREATE DATABASE {db}")
    url = base.rsplit("/", 1)[0] + "/" + db
    port = servers.free_port("127.0.0.1")
    nats = subprocess.Popen([nats_bin, "-a", "127.0.0.1", "-p", str(port)],
                            stdout=open(workdir / "nats.log", "w"), stderr=subprocess.STDOUT,
                            stdin=subprocess.DEVNULL, start_new_session=True)
    nodes = []
    try:
        servers.wait_port("127.0.0.1", port, nats, workdir / "nats.log")
        for i in (1, 2):
            n = servers.RookeryNode(workdir, certs, MODE, dns, i, url, f"nats://127.0.0.1:{port}")
            running.append(n)
            nodes.append(n)
            n.start()
        yield nodes
    finally:
        for n in nodes:
            n.stop()
        servers.kill_group(nats)
        psql(f"DROP DATABASE IF EXISTS {db} WITH (FORCE)")


def _peer(cls, workdir, certs, dns, running):
    if not cls.available():
        pytest.skip(f"{cls.__name__} is not installed (or needs root); run conformance/federation/run.sh")
    p = cls(workdir, certs, MODE, dns)
    running.append(p)
    try:
        p.start()
    except Exception:
        p.stop()
        raise
    return p


@pytest.fixture(scope="session", params=["prosody", "ejabberd"])
def peer(request, workdir, certs, dns, running, rookery):
    cls = {"prosody": servers.Prosody, "ejabberd": servers.Ejabberd}[request.param]
    p = _peer(cls, workdir, certs, dns, running)
    yield p
    p.stop()


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.when == "call" and rep.failed:
        for s in getattr(item.session, "_federation_servers", []):
            rep.sections.append((f"{s.domain} log", s.log()[-8000:]))
