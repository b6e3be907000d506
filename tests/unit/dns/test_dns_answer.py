"""The answer logic against CoreDNS's own expectations: the cases below are the test tables of CoreDNS's
kubernetes plugin (plugin/kubernetes/handler_test.go, handler_pod_insecure_test.go,
handler_pod_verified_test.go, reverse_test.go, ns_test.go), run on the same fixture cluster, rewritten as
podnet records. Where the answer differs from what the Go test expects, the case says why."""

from __future__ import annotations

import ipaddress

import dns.name
import dns.rcode
import dns.rdatatype
import pytest

from podnet.dns.answer import (
    NAME_ERROR,
    Answerer,
    Config,
    NameError_,
    Reply,
    address_from_reverse,
    endpoint_hostname,
    parse_request,
)
from podnet.dns.records import Address, EndpointsRecord, PodRecord, Port, ServiceRecord, View

SERIAL = 1499347823
HTTP = (Port("http", "tcp", 80),)
NOPORT = (Port("", "", -1),)


def _svc(name: str, ns: str, ips: tuple[str, ...], ports=HTTP, type_="ClusterIP", ext="") -> ServiceRecord:
    return ServiceRecord(ns, name, type_, ips, ext, ports)


def _eps(svc: str, ns: str, addrs: list[tuple[str, str]], ports=HTTP) -> EndpointsRecord:
    return EndpointsRecord(ns, svc, tuple(Address(ip, host, "") for ip, host in addrs), ports)


# handler_test.go's APIConnServeTest: svcIndex and epsIndex
SERVE_FIXTURE = [
    _svc("kubedns", "kube-system", ("10.0.0.10",), (Port("dns", "udp", 53),)),
    _svc("svc1", "testns", ("10.0.0.1",)),
    _svc("svcempty", "testns", ("10.0.0.1",)),
    _svc("svc6", "testns", ("1234:abcd::1",)),
    _svc("hdls1", "testns", ("None",), NOPORT),
    _svc("external", "testns", ("",), HTTP, "ExternalName", "ext.interwebs.test"),
    _svc("external-to-service", "testns", ("",), HTTP, "ExternalName", "svc1.testns.svc.cluster.local."),
    _svc("hdlsprtls", "testns", ("None",), NOPORT),
    _svc("svc1", "unexposedns", ("10.0.0.2",)),
    _svc("svc-dual-stack", "testns", ("10.0.0.3", "10::3")),
    _eps("kubedns", "kube-system", [("172.0.0.100", "")], (Port("dns", "udp", 53),)),
    _eps("svc1", "testns", [("172.0.0.1", "ep1a")]),
    _eps("svcempty", "testns", []),
    _eps("hdls1", "testns", [("172.0.0.2", ""), ("172.0.0.3", ""), ("172.0.0.4", "dup-name"),
                             ("172.0.0.5", "dup-name"), ("5678:abcd::1", ""), ("5678:abcd::2", "")]),
    _eps("hdlsprtls", "testns", [("172.0.0.20", "")], NOPORT),
    PodRecord("podns", "foo", "10.240.0.1"),
    "testns", "podns", "unexposedns",
]

SOA = "cluster.local. 5 IN SOA ns.dns.cluster.local. hostmaster.cluster.local. {serial} 7200 1800 86400 5"
NXDOMAIN, NOERROR, SERVFAIL = dns.rcode.NXDOMAIN, dns.rcode.NOERROR, dns.rcode.SERVFAIL


def _rr_texts(rrsets) -> list[str]:  # type: ignore[no-untyped-def]
    return sorted(line for rs in rrsets for line in rs.to_text().splitlines())


def check(reply: Reply, rcode: int, answer=(), ns=(), extra=()) -> None:  # type: ignore[no-untyped-def]
    assert dns.rcode.to_text(reply.rcode) == dns.rcode.to_text(rcode)
    assert _rr_texts(reply.answer) == sorted(answer)
    assert _rr_texts(reply.authority) == sorted(s.format(serial=SERIAL) for s in ns)
    assert _rr_texts(reply.additional) == sorted(extra)


def ask(answerer: Answerer, view: View, qname: str, qtype: str) -> Reply:
    return answerer.serve(view, dns.name.from_text(qname), dns.rdatatype.from_text(qtype))


# (qname, qtype, rcode, answer, authority, additional): handler_test.go commonDnsTestCases + dnsTestCases
SERVE_CASES = [
    ("svc1.testns.svc.cluster.local.", "A", NOERROR, ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"], [], []),
    ("svcempty.testns.svc.cluster.local.", "A", NOERROR, ["svcempty.testns.svc.cluster.local. 5 IN A 10.0.0.1"], [], []),
    ("svc1.testns.svc.cluster.local.", "SRV", NOERROR,
     ["svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local."], [],
     ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"]),
    ("svc6.testns.svc.cluster.local.", "SRV", NOERROR,
     ["svc6.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc6.testns.svc.cluster.local."], [],
     ["svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1"]),
    ("_http._tcp.svc1.testns.svc.cluster.local.", "SRV", NOERROR,
     ["_http._tcp.svc1.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc1.testns.svc.cluster.local."], [],
     ["svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"]),
    ("hdls1.testns.svc.cluster.local.", "A", NOERROR,
     [f"hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.{i}" for i in (2, 3, 4, 5)], [], []),
    ("hdlsprtls.testns.svc.cluster.local.", "A", NOERROR, ["hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20"],
     [], []),
    ("svc1.testns.svc.cluster.local.", "AAAA", NOERROR, [], [SOA], []),  # NODATA: an A exists, no AAAA
    ("svc0.testns.svc.cluster.local.", "AAAA", NXDOMAIN, [], [SOA], []),
    ("svc0.testns.svc.cluster.local.", "A", NXDOMAIN, [], [SOA], []),
    ("svc0.svc-nons.svc.cluster.local.", "A", NXDOMAIN, [], [SOA], []),  # no such namespace
    ("dns-version.cluster.local.", "TXT", NOERROR, ['dns-version.cluster.local. 28800 IN TXT "1.1.0"'], [], []),
    ("svc1.testns.svc.cluster.local.", "TXT", NOERROR, [], [SOA], []),
    ("svc0.svc-nons.svc.cluster.local.", "TXT", NXDOMAIN, [], [SOA], []),
    ("bogusendpoint.hdls1.testns.svc.cluster.local.", "A", NXDOMAIN, [], [SOA], []),
    ("bogusendpoint.svc0.testns.svc.cluster.local.", "A", NXDOMAIN, [], [SOA], []),
    ("svc6.testns.svc.cluster.local.", "AAAA", NOERROR, ["svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1"],
     [], []),
    ("_http._tcp.svc6.testns.svc.cluster.local.", "SRV", NOERROR,
     ["_http._tcp.svc6.testns.svc.cluster.local. 5 IN SRV 0 100 80 svc6.testns.svc.cluster.local."], [],
     ["svc6.testns.svc.cluster.local. 5 IN AAAA 1234:abcd::1"]),
    ("hdls1.testns.svc.cluster.local.", "AAAA", NOERROR,
     ["hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1", "hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2"],
     [], []),
    ("svc.cluster.local.", "A", NOERROR, [], [SOA], []),
    ("pod.cluster.local.", "A", NOERROR, [], [SOA], []),
    ("testns.svc.cluster.local.", "A", NOERROR, [], [SOA], []),
    ("svc.cluster.local.", "NS", NOERROR, [], [SOA], []),
    ("testns.svc.cluster.local.", "NS", NOERROR, [], [SOA], []),
    ("foo.cluster.local.", "NS", NXDOMAIN, [], [SOA], []),
    ("foo.svc.cluster.local.", "NS", NXDOMAIN, [], [SOA], []),
    ("svc-dual-stack.testns.svc.cluster.local.", "A", NOERROR,
     ["svc-dual-stack.testns.svc.cluster.local. 5 IN A 10.0.0.3"], [], []),
    ("svc-dual-stack.testns.svc.cluster.local.", "AAAA", NOERROR,
     ["svc-dual-stack.testns.svc.cluster.local. 5 IN AAAA 10::3"], [], []),
    ("svc-dual-stack.testns.svc.cluster.local.", "SRV", NOERROR,
     ["svc-dual-stack.testns.svc.cluster.local. 5 IN SRV 0 50 80 svc-dual-stack.testns.svc.cluster.local."], [],
     ["svc-dual-stack.testns.svc.cluster.local. 5 IN A 10.0.0.3",
      "svc-dual-stack.testns.svc.cluster.local. 5 IN AAAA 10::3"]),
    ("svc1.testns.svc.cluster.local.", "SOA", NOERROR, [], [SOA], []),  # SOA only at the apex
    ("endpoint.external.testns.svc.cluster.local.", "CNAME", NXDOMAIN, [], [SOA], []),
    ("subdomain.subdomain.external.testns.svc.cluster.local.", "CNAME", NXDOMAIN, [], [SOA], []),
    ("_http._tcp.hdls1.testns.svc.cluster.local.", "SRV", NOERROR,
     [f"_http._tcp.hdls1.testns.svc.cluster.local. 5 IN SRV 0 16 80 {h}.hdls1.testns.svc.cluster.local."
      for h in ("172-0-0-2", "172-0-0-3", "5678-abcd--1", "5678-abcd--2", "dup-name")], [],
     ["172-0-0-2.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2",
      "172-0-0-3.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.3",
      "5678-abcd--1.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::1",
      "5678-abcd--2.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2",
      "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.4",
      "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.5"]),
    ("5678-abcd--2.hdls1.testns.svc.cluster.local.", "AAAA", NOERROR,
     ["5678-abcd--2.hdls1.testns.svc.cluster.local. 5 IN AAAA 5678:abcd::2"], [], []),
    ("172-0-0-20.hdlsprtls.testns.svc.cluster.local.", "A", NOERROR,
     ["172-0-0-20.hdlsprtls.testns.svc.cluster.local. 5 IN A 172.0.0.20"], [], []),
    ("172-0-0-2.hdls1.testns.svc.cluster.local.", "A", NOERROR,
     ["172-0-0-2.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.2"], [], []),
    ("dup-name.hdls1.testns.svc.cluster.local.", "A", NOERROR,
     ["dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.4",
      "dup-name.hdls1.testns.svc.cluster.local. 5 IN A 172.0.0.5"], [], []),
    ("external.testns.svc.cluster.local.", "CNAME", NOERROR,
     ["external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."], [], []),
    # CoreDNS's test stubs an upstream that answers ext.interwebs.test with an A record; here there is no
    # upstream (no `forward`), so the lookup adds nothing and the CNAME alone is the answer.
    ("external.testns.svc.cluster.local.", "A", NOERROR,
     ["external.testns.svc.cluster.local. 5 IN CNAME ext.interwebs.test."], [], []),
    ("external-to-service.testns.svc.cluster.local.", "A", NOERROR,
     ["external-to-service.testns.svc.cluster.local. 5 IN CNAME svc1.testns.svc.cluster.local.",
      "svc1.testns.svc.cluster.local. 5 IN A 10.0.0.1"], [], []),
    # an endpoint name works on a ClusterIP Service too (findServices: r.endpoint != "")
    ("ep1a.svc1.testns.svc.cluster.local.", "A", NOERROR, ["ep1a.svc1.testns.svc.cluster.local. 5 IN A 172.0.0.1"],
     [], []),
    # other types: NODATA where the name exists, NXDOMAIN where it does not (the fake A lookup)
    ("svc1.testns.svc.cluster.local.", "MX", NOERROR, [], [SOA], []),
    ("svc1.testns.svc.cluster.local.", "HINFO", NOERROR, [], [SOA], []),
    ("svc0.testns.svc.cluster.local.", "HINFO", NXDOMAIN, [], [SOA], []),
    ("svc1.testns.svc.cluster.local.", "AXFR", dns.rcode.REFUSED, [], [], []),
    # case-insensitive, and the answer keeps the question's case
    ("SVC1.TestNS.svc.Cluster.Local.", "A", NOERROR, ["SVC1.TestNS.svc.Cluster.Local. 5 IN A 10.0.0.1"], [], []),
]


@pytest.fixture(scope="module")
def serve_view() -> View:
    return View.build(SERVE_FIXTURE, serial=SERIAL)


@pytest.mark.parametrize(("qname", "qtype", "rcode", "answer", "ns", "extra"), SERVE_CASES,
                         ids=[f"{c[0]}{c[1]}" for c in SERVE_CASES])
def test_coredns_handler_cases(serve_view, qname, qtype, rcode, answer, ns, extra) -> None:  # type: ignore[no-untyped-def]
    answerer = Answerer(Config(zones=("cluster.local.",), fallthrough=(), pods="disabled"))
    check(ask(answerer, serve_view, qname, qtype), rcode, answer, ns, extra)


def test_not_synced_gives_servfail_for_names_that_do_not_exist() -> None:
    """notSyncedTestCases: before the first list, a name error is SERVFAIL (with the SOA), not NXDOMAIN."""
    view = View.build(SERVE_FIXTURE, serial=SERIAL, synced=False)
    reply = ask(Answerer(Config(zones=("cluster.local.",), fallthrough=())), view,
                "svc0.testns.svc.cluster.local.", "A")
    check(reply, SERVFAIL, [], [SOA], [])


def test_out_of_zone_is_servfail_without_a_next_plugin(serve_view) -> None:  # type: ignore[no-untyped-def]
    reply = ask(Answerer(Config()), serve_view, "example.com.", "A")
    assert reply.rcode == SERVFAIL and not reply.authoritative and not reply.authority


POD_INSECURE = [
    ("10-240-0-1.podns.pod.cluster.local.", "A", NOERROR, ["10-240-0-1.podns.pod.cluster.local. 5 IN A 10.240.0.1"]),
    ("172-0-0-2.podns.pod.cluster.local.", "A", NOERROR, ["172-0-0-2.podns.pod.cluster.local. 5 IN A 172.0.0.2"]),
    ("blah.podns.pod.cluster.local.", "A", NXDOMAIN, []),
    ("blah.podns.pod.cluster.local.", "AAAA", NXDOMAIN, []),
    ("blah.podns.pod.cluster.local.", "HINFO", NXDOMAIN, []),
    ("blah.pod-nons.pod.cluster.local.", "A", NXDOMAIN, []),
    ("podns.pod.cluster.local.", "A", NOERROR, []),
]
POD_VERIFIED = [
    ("10-240-0-1.podns.pod.cluster.local.", "A", NOERROR, ["10-240-0-1.podns.pod.cluster.local. 5 IN A 10.240.0.1"]),
    ("podns.pod.cluster.local.", "A", NOERROR, []),
    ("svcns.svc.cluster.local.", "A", NOERROR, []),
    ("pod-nons.pod.cluster.local.", "A", NXDOMAIN, []),
    ("172-0-0-2.podns.pod.cluster.local.", "A", NXDOMAIN, []),  # no pod has that IP
]


@pytest.mark.parametrize(("mode", "case"), [("insecure", c) for c in POD_INSECURE] + [("verified", c) for c in POD_VERIFIED])
def test_coredns_pod_modes(mode, case) -> None:  # type: ignore[no-untyped-def]
    qname, qtype, rcode, answer = case
    # GetNamespaceByName of those tests: every namespace exists except pod-nons and nsnoexist
    view = View.build([*SERVE_FIXTURE, "svcns"], serial=SERIAL)
    reply = ask(Answerer(Config(zones=("cluster.local.",), fallthrough=(), pods=mode)), view, qname, qtype)
    check(reply, rcode, answer, [] if answer else [SOA], [])


def test_pods_disabled_is_nxdomain(serve_view) -> None:  # type: ignore[no-untyped-def]
    reply = ask(Answerer(Config(pods="disabled")), serve_view, "10-240-0-1.podns.pod.cluster.local.", "A")
    check(reply, NXDOMAIN, [], [SOA], [])


# reverse_test.go's APIConnReverseTest and its zones
REVERSE_ZONES = ("cluster.local.", "0.10.in-addr.arpa.", "168.192.in-addr.arpa.",
                 "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa.",
                 "0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.7.7.0.0.0.0.d.f.ip6.arpa.")
REVERSE_FIXTURE = [
    _svc("svc1", "testns", ("192.168.1.100",)),
    _eps("svc1", "testns", [("10.0.0.100", "ep1a"), ("10.0.0.99", "double-ep")]),
    _eps("svc1", "testns", [("1234:abcd::1", "ep1b"), ("fd00:77:30::a", "ip6svc1ex"), ("fd00:77:30::2:9ba6", "ip6svc1in")]),
    _eps("svc1", "testns", [("10.0.0.100", "ep1a")]),
    _eps("svc2", "testns", [("10.0.0.99", "double-ep")]),
    "testns",
]
V6A = "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.d.c.b.a.4.3.2.1.ip6.arpa."
REVERSE_CASES = [
    ("100.0.0.10.in-addr.arpa.", "PTR", NOERROR,
     ["100.0.0.10.in-addr.arpa. 5 IN PTR ep1a.svc1.testns.svc.cluster.local."], None),
    ("100.1.168.192.in-addr.arpa.", "PTR", NOERROR,
     ["100.1.168.192.in-addr.arpa. 5 IN PTR svc1.testns.svc.cluster.local."], None),
    (V6A, "PTR", NOERROR, [f"{V6A} 5 IN PTR ep1b.svc1.testns.svc.cluster.local."], None),
    ("a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.7.7.0.0.0.0.d.f.ip6.arpa.", "PTR", NOERROR,
     ["a.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.7.7.0.0.0.0.d.f.ip6.arpa. 5 IN PTR "
      "ip6svc1ex.svc1.testns.svc.cluster.local."], None),
    ("6.a.b.9.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.7.7.0.0.0.0.d.f.ip6.arpa.", "PTR", NOERROR,
     ["6.a.b.9.2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.3.0.0.7.7.0.0.0.0.d.f.ip6.arpa. 5 IN PTR "
      "ip6svc1in.svc1.testns.svc.cluster.local."], None),
    ("101.0.0.10.in-addr.arpa.", "PTR", NXDOMAIN, [],
     "0.10.in-addr.arpa. 5 IN SOA ns.dns.0.10.in-addr.arpa. hostmaster.0.10.in-addr.arpa. {serial} 7200 1800 86400 5"),
    ("example.org.cluster.local.", "PTR", NXDOMAIN, [], SOA),
    ("svc1.testns.svc.cluster.local.", "PTR", NOERROR, [], SOA),
    ("svc1.testns.svc.0.10.in-addr.arpa.", "A", NXDOMAIN, [],
     "0.10.in-addr.arpa. 5 IN SOA ns.dns.0.10.in-addr.arpa. hostmaster.0.10.in-addr.arpa. {serial} 7200 1800 86400 5"),
    ("100.0.0.10.cluster.local.", "PTR", NXDOMAIN, [], SOA),
    ("99.0.0.10.in-addr.arpa.", "PTR", NOERROR,
     ["99.0.0.10.in-addr.arpa. 5 IN PTR double-ep.svc1.testns.svc.cluster.local.",
      "99.0.0.10.in-addr.arpa. 5 IN PTR double-ep.svc2.testns.svc.cluster.local."], None),
]


@pytest.mark.parametrize(("qname", "qtype", "rcode", "answer", "soa"), REVERSE_CASES, ids=[c[0] for c in REVERSE_CASES])
def test_coredns_reverse_cases(qname, qtype, rcode, answer, soa) -> None:  # type: ignore[no-untyped-def]
    view = View.build(REVERSE_FIXTURE, serial=SERIAL)
    reply = ask(Answerer(Config(zones=REVERSE_ZONES, fallthrough=())), view, qname, qtype)
    check(reply, rcode, answer, [soa] if soa else [], [])


def test_reverse_miss_falls_through_to_servfail_as_kubeadms_corefile() -> None:
    """`fallthrough in-addr.arpa ip6.arpa` with no plugin after kubernetes: SERVFAIL, not NXDOMAIN."""
    view = View.build(REVERSE_FIXTURE, serial=SERIAL)
    reply = ask(Answerer(Config()), view, "101.0.0.10.in-addr.arpa.", "PTR")
    assert reply.rcode == SERVFAIL and not reply.authority
    hit = ask(Answerer(Config()), view, "100.0.0.10.in-addr.arpa.", "PTR")
    check(hit, NOERROR, ["100.0.0.10.in-addr.arpa. 5 IN PTR ep1a.svc1.testns.svc.cluster.local."])


def test_ns_records_name_the_service_whose_endpoint_is_this_server(serve_view) -> None:  # type: ignore[no-untyped-def]
    """ns_test.go: the apex NS points at the Service in front of this server's own endpoint, with glue;
    ns.dns.<zone> answers with its ClusterIP."""
    answerer = Answerer(Config(zones=("cluster.local.",), local_ips=("172.0.0.100",)))
    check(ask(answerer, serve_view, "cluster.local.", "NS"), NOERROR,
          ["cluster.local. 5 IN NS kubedns.kube-system.svc.cluster.local."], [],
          ["kubedns.kube-system.svc.cluster.local. 5 IN A 10.0.0.10"])
    check(ask(answerer, serve_view, "ns.dns.cluster.local.", "A"), NOERROR,
          ["ns.dns.cluster.local. 5 IN A 10.0.0.10"])
    alone = Answerer(Config(zones=("cluster.local.",), local_ips=("10.9.9.9",)))  # no endpoint has it
    check(ask(alone, serve_view, "cluster.local.", "NS"), NOERROR, ["cluster.local. 5 IN NS ns.dns.cluster.local."],
          [], ["ns.dns.cluster.local. 5 IN A 10.9.9.9"])


def test_external_name_loops_and_long_chains_end() -> None:
    """x CNAME x is dropped; a CNAME cycle inside the zone stops (the chain limit): no hang, no crash."""
    view = View.build([
        _svc("a", "testns", ("",), HTTP, "ExternalName", "b.testns.svc.cluster.local"),
        _svc("b", "testns", ("",), HTTP, "ExternalName", "a.testns.svc.cluster.local"),
        _svc("self", "testns", ("",), HTTP, "ExternalName", "self.testns.svc.cluster.local"),
        "testns"], serial=SERIAL)
    answerer = Answerer(Config(zones=("cluster.local.",), fallthrough=()))
    assert ask(answerer, view, "a.testns.svc.cluster.local.", "A").rcode == NOERROR
    check(ask(answerer, view, "self.testns.svc.cluster.local.", "A"), NOERROR, [], [SOA], [])


@pytest.mark.parametrize(("labels", "want"), [
    ([], ""),
    (["svc"], ""),
    (["ns", "svc"], "..ns.svc"),
    (["web", "ns", "svc"], ".web.ns.svc"),
    (["ep", "web", "ns", "svc"], "ep.web.ns.svc"),
    (["_http", "_tcp", "web", "ns", "svc"], "http.tcp..web.ns.svc"),
    (["http", "tcp", "web", "ns", "pod"], "http.tcp..web.ns.pod"),
])
def test_parse_request(labels, want) -> None:  # type: ignore[no-untyped-def]
    r = parse_request(labels)
    got = "" if not r.pod_or_svc else (
        f"{r.port}.{r.protocol}.{r.endpoint}.{r.service}.{r.namespace}.{r.pod_or_svc}".lstrip(".")
        if r.port else f"{r.endpoint}.{r.service}.{r.namespace}.{r.pod_or_svc}")
    assert got == want


@pytest.mark.parametrize("labels", [["foo"], ["a", "b", "c", "d", "ns", "svc"], ["web", "ns", "x"]])
def test_parse_request_name_errors(labels) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(NameError_):
        parse_request(labels)
    assert isinstance(NAME_ERROR, NameError_)


@pytest.mark.parametrize(("name", "ip"), [
    ("4.3.2.1.in-addr.arpa.", "1.2.3.4"),
    ("3.2.1.in-addr.arpa.", ""),
    ("04.3.2.1.in-addr.arpa.", ""),  # leading zeros are no IPv4 address (Go's ParseIP since 1.17)
    ("x.3.2.1.in-addr.arpa.", ""),
    (V6A.lower(), "1234:abcd::1"),
    (ipaddress.ip_address("::ffff:10.96.0.10").reverse_pointer + ".", "10.96.0.10"),  # v4-mapped, as Go prints it
    ("1.0.ip6.arpa.", ""),
    ("svc1.testns.svc.cluster.local.", ""),
])
def test_address_from_reverse(name, ip) -> None:  # type: ignore[no-untyped-def]
    assert address_from_reverse(name) == ip


@pytest.mark.parametrize(("addr", "pod_names", "want"), [
    (Address("10.0.0.1", "web-0", "web-0"), False, "web-0"),
    (Address("10.0.0.1", "", "web-abc"), False, "10-0-0-1"),
    (Address("10.0.0.1", "", "web-abc"), True, "web-abc"),
    (Address("1234:abcd::", "", ""), False, "1234-abcd--0"),
    (Address("fd00::1", "", ""), False, "fd00--1"),
])
def test_endpoint_hostname(addr, pod_names, want) -> None:  # type: ignore[no-untyped-def]
    assert endpoint_hostname(addr, pod_names) == want
