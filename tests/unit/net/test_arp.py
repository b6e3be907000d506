"""ARP frames (net/arp.py): parse and build agree with each other and with the RFC 826 layout."""

from __future__ import annotations

import ipaddress

from hypothesis import given
from hypothesis import strategies as st

from podnet.net import arp

MAC = st.binary(min_size=6, max_size=6)
IP = st.integers(0, 2**32 - 1).map(lambda n: str(ipaddress.IPv4Address(n)))


@given(MAC, MAC, st.sampled_from([arp.REQUEST, arp.REPLY]), MAC, IP, MAC, IP)
def test_build_then_parse_is_the_identity(dst, src, op, sha, spa, tha, tpa):
    pkt = arp.Arp(op, sha, spa, tha, tpa)
    frame = arp.build(dst, src, pkt)
    assert len(frame) == 60 and frame[:6] == dst and frame[6:12] == src
    assert arp.parse(frame) == (dst, pkt)


@given(st.binary(max_size=80))
def test_parse_never_raises_and_takes_only_ethernet_ipv4_arp(data):
    out = arp.parse(data)
    if out is not None:
        assert data[12:14] == b"\x08\x06" and data[14:20] == b"\x00\x01\x08\x00\x06\x04"


def test_a_request_for_an_announced_address_gets_the_reply_a_host_would_send():
    me, asker = bytes.fromhex("02aabbccddee"), bytes.fromhex("021122334455")
    req = arp.Arp(arp.REQUEST, asker, "192.168.77.1", b"\0" * 6, "192.168.77.192")
    # the on-wire request as `arping` sends it: broadcast, hardware type 1, IPv4, op 1
    wire = bytes.fromhex("ffffffffffff" "021122334455" "0806" "0001" "0800" "06" "04" "0001"
                         "021122334455" "c0a84d01" "000000000000" "c0a84dc0").ljust(60, b"\0")
    assert arp.build(arp.BROADCAST, asker, req) == wire
    assert arp.should_answer(arp.BROADCAST, req, me, {"192.168.77.192"})
    assert not arp.should_answer(arp.BROADCAST, req, me, {"192.168.77.193"})
    assert not arp.should_answer(bytes.fromhex("02ffffffffff"), req, me, {"192.168.77.192"})  # for another host
    rep = arp.reply_to(req, me)
    assert rep == arp.Arp(arp.REPLY, me, "192.168.77.192", asker, "192.168.77.1")
    assert not arp.should_answer(arp.BROADCAST, rep, me, {"192.168.77.192"})  # replies are never answered


def test_gratuitous_arp_is_a_request_and_a_reply_naming_the_address_twice():
    me = bytes.fromhex("02aabbccddee")
    req, rep = arp.gratuitous("192.168.77.192", me)
    assert (req.op, rep.op) == (arp.REQUEST, arp.REPLY)
    assert all(p.sender_ip == p.target_ip == "192.168.77.192" and p.sender_mac == me for p in (req, rep))
