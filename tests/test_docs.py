"""Keeps the documents true: disco features are listed in docs/compliance.md, config keys in
docs/configuration.md."""
import re
from pathlib import Path

import pytest

from xmpp_raw import NS_DISCO_INFO, tag

ROOT = Path(__file__).resolve().parent.parent
COMPLIANCE = (ROOT / "docs" / "compliance.md").read_text()
CONFIGURATION = (ROOT / "docs" / "configuration.md").read_text()

# Disco feature → the spec row in docs/compliance.md that covers it. A module that advertises
# a new feature adds its namespace here and its row there.
FEATURE_SPEC = {
    "http://jabber.org/protocol/disco#info": "XEP-0030",
    "http://jabber.org/protocol/disco#items": "XEP-0030",
    "http://jabber.org/protocol/caps": "XEP-0115",
    "urn:xmpp:ping": "XEP-0199",
    "jabber:iq:version": "XEP-0092",
    "jabber:iq:register": "XEP-0077",
    "jabber:iq:roster": "RFC 6121",
    "urn:xmpp:blocking": "XEP-0191",
    "urn:xmpp:carbons:2": "XEP-0280",
    "msgoffline": "XEP-0160",
    "urn:xmpp:mam:2": "XEP-0313",
    "urn:xmpp:mam:2#extended": "XEP-0313",
    "urn:xmpp:sid:0": "XEP-0359",
    "http://jabber.org/protocol/pubsub": "XEP-0060",
    "urn:xmpp:sm:3": "XEP-0198",
    "vcard-temp": "XEP-0054",
    "jabber:iq:last": "XEP-0012",
    "jabber:iq:private": "XEP-0049",
    "urn:xmpp:time": "XEP-0202",
    "http://jabber.org/protocol/commands": "XEP-0050",
    "urn:xmpp:extdisco:2": "XEP-0215",
    "urn:xmpp:push:0": "XEP-0357",
}


def compliance_rows() -> dict[str, str]:
    """First column → status column of every table row."""
    rows = {}
    for line in COMPLIANCE.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 2 and cells[1] in ("Full", "Partial", "Planned"):
            rows[cells[0]] = cells[1]
    return rows


async def test_every_advertised_feature_is_in_the_compliance_table(server):
    c = await server.login("alice", "a")
    infos = [await c.iq("get", server.domain, f"<query xmlns='{NS_DISCO_INFO}'/>"),
             await c.iq("get", "bob@localhost", f"<query xmlns='{NS_DISCO_INFO}'/>")]
    await c.close()
    rows = compliance_rows()
    for info in infos:
        for f in info.find(tag(NS_DISCO_INFO, "query")).findall(tag(NS_DISCO_INFO, "feature")):
            var = f.get("var")
            base = var.split("#")[0] if var.startswith("http://jabber.org/protocol/pubsub") else var
            spec = FEATURE_SPEC.get(base)
            assert spec, f"disco advertises {var}: map it to its spec in tests/test_docs.py"
            matching = [status for name, status in rows.items() if spec in name]
            assert matching, f"{spec} ({var}) has no row in docs/compliance.md"
            assert "Planned" not in matching, f"{spec} is advertised but marked Planned"


def _config_fields(path: Path) -> list[str]:
    """Field names of the serde config structs in a Rust config file."""
    text = path.read_text()
    fields = []
    for struct in re.finditer(r"#\[derive\([^)]*Deserialize[^)]*\)\]\s*(?:#\[[^\]]*\]\s*)*"
                              r"pub struct \w+ \{(.*?)\n\}", text, re.S):
        fields += re.findall(r"^\s*pub (\w+):", struct.group(1), re.M)
    return fields


@pytest.mark.parametrize("rel", sorted(
    str(p.relative_to(ROOT)) for p in ROOT.glob("crates/*/src/config.rs")))
def test_every_config_key_is_documented(rel):
    fields = _config_fields(ROOT / rel)
    if not fields:
        pytest.skip(f"{rel} has no serde config struct (not part of rookery.toml)")
    documented = set(re.findall(r"^\| `(\w+)` \|", CONFIGURATION, re.M))
    sections = set(re.findall(r"^## `\[\[?(\w+)\]", CONFIGURATION, re.M))
    missing = [f for f in fields if f not in documented and f not in sections]
    assert not missing, f"{rel}: keys not in docs/configuration.md: {missing}"


def test_example_config_keys_are_documented():
    text = (ROOT / "deploy" / "rookery.toml").read_text()
    keys = re.findall(r"^(?:# ?)?(\w+) = ", text, re.M)
    documented = set(re.findall(r"^\| `(\w+)` \|", CONFIGURATION, re.M))
    assert keys and not [k for k in keys if k not in documented]


def test_the_openapi_document_parses_and_names_every_transport():
    """docs/openapi.yaml is what API clients are generated from: it must be YAML, and the
    session transports it lists must be those the server reports
    (`Transport::as_str`, crates/core/src/session.rs)."""
    import yaml
    doc = yaml.safe_load((ROOT / "docs" / "openapi.yaml").read_text())
    session = doc["components"]["schemas"]["Session"]["properties"]
    source = (ROOT / "crates" / "core" / "src" / "session.rs").read_text()
    reported = set(re.findall(r'Transport::\w+ => "(\w+)"', source))
    assert reported and set(session["transport"]["enum"]) == reported


# RFC 6120 §8.3.3 stanza error conditions and §4.9.3 stream error conditions.
CONDITIONS = [
    "bad-request", "conflict", "feature-not-implemented", "forbidden", "gone",
    "internal-server-error", "item-not-found", "jid-malformed", "not-acceptable",
    "not-allowed", "not-authorized", "policy-violation", "recipient-unavailable", "redirect",
    "registration-required", "remote-server-not-found", "remote-server-timeout",
    "resource-constraint", "service-unavailable", "subscription-required",
    "undefined-condition", "unexpected-request", "connection-timeout", "host-unknown",
    "system-shutdown",
]


def test_example_config_comments_name_the_documented_conditions():
    """deploy/rookery.toml is the .deb's conffile: an error its comments promise for a key is
    the one docs/configuration.md gives for it."""
    text = (ROOT / "deploy" / "rookery.toml").read_text()
    for key, comment in re.findall(r"^(\w+) = [^#\n]*#(.*)$", text, re.M):
        named = [c for c in CONDITIONS if re.search(rf"\b{c}\b", comment)]
        rows = [l for l in CONFIGURATION.splitlines() if l.startswith(f"| `{key}` |")]
        for c in named:
            assert any(c in r for r in rows), f"deploy/rookery.toml {key}: {c} not documented"


def test_the_install_steps_put_the_binary_where_the_unit_runs_it():
    """docs/operations.md's steps for the systemd unit (and the unit's own header) install the
    binary at the path of the unit's ExecStart."""
    ops = (ROOT / "docs" / "operations.md").read_text()
    unit = (ROOT / "deploy" / "rookery.service").read_text()
    exec_start = re.search(r"^ExecStart=(\S+)", unit, re.M).group(1)
    installed = re.findall(r"install -m 0755 target/release/rookery (\S+)", ops + unit)
    assert installed and set(installed) == {exec_start}, (installed, exec_start)
