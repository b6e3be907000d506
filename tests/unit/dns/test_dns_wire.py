"""Bytes in, bytes out: header checks, EDNS, truncation by whole records, the answer cache, and (hypothesis)
that no input makes the responder fail: it drops the message or answers with a parseable reply."""

from __future__ import annotations

import struct

import dns.edns
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.rcode
import dns.rdatatype
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnet.dns.answer import Answerer, Config
from podnet.dns.records import Address, EndpointsRecord, Port, ServiceRecord, View
from podnet.dns.wire import Responder

HTTP = (Port("http", "TCP", 80),)
BIG = tuple(Address(f"10.244.{i // 250}.{i % 250 + 1}", "", "") for i in range(120))
FIXTURE = [
    ServiceRecord("default", "web", "ClusterIP", ("10.96.0.11",), "", HTTP),
    ServiceRecord("default", "alias", "ExternalName", ("",), "web.default.svc.cluster.local", HTTP),
    ServiceRecord("default", "pets", "ClusterIP", ("None",), "", HTTP),
    EndpointsRecord("default", "pets", (Address("10.244.1.10", "pet-0", ""), Address("10.244.2.20", "", "")), HTTP),
    ServiceRecord("default", "big", "ClusterIP", ("None",), "", HTTP),
    EndpointsRecord("default", "big", BIG, HTTP),
]


class Views:
    def __init__(self) -> None:
        self.view = View.build(FIXTURE, serial=7, generation=1)

    def __call__(self) -> View:
        return self.view


@pytest.fixture
def responder() -> Responder:
    return Responder(Answerer(Config()), Views())


def _ask(responder: Responder, q: dns.message.Message, tcp: bool = False) -> dns.message.Message:
    out = responder.respond(q.to_wire(), tcp)
    assert out is not None
    return dns.message.from_wire(out)


def test_short_and_response_messages_are_dropped(responder) -> None:  # type: ignore[no-untyped-def]
    assert responder.respond(b"\x12\x34\x01", False) is None
    q = dns.message.make_query("web.default.svc.cluster.local.", "A")
    q.flags |= dns.flags.QR
    assert responder.respond(q.to_wire(), False) is None


def test_bad_header_counts_get_formerr_with_the_id_kept(responder) -> None:  # type: ignore[no-untyped-def]
    q = dns.message.make_query("web.default.svc.cluster.local.", "A")
    wire = bytearray(q.to_wire())
    struct.pack_into("!H", wire, 4, 2)  # qdcount 2
    out = responder.respond(bytes(wire), False)
    assert out is not None
    msg_id, flags, qd, an, ns, ar = struct.unpack("!HHHHHH", out)
    assert msg_id == q.id and flags & dns.flags.QR and flags & 0xF == dns.rcode.FORMERR
    assert (qd, an, ns, ar) == (0, 0, 0, 0)


def test_garbage_after_a_valid_header_is_formerr(responder) -> None:  # type: ignore[no-untyped-def]
    out = responder.respond(struct.pack("!HHHHHH", 77, 0x0100, 1, 0, 0, 0) + b"\x3fabc", False)
    assert out is not None and struct.unpack("!HH", out[:4]) == (77, dns.flags.QR | dns.flags.RD | 1)


def test_other_opcodes_are_notimp(responder) -> None:  # type: ignore[no-untyped-def]
    q = dns.message.make_query("web.default.svc.cluster.local.", "A")
    q.set_opcode(dns.opcode.UPDATE)
    out = responder.respond(q.to_wire(), False)
    assert out is not None
    _, flags = struct.unpack("!HH", out[:4])
    assert flags & 0xF == dns.rcode.NOTIMP and dns.opcode.from_flags(flags) == dns.opcode.UPDATE


def test_edns_is_echoed_and_badvers_refused(responder) -> None:  # type: ignore[no-untyped-def]
    q = dns.message.make_query("web.default.svc.cluster.local.", "A", use_edns=0, payload=1232, want_dnssec=True)
    r = _ask(responder, q)
    assert r.edns == 0 and r.payload == 1232 and r.ednsflags & dns.flags.DO
    assert [rr.to_text() for rr in r.answer] == ["web.default.svc.cluster.local. 5 IN A 10.96.0.11"]
    plain = _ask(responder, dns.message.make_query("web.default.svc.cluster.local.", "A"))
    assert plain.edns == -1  # no OPT in, none out
    v1 = dns.message.make_query("web.default.svc.cluster.local.", "A", use_edns=1)
    r1 = _ask(responder, v1)
    assert r1.rcode() == dns.rcode.BADVERS and r1.edns == 0 and not r1.answer


def test_udp_answers_are_cut_to_512_bytes_or_the_edns_size_with_tc(responder) -> None:  # type: ignore[no-untyped-def]
    q = dns.message.make_query("big.default.svc.cluster.local.", "A")
    out = responder.respond(q.to_wire(), False)
    assert out is not None and len(out) <= 512
    r = dns.message.from_wire(out)
    assert r.flags & dns.flags.TC and 0 < len(r.answer[0]) < 120  # whole records, as many as fit
    e = dns.message.make_query("big.default.svc.cluster.local.", "A", use_edns=0, payload=1232)
    out = responder.respond(e.to_wire(), False)
    assert out is not None and 512 < len(out) <= 1232
    r = dns.message.from_wire(out)
    assert r.flags & dns.flags.TC and r.edns == 0  # the OPT record survives truncation
    t = _ask(responder, q, tcp=True)  # TCP: everything, no TC
    assert not t.flags & dns.flags.TC and len(t.answer[0]) == 120


def test_small_edns_sizes_count_as_512(responder) -> None:  # type: ignore[no-untyped-def]
    q = dns.message.make_query("big.default.svc.cluster.local.", "A", use_edns=0, payload=100)
    out = responder.respond(q.to_wire(), False)
    assert out is not None and 400 < len(out) <= 512


def test_cache_follows_the_view_generation() -> None:
    views = Views()
    responder = Responder(Answerer(Config()), views)
    q = dns.message.make_query("web.default.svc.cluster.local.", "A")
    first = _ask(responder, q)
    again = _ask(responder, q)
    assert responder.stats.cache_hits == 1 and again.id == q.id and again.answer == first.answer
    views.view = View.build([ServiceRecord("default", "web", "ClusterIP", ("10.96.0.12",), "", HTTP)],
                            serial=8, generation=2)
    moved = _ask(responder, q)
    assert [rr.to_text() for rr in moved.answer] == ["web.default.svc.cluster.local. 5 IN A 10.96.0.12"]


CASE_NAMES = ["web.default.svc.cluster.local.", "alias.default.svc.cluster.local.", "pets.default.svc.cluster.local.",
              "nope.default.svc.cluster.local.", "_http._tcp.pets.default.svc.cluster.local.",
              "pet-0.pets.default.svc.cluster.local.", "11.0.96.10.in-addr.arpa.", "cluster.local.", "example.com."]


@settings(max_examples=300, deadline=None)
@given(name=st.sampled_from(CASE_NAMES), rdtype=st.sampled_from(["A", "AAAA", "SRV", "PTR", "SOA", "NS", "TXT", "CNAME"]),
       first=st.randoms(use_true_random=False), second=st.randoms(use_true_random=False),
       edns=st.booleans(), tcp=st.booleans())
def test_a_cached_answer_is_byte_for_byte_the_fresh_one_whatever_the_case(name, rdtype, first, second, edns, tcp) -> None:  # type: ignore[no-untyped-def]
    """The cache is keyed by the name in lower case (0x20 resolvers still hit it); a hit must equal what
    a cold server would say to that very query, in that query's case."""
    def spell(rng) -> str:  # type: ignore[no-untyped-def]
        return "".join(c.upper() if rng.random() < 0.5 else c for c in name)

    warm = Responder(Answerer(Config()), Views())
    q1 = dns.message.make_query(spell(first), rdtype, use_edns=0 if edns else None)
    warm.respond(q1.to_wire(), tcp)
    q2 = dns.message.make_query(spell(second), rdtype, use_edns=0 if edns else None)
    got = warm.respond(q2.to_wire(), tcp)
    cold = Responder(Answerer(Config()), Views()).respond(q2.to_wire(), tcp)
    assert got == cold
    if rdtype != "SRV":  # SRV is keyed by the exact case
        assert warm.stats.cache_hits == 1


# ---- property tests: random input never breaks the responder ------------------------------------------


def _check_reply(query: bytes, out: bytes | None) -> None:
    if out is None:
        return  # dropped: too short for a header, or a response
    assert len(out) >= 12 and out[:2] == query[:2]
    msg_id, flags = struct.unpack("!HH", out[:4])
    assert flags & dns.flags.QR
    rcode = flags & 0xF
    if rcode in (dns.rcode.FORMERR, dns.rcode.NOTIMP):
        return
    dns.message.from_wire(out)  # everything else is a well-formed message


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_random_bytes_never_crash(responder, data) -> None:  # type: ignore[no-untyped-def]
    _check_reply(data, responder.respond(data, False))
    _check_reply(data, responder.respond(data, True))
    assert responder.stats.errors == 0


LABEL = st.one_of(st.sampled_from(["web", "big", "default", "svc", "pod", "cluster", "local", "_http", "_tcp",
                                   "10-244-0-1", "in-addr", "arpa", "ip6", "1", "0", "96", "10", "dns-version",
                                   "ns", "dns", "WEB", "kube-system"]),
                  st.binary(min_size=1, max_size=20))


@settings(max_examples=500, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(labels=st.lists(LABEL, max_size=9), rdtype=st.integers(0, 65535), rdclass=st.sampled_from([1, 3, 255, 254]),
       edns=st.sampled_from([-1, 0, 1]), payload=st.integers(0, 65535), tcp=st.booleans())
def test_random_questions_get_a_valid_answer(responder, labels, rdtype, rdclass, edns, payload, tcp) -> None:  # type: ignore[no-untyped-def]
    raw = [lb.encode() if isinstance(lb, str) else lb for lb in labels]
    try:
        name = dns.name.Name([*raw, b""])
    except dns.name.NameTooLong:
        return
    q = dns.message.Message()
    q.flags = dns.flags.RD
    q.question = [dns.rrset.RRset(name, rdclass, rdtype)]
    if edns >= 0:
        q.use_edns(edns, 0, max(payload, 0) or 512)
    wire = q.to_wire()
    out = responder.respond(wire, tcp)
    assert out is not None
    r = dns.message.from_wire(out)
    assert r.id == q.id and r.question[0].name == name and r.question[0].rdtype == rdtype
    assert r.rcode() in (dns.rcode.NOERROR, dns.rcode.NXDOMAIN, dns.rcode.SERVFAIL, dns.rcode.REFUSED,
                         dns.rcode.BADVERS)
    assert len(out) <= (65535 if tcp else max(512, payload if edns == 0 else 512))
    assert responder.stats.errors == 0
