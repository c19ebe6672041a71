"""Every metric family the operations guide documents is exposed, parsed by the Python
`prometheus_client` OpenMetrics parser (the families of issue 14's list that exist)."""
import re
from pathlib import Path

from prometheus_client.openmetrics.parser import text_string_to_metric_families

from test_admin import http

ROOT = Path(__file__).resolve().parent.parent
GUIDE = (ROOT / "docs" / "operations.md").read_text()
DASHBOARD = (ROOT / "deploy" / "grafana-dashboard.json").read_text()


async def test_every_documented_metric_is_exposed(server):
    # A family with labels has samples once something was counted in it (logins).
    c = await server.login("alice", "m")
    await c.close()
    status, _, text = http(server, "GET", "/metrics", token=None)
    assert status == 200
    exposed = {f.name for f in text_string_to_metric_families(text)}
    table = GUIDE.split("scrape_configs:", 1)[1].split("Worth alerting on", 1)[0]
    documented = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            first_cell = row.split("|")[1]
            documented |= set(re.findall(r"`(\w+)", first_cell))
    # The parser names families without the _total / _info suffixes of their samples.
    documented = {re.sub(r"_(total|info)$", "", d) for d in documented}
    assert len(documented) >= 20
    assert documented <= exposed, sorted(documented - exposed)
    # The Grafana dashboard queries only what exists.
    queried = {re.sub(r"_(total|info|bucket)$", "", m)
               for m in re.findall(r"\b((?:rookery|process)_\w+)", DASHBOARD)}
    assert queried <= exposed, sorted(queried - exposed)
