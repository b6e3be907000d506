"""docs/dns-conformance.md against a live server: its cluster applied to a fresh store, `podnet dns run` on
127.0.0.1, every row of its table asked and the answer written in the table's notation. A row whose
answer changes fails here, and so does a row whose podnet and CoreDNS columns differ without a †."""

from __future__ import annotations

import re
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.opcode
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset
import pytest

pytestmark = pytest.mark.integration

PODNET = str(Path(sys.executable).with_name("podnet"))
DOC = Path(__file__).resolve().parents[3] / "docs" / "dns-conformance.md"


def _doc() -> tuple[str, list[tuple[str, str, str, str]]]:
    text = DOC.read_text()
    cluster = text.split("## The cluster", 1)[1].split("```yaml", 1)[1].split("```", 1)[0]
    table = text.split("## The table", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in table.splitlines():
        if not line.startswith("| `"):
            continue
        cells = [c.strip() for c in re.split(r"(?<!\\)\|", line.strip().strip("|"))]
        query, podnet, coredns, source = (c.replace("\\|", "|") for c in cells)
        rows.append((query.strip("`"), podnet.strip("`"), coredns.strip("`"), source))
    return cluster, rows


CLUSTER, ROWS = _doc()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, int]]:
    d = tmp_path_factory.mktemp("conformance")
    store = f"sqlite:///{d}/state.db"
    r = subprocess.run([PODNET, "--store", store, "apply", "-f", "-"], input=CLUSTER, text=True, capture_output=True)
    assert r.returncode == 0, r.stderr
    log = d / "dns.log"
    with log.open("wb") as out:
        proc = subprocess.Popen([PODNET, "--store", store, "dns", "run", "--listen", "127.0.0.1:0"],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            m = re.search(r"on 127\.0\.0\.1:(\d+) \(udp, tcp\)", log.read_text())
            if m:
                break
            assert proc.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield ("127.0.0.1", int(m.group(1)))
    finally:
        proc.terminate()
        proc.wait(10)


def _raw(kind: str) -> bytes:
    """The crafted messages of the raw: rows (see the notation in the document)."""
    base = bytearray(dns.message.make_query("web.default.svc.cluster.local.", "A").to_wire())
    if kind == "short":
        return bytes(base[:5])
    if kind == "qdcount=2":
        return bytes(base[:4]) + struct.pack("!H", 2) + bytes(base[6:]) + bytes(base[12:])
    if kind == "qdcount=0":
        return bytes(base[:4]) + struct.pack("!H", 0) + bytes(base[6:12])
    if kind == "arcount=3":
        return bytes(base[:10]) + struct.pack("!H", 3) + bytes(base[12:])
    if kind == "truncated-question":
        return bytes(base[:-3])
    if kind == "qr":
        struct.pack_into("!H", base, 2, struct.unpack_from("!H", base, 2)[0] | dns.flags.QR)
        return bytes(base)
    if kind.startswith("opcode="):
        op = dns.opcode.from_text(kind.split("=", 1)[1])
        q = dns.message.make_query("cluster.local.", "SOA") if op == dns.opcode.NOTIFY else \
            dns.message.make_query("web.default.svc.cluster.local.", "A")
        q.set_opcode(op)
        return q.to_wire()
    raise AssertionError(f"unknown raw query {kind!r}")


def _exchange(addr: tuple[str, int], wire: bytes, tcp: bool) -> bytes | None:
    if tcp:
        with socket.create_connection(addr, timeout=3) as s:
            s.sendall(struct.pack("!H", len(wire)) + wire)
            buf = b""
            while len(buf) < 2 or len(buf) < 2 + struct.unpack("!H", buf[:2])[0]:
                chunk = s.recv(65535)
                if not chunk:
                    return None
                buf += chunk
            return buf[2:]
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.settimeout(1.0)
        s.sendto(wire, addr)
        try:
            return s.recv(65535)
        except TimeoutError:
            return None


def ask(addr: tuple[str, int], query: str) -> tuple[str, bytes | None]:
    """(question name, response bytes) for a query cell."""
    if query.startswith("raw:"):
        return "web.default.svc.cluster.local.", _exchange(addr, _raw(query[4:]), False)
    name, rdtype, *opts = query.split()
    kw: dict[str, object] = {}
    tcp = False
    rdclass = dns.rdataclass.IN
    for opt in opts:
        if opt == "@tcp":
            tcp = True
        elif opt.startswith("+edns="):
            kw.update(use_edns=0, payload=int(opt.split("=")[1]))
        elif opt.startswith("+ednsver="):
            kw.update(use_edns=int(opt.split("=")[1]))
        elif opt.startswith("class="):
            rdclass = dns.rdataclass.from_text(opt.split("=")[1])
        else:
            raise AssertionError(f"unknown option {opt!r} in {query!r}")
    q = dns.message.make_query(name + ".", rdtype, rdclass=rdclass, **kw)  # type: ignore[arg-type]
    return name + ".", _exchange(addr, q.to_wire(), tcp)


def _records(rrsets: list[dns.rrset.RRset], qname: str) -> list[str]:
    out = []
    for rs in rrsets:
        for rd in rs:
            owner = rs.name.to_text()
            text = rd.to_text()
            if rs.rdtype == dns.rdatatype.SOA:
                parts = text.split()
                parts[2] = "SERIAL"
                text = " ".join(parts)
            item = f"{dns.rdatatype.to_text(rs.rdtype)} {text}"
            out.append(item if owner.lower() == qname.lower() else f"{owner} {item}")
    by_type: dict[str, int] = {}
    for item in out:
        by_type[item.split()[0]] = by_type.get(item.split()[0], 0) + 1
    if len(out) > 6 and len(by_type) == 1:
        return [f"{len(out)} {next(iter(by_type))} records"]
    return sorted(out)


def notation(qname: str, wire: bytes | None) -> str:
    """The answer in the document's notation."""
    if wire is None:
        return "(no reply)"
    rcode = wire[3] & 0xF
    if rcode in (dns.rcode.FORMERR, dns.rcode.NOTIMP) and wire[4:12] == bytes(8):
        return dns.rcode.to_text(rcode)
    r = dns.message.from_wire(wire)
    name = dns.rcode.to_text(r.rcode())
    soa = [rs for rs in r.authority if rs.rdtype == dns.rdatatype.SOA]
    if r.rcode() == dns.rcode.NOERROR and not r.answer:
        assert soa and len(r.authority) == 1, f"NODATA without the SOA: {r}"
        return "NODATA"
    if r.rcode() == dns.rcode.NXDOMAIN:
        assert soa and not r.answer, f"NXDOMAIN without the SOA: {r}"
        return "NXDOMAIN"
    if r.rcode() != dns.rcode.NOERROR:
        assert not r.answer and not r.authority, f"{name} with records: {r}"
        return name
    assert r.flags & dns.flags.AA and not r.authority
    text = name + (" +tc" if r.flags & dns.flags.TC else "") + ": " + "; ".join(_records(r.answer, qname))
    if r.additional:
        text += " | extra: " + "; ".join(_records(r.additional, qname))
    return text


def test_the_table_has_the_cases_it_claims() -> None:
    assert len(ROWS) >= 60
    assert len({q for q, *_ in ROWS}) == len(ROWS)  # no row twice


@pytest.mark.parametrize(("query", "podnet", "coredns", "source"), ROWS, ids=[r[0] for r in ROWS])
def test_row(server, query, podnet, coredns, source) -> None:  # type: ignore[no-untyped-def]
    qname, wire = ask(server, query)
    assert notation(qname, wire) == podnet
    if "†" not in source:
        assert podnet == coredns, "podnet and CoreDNS differ on a row without a † note"
