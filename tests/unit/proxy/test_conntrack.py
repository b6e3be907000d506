"""The UDP conntrack reconciler's decisions (pure): which flows are stale, and the conntrack filters used."""

from __future__ import annotations

from podnet.proxy.conntrack import Deletion, Flow, UdpServicePort, parse_flows, stale

LISTING = """udp      17 28 src=10.10.1.2 dst=10.96.0.53 sport=40123 dport=53 src=10.244.1.2 dst=10.10.1.1 sport=5353 dport=40123 [ASSURED] mark=0 use=1
udp      17 29 src=10.10.1.2 dst=10.96.0.53 sport=40124 dport=53 src=10.244.1.3 dst=10.10.1.1 sport=5353 dport=40124 mark=0 use=1
udp      17 20 src=10.10.1.2 dst=10.10.1.1 sport=5000 dport=30053 [UNREPLIED] src=10.10.1.1 dst=10.10.1.2 sport=30053 dport=5000 mark=0 use=1
udp      17 10 src=10.10.1.2 dst=8.8.8.8 sport=5001 dport=53 src=8.8.8.8 dst=10.10.1.2 sport=53 dport=5001 mark=0 use=1
conntrack v1.4.7 (conntrack-tools): 4 flow entries have been shown.
"""


def test_parse_flows_reads_original_and_reply_directions() -> None:
    flows = parse_flows(LISTING)
    assert len(flows) == 4
    assert flows[0] == Flow("10.10.1.2", "10.96.0.53", 40123, 53, "10.244.1.2", 5353)
    assert flows[2].reply_src == "10.10.1.1"


def test_flows_to_a_removed_endpoint_are_stale() -> None:
    dns = UdpServicePort(ips=["10.96.0.53"], port=53, serving={"10.244.1.3"})
    assert stale(parse_flows(LISTING), [dns]) == [Deletion("10.96.0.53", 53, "10.244.1.2")]


def test_unnatted_flows_to_a_node_port_are_stale_once_it_has_endpoints() -> None:
    np = UdpServicePort(ips=["10.96.0.54"], port=53, node_port=30053, serving={"10.244.1.3"})
    assert stale(parse_flows(LISTING), [np]) == [Deletion(None, 30053, "10.10.1.1")]


def test_service_without_endpoints_loses_all_its_flows() -> None:
    dns = UdpServicePort(ips=["10.96.0.53"], port=53, serving=set())
    assert {d.reply_src for d in stale(parse_flows(LISTING), [dns])} == {"10.244.1.2", "10.244.1.3"}


def test_flows_to_live_endpoints_and_other_destinations_are_kept() -> None:
    dns = UdpServicePort(ips=["10.96.0.53"], port=53, serving={"10.244.1.2", "10.244.1.3"})
    assert stale(parse_flows(LISTING), [dns]) == []


def test_deletion_argv_uses_conntrack_filters() -> None:
    assert Deletion("10.96.0.53", 53, "10.244.1.2").argv() == [
        "-D", "-p", "udp", "--orig-dst", "10.96.0.53", "--orig-port-dst", "53", "--reply-src", "10.244.1.2"]
    assert Deletion(None, 30053, "10.10.1.1").argv() == [
        "-D", "-p", "udp", "--orig-port-dst", "30053", "--reply-src", "10.10.1.1"]
