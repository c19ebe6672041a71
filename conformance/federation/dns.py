"""A tiny authoritative DNS server on loopback for the federation suite (RFC 1035 wire format,
UDP, A/AAAA/SRV only), so every server finds the others through real SRV lookups
(RFC 6120 §3.2.1) without touching /etc/hosts or the system resolver:

    _xmpps-server._tcp.<domain> SRV 0 5 <port> <ip>     (direct TLS, XEP-0368, when published)
    _xmpp-server._tcp.<domain>  SRV 0 5 <port> <ip>     (targets are IP literals, which every
    <domain>                    A   <ip>                 peer resolves without DNS)
    <dotted ip>                 A   <ip>                 (for resolvers that look the target up)

Rookery asks it through `[s2s] dns_server`, Prosody through libunbound (`unbound.forward`),
ejabberd through Erlang's resolver (`{nameserver, ...}` in its inetrc). Unknown names get
NXDOMAIN, known names without records of the asked type an empty answer.
"""
from __future__ import annotations

import socket
import struct
import threading

A, AAAA, SRV = 1, 28, 33


def _name(labels: str) -> bytes:
    out = b""
    for part in labels.rstrip(".").split("."):
        if part:
            raw = part.encode()
            out += bytes([len(raw)]) + raw
    return out + b"\0"


def _read_name(msg: bytes, off: int) -> tuple[str, int]:
    parts = []
    while True:
        n = msg[off]
        if n == 0:
            return ".".join(parts), off + 1
        if n & 0xC0:  # compression pointer (not used in questions, but be safe)
            ptr = struct.unpack("!H", msg[off:off + 2])[0] & 0x3FFF
            name, _ = _read_name(msg, ptr)
            parts.append(name)
            return ".".join(parts), off + 2
        parts.append(msg[off + 1:off + 1 + n].decode("ascii", "replace"))
        off += 1 + n


class DnsServer:
    def __init__(self, host: str = "127.0.0.1"):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.addr = self.sock.getsockname()
        self.records: dict[tuple[str, int], list[bytes]] = {}
        self.names: set[str] = set()
        self.queries: list[tuple[str, int]] = []
        self._stop = False
        self.thread = threading.Thread(target=self._serve, daemon=True)

    def add_a(self, name: str, ip: str):
        self._add(name, A, socket.inet_aton(ip))

    def add_srv(self, name: str, priority: int, weight: int, port: int, target: str):
        self._add(name, SRV, struct.pack("!HHH", priority, weight, port) + _name(target))

    def add_server(self, domain: str, ip: str, port: int, direct_tls_port: int | None = None):
        """The records of an XMPP server: SRV for server-to-server (STARTTLS, and direct TLS
        preferred when `direct_tls_port` is given, XEP-0368), A for its domain."""
        if direct_tls_port:
            self.add_srv(f"_xmpps-server._tcp.{domain}", 0, 5, direct_tls_port, ip)
        self.add_srv(f"_xmpp-server._tcp.{domain}", 10 if direct_tls_port else 0, 5, port, ip)
        self.add_a(domain, ip)
        self.add_a(ip, ip)

    def _add(self, name: str, rtype: int, rdata: bytes):
        key = (name.lower().rstrip("."), rtype)
        self.records.setdefault(key, []).append(rdata)
        self.names.add(key[0])

    def start(self):
        self.thread.start()
        return self

    def stop(self):
        self._stop = True
        try:
            self.sock.sendto(b"", self.addr)
        except OSError:
            pass
        self.thread.join(5)
        self.sock.close()

    def _serve(self):
        while not self._stop:
            try:
                msg, peer = self.sock.recvfrom(4096)
            except OSError:
                return
            if self._stop:
                return
            try:
                reply = self.answer(msg)
            except (IndexError, struct.error):
                continue
            if reply:
                self.sock.sendto(reply, peer)

    def answer(self, msg: bytes) -> bytes | None:
        if len(msg) < 12:
            return None
        qid, flags, qd = struct.unpack("!HHH", msg[:6])
        if qd != 1 or flags & 0x8000:
            return None
        name, off = _read_name(msg, 12)
        qtype, qclass = struct.unpack("!HH", msg[off:off + 4])
        question = msg[12:off + 4]
        key = name.lower().rstrip(".")
        self.queries.append((key, qtype))
        rdatas = self.records.get((key, qtype), [])
        rcode = 0 if key in self.names else 3
        answers = b""
        for rd in rdatas:
            answers += struct.pack("!HHHIH", 0xC00C, qtype, 1, 60, len(rd)) + rd
        rflags = 0x8000 | 0x0400 | (flags & 0x0100) | 0x0080 | rcode  # QR AA RD RA
        return struct.pack("!HHHHHH", qid, rflags, 1, len(rdatas), 0, 0) + question + answers
