"""Private instances of Rookery, Prosody and ejabberd for the federation suite.

Each server gets its own directory, its own loopback address and free ports on it, published
in a private DNS server (dns.py) as `_xmpp-server._tcp` SRV records, which every server is
pointed at:

    rookery.example   127.0.0.4   Rookery    [s2s] dns_server (also pubsub., conference. and bot.rookery.example)
    second.example    127.0.0.4   Rookery's second host ([[host]], a certificate of its own)
    cluster.example   127.0.0.5   two Rookery nodes of a cluster (PostgreSQL + NATS), the first in DNS
    prosody.example   127.0.0.2   Prosody    libunbound forwarding to it (unbound.forward)
    ejabberd.example  127.0.0.3   ejabberd   Erlang inetrc {nameserver, ...} (ERL_INETRC)

So federation goes through real SRV resolution, and nothing outside the work directory is
changed (no /etc/hosts edits, no well-known port taken). Certificates come from a private CA
made here with openssl; in "dialback" mode nobody trusts it (certificates are effectively
self-signed: dialback over TLS), in "external" mode everyone does (SASL EXTERNAL).
"""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ROOKERY_BIN = os.environ.get("ROOKERY_BIN", str(ROOT / "target" / "debug" / "rookery"))

ADDR = {"rookery.example": "127.0.0.4", "prosody.example": "127.0.0.2", "ejabberd.example": "127.0.0.3",
        "cluster.example": "127.0.0.5"}
# A further domain Rookery serves (`[[host]]`) with a certificate of its own.
SECOND_HOST = "second.example"
USERS = {"alice": "alicepass", "bob": "bobpass", "carol": "carolpass"}
START_TIMEOUT = 60.0


def wait_port(host: str, port: int, proc: subprocess.Popen | None, log: Path, timeout=START_TIMEOUT):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"exited with {proc.returncode} at start:\n{tail(log)}")
        try:
            socket.create_connection((host, port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"did not listen on {host}:{port} in time:\n{tail(log)}")


def tail(path: Path, n: int = 6000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def kill_group(proc: subprocess.Popen | None):
    """Ends what is left of a server we started (its own process group, by id)."""
    if proc is None:
        return
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        pass


def free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def make_certs(d: Path) -> Path:
    """A CA and a certificate for each domain (and its subdomains), as <domain>.crt/.key."""
    d.mkdir(parents=True, exist_ok=True)
    run = lambda *a: subprocess.run(a, check=True, capture_output=True, cwd=d)  # noqa: E731
    run("openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256",
        "-nodes", "-days", "30", "-subj", "/CN=Rookery federation test CA",
        "-keyout", "ca.key", "-out", "ca.crt")
    for domain in [*ADDR, SECOND_HOST]:
        (d / f"{domain}.ext").write_text(
            f"subjectAltName=DNS:{domain},DNS:*.{domain}\nbasicConstraints=CA:FALSE\n"
            "keyUsage=digitalSignature\nextendedKeyUsage=serverAuth,clientAuth\n")
        run("openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-nodes",
            "-subj", f"/CN={domain}", "-keyout", f"{domain}.key", "-out", f"{domain}.csr")
        run("openssl", "x509", "-req", "-in", f"{domain}.csr", "-CA", "ca.crt", "-CAkey",
            "ca.key", "-CAcreateserial", "-days", "30", "-out", f"{domain}.crt",
            "-extfile", f"{domain}.ext")
        (d / f"{domain}.pem").write_text((d / f"{domain}.crt").read_text()
                                         + (d / f"{domain}.key").read_text())
    for f in d.iterdir():
        f.chmod(0o644)
    return d


class Server:
    """What the slixmpp helpers (tests/slix.py) need: host, port, domain, users, jid()."""

    domain = ""
    direct_tls_port = None

    def __init__(self, workdir: Path, certs: Path, mode: str, dns):
        self.dir = workdir / self.domain
        self.dir.mkdir(parents=True, exist_ok=True)
        self.certs = certs
        self.mode = mode
        self.dns = dns
        self.host = ADDR[self.domain]
        self.port = free_port(self.host)
        self.s2s_port = free_port(self.host)
        self.s2s_direct_tls_port = None
        self.publish(dns)

    def publish(self, dns):
        dns.add_server(self.domain, self.host, self.s2s_port, self.s2s_direct_tls_port)
        self.users = dict(USERS)
        self.proc: subprocess.Popen | None = None
        self.log_path = self.dir / "server.log"

    def jid(self, user: str, resource: str | None = None) -> str:
        return f"{user}@{self.domain}" + (f"/{resource}" if resource else "")

    def log(self) -> str:
        return tail(self.log_path, 20000)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                pass
        kill_group(self.proc)


class Rookery(Server):
    domain = "rookery.example"
    # An external component (XEP-0114) the tests attach to `component_port` on 127.0.0.1.
    component_domain = f"bot.{domain}"
    component_secret = "federated-bot-secret"
    # What a node of a cluster adds: lines of [s2s], further sections; and whether this
    # process creates the accounts (once per database).
    s2s_extra = ""
    config_extra = ""
    add_users = True
    # Further domains this process serves (`[[host]]`, each with its certificate).
    hosted: tuple[str, ...] = (SECOND_HOST,)

    def publish(self, dns):
        # In "external" mode Rookery also offers direct TLS (XEP-0368) and publishes it first,
        # so the peers connect to it that way; in "dialback" mode only STARTTLS.
        if self.mode == "external":
            self.s2s_direct_tls_port = free_port(self.host)
        super().publish(dns)
        # The publish-subscribe service and the XEP-0114 component are domains of their own,
        # served by the same listener.
        for sub in (f"pubsub.{self.domain}", f"conference.{self.domain}", self.component_domain,
                    *self.hosted):
            dns.add_server(sub, self.host, self.s2s_port, self.s2s_direct_tls_port)

    def host_view(self, domain: str) -> "Hosted":
        """One of the further domains this server hosts, as the slixmpp helpers see a server."""
        assert domain in self.hosted, domain
        return Hosted(self, domain)

    def ctl(self, *args: str) -> subprocess.CompletedProcess:
        """`rookery ctl ARGS` against this running server (its admin listener)."""
        return subprocess.run([ROOKERY_BIN, "--config", str(self.config_path), "ctl", *args],
                              capture_output=True, text=True, timeout=30)

    def start(self):
        data = self.dir / "data"
        dns_host, dns_port = self.dns.addr
        trust = (f'use_webpki_roots = false\nca_file = "{self.certs / "ca.crt"}"\n'
                 "require_valid_certificates = true"
                 if self.mode == "external" else
                 "use_webpki_roots = false\nrequire_valid_certificates = false")
        self.component_port = free_port("127.0.0.1")
        self.admin_port = free_port("127.0.0.1")
        cfg = self.config_path = self.dir / "rookery.toml"
        cfg.write_text(f"""domain = "{self.domain}"
data_dir = "{data}"

[listen]
c2s = "{self.host}:{self.port}"
c2s_direct_tls = ""
s2s = "{self.host}:{self.s2s_port}"
s2s_direct_tls = "{f'{self.host}:{self.s2s_direct_tls_port}' if self.s2s_direct_tls_port else ''}"
admin = "127.0.0.1:{self.admin_port}"
http = ""
https = ""

[tls]
cert = "{self.certs / (self.domain + '.crt')}"
key = "{self.certs / (self.domain + '.key')}"

[log]
level = "info,rookery_s2s=debug"

[s2s]
dns_server = "{dns_host}:{dns_port}"
negotiation_timeout_secs = 20
{trust}
{self.s2s_extra}

[component]
listen = "127.0.0.1:{self.component_port}"

[[component.service]]
domain = "{self.component_domain}"
secret = "{self.component_secret}"
name = "Federated echo bot"
{self.config_extra}
""" + "".join(f"""
[[host]]
domain = "{h}"
cert = "{self.certs / (h + '.crt')}"
key = "{self.certs / (h + '.key')}"
""" for h in self.hosted))
        for domain in (None, *self.hosted) if self.add_users else ():
            for name, pw in self.users.items():
                jid = f"{name}@{domain}" if domain else name
                subprocess.run([ROOKERY_BIN, "--config", str(cfg), "user", "add", jid],
                               input=pw + "\n", text=True, check=True, capture_output=True)
        env = dict(os.environ)
        env.pop("RUST_LOG", None)
        self.proc = subprocess.Popen([ROOKERY_BIN, "serve", "--config", str(cfg)],
                                     stdout=open(self.log_path, "w"), stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        wait_port(self.host, self.port, self.proc, self.log_path)
        wait_port(self.host, self.s2s_port, self.proc, self.log_path)


class Hosted:
    """A further domain of a running Rookery (`[[host]]`): its listeners, its accounts (the
    same names and passwords as the primary's)."""

    direct_tls_port = None

    def __init__(self, server: Rookery, domain: str):
        self.host, self.port, self.domain = server.host, server.port, domain
        self.users = dict(server.users)

    jid = Server.jid


class Unlisted:
    """The DNS of a server that is not published (a cluster node no peer is told about)."""

    def add_server(self, *_args):
        pass


class RookeryNode(Rookery):
    """Node `index` of a Rookery cluster serving cluster.example (docs/clustering.md): ports
    and a data directory of its own, the one database `store_url`, the bus `nats_url` and one
    dialback secret. Only the first node is in DNS, so the peers' streams land on it and what
    is for a session on another node crosses the bus; any node opens its own streams."""

    domain = "cluster.example"
    component_domain = f"bot.{domain}"
    hosted = ()

    def __init__(self, workdir: Path, certs: Path, mode: str, dns, index: int,
                 store_url: str, nats_url: str):
        self.index = index
        self.add_users = index == 1
        self.s2s_extra = 'dialback_secret = "one secret for every node of cluster.example"'
        self.config_extra = f"""
[store]
url = "{store_url}"

[cluster]
nats_url = "{nats_url}"
"""
        super().__init__(workdir / f"node{index}", certs, mode, dns)

    def publish(self, dns):
        super().publish(dns if self.index == 1 else Unlisted())


class Prosody(Server):
    domain = "prosody.example"

    @staticmethod
    def available() -> bool:
        return shutil.which("prosody") is not None and shutil.which("prosodyctl") is not None

    def start(self):
        dns_host, dns_port = self.dns.addr
        crt, key = self.certs / f"{self.domain}.crt", self.certs / f"{self.domain}.key"
        ca = (f'cafile = "{self.certs / "ca.crt"}";' if self.mode == "external" else "")
        secure = "true" if self.mode == "external" else "false"
        (self.dir / "data").mkdir(exist_ok=True)
        cfg = self.dir / "prosody.cfg.lua"
        cfg.write_text(f"""
run_as_root = true
daemonize = false
pidfile = "{self.dir / 'prosody.pid'}"
data_path = "{self.dir / 'data'}"
interfaces = {{ "{self.host}" }}
local_interfaces = {{ "{self.host}" }}
c2s_ports = {{ {self.port} }}
s2s_ports = {{ {self.s2s_port} }}
c2s_direct_tls_ports = {{ }}
s2s_direct_tls_ports = {{ }}
http_ports = {{ }}
https_ports = {{ }}
component_ports = {{ }}
log = {{ debug = "{self.log_path}" }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "dialback"; "disco"; "ping"; "version"; "pep" }}
modules_disabled = {{ "offline"; "c2s_direct_tls"; "s2s_direct_tls" }}
authentication = "internal_hashed"
storage = "internal"
allow_registration = false
c2s_require_encryption = true
s2s_require_encryption = true
s2s_secure_auth = {secure}
unbound = {{ forward = "{dns_host}@{dns_port}"; resolvconf = false; hoststxt = false }}
ssl = {{ certificate = "{crt}"; key = "{key}"; {ca} }}
VirtualHost "{self.domain}"
""")
        self.cfg = cfg
        for name, pw in self.users.items():
            subprocess.run(["prosodyctl", "--config", str(cfg), "register", name, self.domain, pw],
                           check=True, capture_output=True, timeout=60)
        self.proc = subprocess.Popen(["prosody", "--config", str(cfg), "-F"],
                                     stdout=open(self.dir / "stdout.log", "w"),
                                     stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                     start_new_session=True)
        wait_port(self.host, self.port, self.proc, self.log_path)
        wait_port(self.host, self.s2s_port, self.proc, self.log_path)


class Ejabberd(Server):
    domain = "ejabberd.example"
    node = "rookeryfedtest@localhost"

    @staticmethod
    def available() -> bool:
        return (shutil.which("ejabberdctl") is not None and os.geteuid() == 0)

    def ctl(self, *args: str, check=True, timeout=90) -> subprocess.CompletedProcess:
        return subprocess.run(
            ["ejabberdctl", "--config-dir", str(self.dir), "--node", self.node,
             "--spool", str(self.dir / "spool"), "--logs", str(self.dir / "logs"), *args],
            check=check, capture_output=True, text=True, timeout=timeout)

    def start(self):
        spool, logs = self.dir / "spool", self.dir / "logs"
        spool.mkdir(exist_ok=True)
        logs.mkdir(exist_ok=True)
        self.log_path = logs / "ejabberd.log"
        pem = self.certs / f"{self.domain}.pem"
        # Erlang's DNS client (SRV lookups) asks the suite's DNS server only.
        dns_host, dns_port = self.dns.addr
        # (resolv_conf first: reading a resolv.conf replaces the nameservers set before it.)
        (self.dir / "inetrc").write_text(
            '{resolv_conf, ""}.\n{lookup, [file, native]}.\n'
            '{host, {127,0,0,1}, ["localhost"]}.\n'
            '{nameserver, {%s}, %d}.\n' % (dns_host.replace(".", ","), dns_port))
        # Erlang distribution on a fixed port of its own: no epmd daemon is started (or left
        # running), and ejabberdctl reaches the node on that port.
        (self.dir / "ejabberdctl.cfg").write_text(
            f"ERL_DIST_PORT={free_port('127.0.0.1')}\nINET_DIST_INTERFACE=127.0.0.1\n")
        use_tls = "required_trusted" if self.mode == "external" else "optional"
        ca = f'ca_file: "{self.certs / "ca.crt"}"\n' if self.mode == "external" else ""
        (self.dir / "ejabberd.yml").write_text(f"""
hosts:
  - "{self.domain}"
loglevel: info
log_rotate_count: 0
certfiles:
  - "{pem}"
{ca}
listen:
  -
    port: {self.port}
    ip: "{self.host}"
    module: ejabberd_c2s
    starttls: true
    max_stanza_size: 262144
  -
    port: {self.s2s_port}
    ip: "{self.host}"
    module: ejabberd_s2s_in
    max_stanza_size: 524288
s2s_use_starttls: {use_tls}
s2s_dns_timeout: 3
s2s_dns_retries: 1
auth_method: internal
acl:
  local:
    user_regexp: ""
access_rules:
  local:
    allow: local
  c2s:
    allow: all
  s2s:
    allow: all
s2s_access: s2s
modules:
  mod_disco: {{}}
  mod_ping: {{}}
  mod_roster: {{}}
  mod_s2s_dialback: {{}}
  mod_version:
    show_os: false
  mod_caps: {{}}
  mod_pubsub:
    plugins: ["flat", "pep"]
""")
        subprocess.run(["chown", "-R", "ejabberd:ejabberd", str(self.dir)], check=True)
        self.proc = subprocess.Popen(
            ["ejabberdctl", "--config-dir", str(self.dir), "--node", self.node,
             "--spool", str(spool), "--logs", str(logs), "foreground"],
            stdout=open(self.dir / "stdout.log", "w"), stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL, start_new_session=True)
        wait_port(self.host, self.port, self.proc, self.dir / "stdout.log", timeout=90)
        wait_port(self.host, self.s2s_port, self.proc, self.dir / "stdout.log", timeout=30)
        for name, pw in self.users.items():
            self.ctl("register", name, self.domain, pw)

    def log(self) -> str:
        return tail(self.log_path, 20000) + tail(self.dir / "stdout.log", 4000)

    def stop(self):
        if self.proc is not None and self.proc.poll() is None:
            self.ctl("stop", check=False, timeout=60)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        kill_group(self.proc)
