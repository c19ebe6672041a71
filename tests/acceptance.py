"""Runs ../shared/acceptance (an independent slixmpp-based runner) against the zero-config
server: `rookery serve` in a fresh directory, users alice/bob/carol added through the CLI. The
only configuration is the external component the runner needs (scenarios 13 and 14:
`bot.localhost`, secret `componentsecret`), since zero config declares none; everything else
is the default. The scenarios listed in REQUIRED must pass; the others are reported.

Scenario 24 (XEP-0077) is the one that skips: it looks for the registration feature before
TLS, and with TLS required (the default) the server offers nothing but STARTTLS there (RFC
6120 §5.3.1; registration is offered after TLS when `[registration] enabled`, and a client that
registers over TLS is tested in tests/test_register.py). Turning registration on here would
not change what the runner sees.

Usage: ROOKERY_BIN=target/debug/rookery python tests/acceptance.py
(ACCEPTANCE_RUNNER=/path/to/acceptance/run where the runner is not beside the repository,
e.g. from a git worktree)
"""

import os
import re
import socket
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
RUNNER = os.environ.get("ACCEPTANCE_RUNNER",
                        os.path.join(HERE, "..", "..", "shared", "acceptance", "run"))
BIN = os.environ.get("ROOKERY_BIN", os.path.join(HERE, "..", "target", "debug", "rookery"))
# Foundation (issue 2) scenarios; later issues add theirs here as they land.
REQUIRED = ["01_", "02_", "03_", "04_", "05_", "06_", "07_", "08_", "09_", "10_", "15_", "16_",
            "17_", "18_", "19_", "20_", "21_", "22_", "13_", "14_", "11_", "12_", "23_"]
# The one non-default setting: the component of scenarios 13 and 14 (XEP-0114).
CONFIG = """[[component.service]]
domain = "bot.localhost"
secret = "componentsecret"
"""


def wait_port(port: int, timeout: float = 30) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.1)
    raise SystemExit(f"server did not listen on {port}")


def main() -> int:
    work = tempfile.mkdtemp(prefix="rookery-acceptance-")
    with open(os.path.join(work, "rookery.toml"), "w") as f:
        f.write(CONFIG)
    cfg = ["--config", "rookery.toml"]
    for user in ("alice", "bob", "carol"):
        subprocess.run([BIN, *cfg, "user", "add", user], input=f"{user}pass\n", text=True,
                       cwd=work, check=True, capture_output=True)
    log = open(os.path.join(work, "server.log"), "w")
    server = subprocess.Popen([BIN, *cfg, "serve"], cwd=work, stdout=log,
                              stderr=subprocess.STDOUT)
    try:
        wait_port(5222)
        wait_port(5347)
        out = subprocess.run(
            [RUNNER, "--host", "127.0.0.1", "--port", "5222", "--domain", "localhost",
             "--tls-insecure", "--component-port", "5347", "--component-secret",
             "componentsecret", "--server-pid", str(server.pid), "-v"],
            text=True, capture_output=True, timeout=900)
        print(out.stdout)
        print(out.stderr, file=sys.stderr)
        status = {}
        for kind, name in re.findall(r"^(PASS|FAIL|SKIP) (\S+?)(?::|$)", out.stdout, re.M):
            status[name] = kind
        missing = [p for p in REQUIRED
                   if not any(n.startswith(p) and k == "PASS" for n, k in status.items())]
        if server.poll() is not None:
            print("server died during the acceptance run", file=sys.stderr)
            return 1
        if missing:
            print(f"required acceptance scenarios not passing: {missing}", file=sys.stderr)
            return 1
        passed = sum(1 for k in status.values() if k == "PASS")
        print(f"acceptance: {passed} passed, {len(status) - passed} not passed (required all pass)")
        return 0
    finally:
        server.terminate()
        try:
            server.wait(10)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


if __name__ == "__main__":
    sys.exit(main())
