"""`rookery check` on good and broken configurations and certificates (one line per problem,
non-zero exit), and `rookery user` refusing a database of another version until
`rookery migrate` (schema changes only when the operator asks)."""
from __future__ import annotations

import re
import sqlite3
import subprocess
from pathlib import Path

from conftest import ROOKERY_BIN, to_toml

MIGRATIONS = Path(__file__).resolve().parent.parent / "crates/store/migrations/sqlite"


def rookery(srv, *args) -> subprocess.CompletedProcess:
    return subprocess.run([ROOKERY_BIN, "--config", str(srv.config_path), *args],
                          text=True, capture_output=True, timeout=60, cwd=srv.workdir)


def check(srv) -> tuple[int, list[str]]:
    r = rookery(srv, "check")
    problems = [l for l in r.stdout.splitlines() if l.startswith("problem: ")]
    return r.returncode, problems


def cert(srv, name: str, days: int, *names: str) -> tuple[str, str]:
    c, k = srv.workdir / f"{name}.pem", srv.workdir / f"{name}.key"
    san = ",".join(f"DNS:{n}" for n in names)
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
         "-nodes", "-days", str(days), "-subj", f"/CN={names[0]}", "-addext",
         f"subjectAltName={san}", "-addext", "basicConstraints=critical,CA:FALSE",
         "-keyout", str(k), "-out", str(c)],
        check=True, capture_output=True, timeout=30)
    return str(c), str(k)


def rewrite(srv, **sections):
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in srv.config.items()}
    for k, v in sections.items():
        cfg.setdefault(k, {}).update(v)
    srv.config_path.write_text(to_toml(cfg))


def test_a_good_configuration_passes(server):
    # The generated certificate (for trying the server out): notes only.
    code, problems = check(server)
    assert (code, problems) == (0, [])
    # A certificate from a private CA the configuration trusts, naming every domain served.
    c, k = cert(server, "good", 90, "localhost", "pubsub.localhost")
    rewrite(server, tls={"cert": c, "key": k}, s2s={"ca_file": c})
    code, problems = check(server)
    assert (code, problems) == (0, [])


def test_a_broken_configuration_is_one_line(server):
    server.config_path.write_text(server.config_path.read_text() + "\n[c2s]\nmax_conections = 1\n")
    r = rookery(server, "check")
    assert r.returncode == 1
    problems = [l for l in r.stdout.splitlines() if l.startswith("problem: ")]
    assert len(problems) == 1 and "max_conections" in problems[0], r.stdout


def test_certificate_problems_each_named(server):
    # Names only another domain, expires in 5 days, and a pubsub service it does not cover.
    c, k = cert(server, "other", 5, "other.example")
    rewrite(server, tls={"cert": c, "key": k})
    code, problems = check(server)
    assert code == 1
    text = "\n".join(problems)
    assert "not issued by a trusted CA" in text
    assert "for localhost" in text and "for pubsub.localhost" in text, text
    # A key that is not the certificate's: one line, saying so.
    _, other_key = cert(server, "b", 30, "localhost")
    rewrite(server, tls={"cert": c, "key": other_key})
    code, problems = check(server)
    assert code == 1 and len(problems) == 1 and "do not make a usable certificate" in problems[0]
    # Right names, but about to expire.
    c, k = cert(server, "soon", 5, "localhost", "pubsub.localhost")
    rewrite(server, tls={"cert": c, "key": k})
    code, problems = check(server)
    assert any("expires within 14 days" in p for p in problems), problems


def test_user_refuses_a_database_of_another_version_until_migrate(server):
    server.stop()
    db = server.data_dir / "rookery.db"
    last = sorted(MIGRATIONS.glob("*.sql"))[-1]
    version = int(last.name.split("_")[0])
    sql = last.read_text()
    # What undoes the last migration: dropping what it created, or the columns it added. A
    # table it rebuilt (created under a new name, filled, renamed over the old one) stays, and
    # so does an index it dropped and created anew: applied again, the migration does it
    # again.
    rebuilt = set(re.findall(r"ALTER TABLE (\w+) RENAME TO", sql))
    rebuilt |= set(re.findall(r"DROP INDEX (\w+)", sql)) & set(
        re.findall(r"CREATE (?:UNIQUE )?INDEX (\w+)", sql))
    undo = [f"DROP {kind} {name}"
            for kind, name in re.findall(r"CREATE (TABLE|VIEW) (\w+)", sql)
            if name not in rebuilt]
    undo += [f"ALTER TABLE {table} DROP COLUMN {column}"
             for table, column in re.findall(r"ALTER TABLE (\w+) ADD COLUMN (\w+)", sql)]
    # Indexes it created go first (undone in reverse): one on an added column would keep it.
    undo += [f"DROP INDEX {name}"
             for name in re.findall(r"CREATE (?:UNIQUE )?INDEX (\w+)", sql)
             if name not in rebuilt]
    assert undo or rebuilt, last
    # An older Rookery's database: the last migration not applied.
    with sqlite3.connect(db) as con:
        for statement in reversed(undo):
            con.execute(statement)
        con.execute("DELETE FROM _sqlx_migrations WHERE version = ?", (version,))
    r = server.user("list")
    assert r.returncode != 0
    assert "older version" in r.stderr and "rookery migrate" in r.stderr, r.stderr
    # Refused without a change.
    with sqlite3.connect(db) as con:
        assert con.execute("SELECT count(*) FROM _sqlx_migrations WHERE version = ?",
                           (version,)).fetchone() == (0,)
    r = rookery(server, "migrate")
    assert r.returncode == 0, r.stderr
    r = server.user("list")
    assert r.returncode == 0 and f"alice@{server.domain}" in r.stdout, r.stderr
    # A newer Rookery's database: a migration this binary does not know.
    with sqlite3.connect(db) as con:
        con.execute("INSERT INTO _sqlx_migrations (version, description, installed_on, "
                    "success, checksum, execution_time) "
                    "VALUES (99999, 'future', CURRENT_TIMESTAMP, 1, x'00', 0)")
    r = server.user("list")
    assert r.returncode != 0 and "newer version" in r.stderr, r.stderr


def test_a_cluster_node_is_told_what_its_peers_must_share(server):
    """A node of a cluster that leaves the upload key and files or the dialback secret at
    their per-node defaults is told (docs/clustering.md): what one node hands out, another
    would refuse. Shared settings silence it."""
    rewrite(server, store={"url": "postgres://rookery@127.0.0.1:9/rookery"},
            cluster={"nats_url": "nats://127.0.0.1:9"}, s2s={"enabled": True})
    r = rookery(server, "check")
    assert "[upload] dir and key_file are per node" in r.stdout, r.stdout
    assert "[s2s] dialback_secret is per node" in r.stdout, r.stdout
    rewrite(server, upload={"dir": str(server.workdir / "shared"),
                            "key_file": str(server.workdir / "shared.key")},
            s2s={"dialback_secret": "the same on every node"})
    r = rookery(server, "check")
    assert "per node" not in r.stdout, r.stdout


def fresh(tmp_path, **sections) -> Path:
    """A configuration in `tmp_path` that nothing has used yet (no database, no
    certificate), with `sections` merged in; returns its path."""
    from conftest import _merge, free_port
    base = {"domain": "localhost", "data_dir": str(tmp_path / "data"),
            "listen": {k: f"127.0.0.1:{free_port()}"
                       for k in ("c2s", "c2s_direct_tls", "admin", "http", "https")}}
    path = tmp_path / "rookery.toml"
    path.write_text(to_toml(_merge(base, sections)))
    return path


# What `serve` cannot start with, and a word the refusal must name.
REFUSED = [
    ({"mam": {"default": "sometimes"}}, "[mam] default"),
    # "Never" written as the largest integer: the purge's timer would overflow.
    ({"mam": {"purge_interval_secs": 9223372036854775807}}, "[mam] purge_interval_secs"),
    ({"muc": {"default_max_occupants": 5000}}, "[muc] default_max_occupants"),
    ({"muc": {"create_rooms": "all"}}, "[muc] create_rooms"),
    ({"pubsub": {"create_nodes": "everyone"}}, "create_nodes"),
    ({"admins": ["not a jid@@"]}, "admins"),
    ({"listen": {"http": "0.0.0.0:0"}}, "behind_tls_proxy"),
    ({"listen": {"http": "nonsense"}}, "[listen] http"),
    ({"listen": {"https": "nonsense"}}, "[listen] https"),
    ({"domain": "exa mple"}, "domain"),
    # A typo in the level: a valid filter that logs nothing at all.
    ({"log": {"level": "inof"}}, "[log] level"),
    ({"log": {"level": "info,rookery_c2s=debgu"}}, "[log] level"),
    ({"log": {"format": "jsno"}}, "jsno"),
    ({"c2s": {"max_stanza_bytes": 0}}, "[c2s] max_stanza_bytes"),
    ({"s2s": {"max_stanza_bytes": 100}}, "[s2s] max_stanza_bytes"),
    ({"session_queue": 0}, "session_queue"),
    ({"session_queue_bytes": 0}, "session_queue_bytes"),
]


def test_check_and_serve_refuse_the_same_configurations(tmp_path):
    """`rookery check` runs the validation `serve` runs (one function): what `serve` refuses,
    `check` reports as a problem; and `serve` refuses it before it touches anything (no
    database, no certificate generated)."""
    def run(path, *args, timeout=60):
        return subprocess.run([ROOKERY_BIN, "--config", str(path), *args], text=True,
                              capture_output=True, timeout=timeout, cwd=tmp_path)

    good = fresh(tmp_path)
    r = run(good, "check")
    assert r.returncode == 0, r.stdout
    failures = []
    for i, (sections, word) in enumerate(REFUSED):
        d = tmp_path / f"case{i}"
        d.mkdir()
        path = fresh(d, **sections)
        r = run(path, "check")
        problems = [l for l in r.stdout.splitlines() if l.startswith("problem: ")]
        if r.returncode != 1 or not any(word in p for p in problems):
            failures.append(f"check {sections}: exit {r.returncode}, {r.stdout!r}")
            continue
        try:
            s = run(path, "serve", timeout=20)
        except subprocess.TimeoutExpired:
            failures.append(f"serve {sections}: started")
            continue
        if s.returncode == 0 or word not in s.stderr:
            failures.append(f"serve {sections}: exit {s.returncode}, {s.stderr[-500:]!r}")
        if (d / "data").exists() and any((d / "data").iterdir()):
            failures.append(f"serve {sections}: wrote {list((d / 'data').iterdir())}")
    assert not failures, "\n".join(failures)
