"""FLANNEL-POSTRTG / FLANNEL-FWD loaded into a real namespace with iptables-restore --noflush."""

from __future__ import annotations

import ipaddress

import pytest

from podnet.net import netns
from podnet.overlay import masq

pytestmark = pytest.mark.integration

N = ipaddress.IPv4Network("10.42.0.0/16")
P = ipaddress.IPv4Network("10.42.1.0/24")

GOLDEN_NAT = """\
-A POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG
-A FLANNEL-POSTRTG -m mark --mark 0x4000/0x4000 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.42.1.0/24 -d 10.42.0.0/16 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.42.0.0/16 -d 10.42.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.1.0/24 -m comment --comment "flanneld masq" -j RETURN
-A FLANNEL-POSTRTG -s 10.42.0.0/16 ! -d 224.0.0.0/4 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
-A FLANNEL-POSTRTG ! -s 10.42.0.0/16 -d 10.42.0.0/16 -m comment --comment "flanneld masq" -j MASQUERADE --random-fully
"""
GOLDEN_FWD = """\
-A FORWARD -m comment --comment "flanneld forward" -j FLANNEL-FWD
-A FLANNEL-FWD -s 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
-A FLANNEL-FWD -d 10.42.0.0/16 -m comment --comment "flanneld forward" -j ACCEPT
"""
OTHERS = """\
*nat
:KUBE-TEST - [0:0]
-A POSTROUTING -s 1.2.3.4/32 -j RETURN
-A KUBE-TEST -d 5.6.7.8/32 -j RETURN
COMMIT
*filter
:FORWARD DROP [0:0]
-A FORWARD -m comment --comment "kubernetes forwarding rules" -j ACCEPT
COMMIT
"""


def rules(ns: str, table: str) -> list[str]:
    """iptables -S output, `-A` lines only (what flannel's e2e compares)."""
    out = netns.run(ns, ["iptables", "-t", table, "-S"]).stdout
    return [line for line in out.splitlines() if line.startswith("-A")]


def not_ours(ns: str, table: str) -> list[str]:
    return [line for line in rules(ns, table) if "flanneld" not in line]


def flannel_lines(ns: str, table: str) -> str:
    return "".join(line + "\n" for line in rules(ns, table) if "flanneld" in line)


def test_rules_loaded_kept_and_restored(netns_factory) -> None:  # type: ignore[no-untyped-def]
    ns = netns_factory("ovl-masq")
    netns.run(ns, ["iptables-restore", "--noflush"], input=OTHERS)
    others_nat, others_filter = rules(ns, "nat"), rules(ns, "filter")

    mgr = masq.MasqRules(masq.desired(N, P, ip_masq=True), netns=ns)
    assert mgr.sync() is True
    assert flannel_lines(ns, "nat") == GOLDEN_NAT
    assert flannel_lines(ns, "filter") == GOLDEN_FWD
    # other people's rules and chains are untouched, and ours are appended after theirs
    assert not_ours(ns, "nat") == others_nat and not_ours(ns, "filter") == others_filter
    assert [r.split()[-1] for r in rules(ns, "nat") if r.startswith("-A POSTROUTING")] == ["RETURN", "FLANNEL-POSTRTG"]
    assert [r.split()[-1] for r in rules(ns, "filter") if r.startswith("-A FORWARD")] == ["ACCEPT", "FLANNEL-FWD"]
    assert "-P FORWARD DROP" in netns.run(ns, ["iptables", "-S", "FORWARD"]).stdout

    assert mgr.sync() is False  # in sync: no restore at all

    # someone deletes a rule and adds a second jump: the next check puts things back exactly
    netns.run(ns, ["iptables", "-t", "nat", "-D", "FLANNEL-POSTRTG", "5"])
    netns.run(ns, ["iptables", "-t", "nat", "-A", "POSTROUTING", "-m", "comment", "--comment", "flanneld masq",
                   "-j", "FLANNEL-POSTRTG"])
    netns.run(ns, ["iptables", "-D", "FORWARD", "-m", "comment", "--comment", "flanneld forward", "-j", "FLANNEL-FWD"])
    assert mgr.sync() is True
    assert flannel_lines(ns, "nat") == GOLDEN_NAT
    assert flannel_lines(ns, "filter") == GOLDEN_FWD
    assert not_ours(ns, "nat") == others_nat and not_ours(ns, "filter") == others_filter

    # a new lease subnet replaces the old rules; no trace of the old one
    other = ipaddress.IPv4Network("10.42.9.0/24")
    assert masq.MasqRules(masq.desired(N, other, ip_masq=True), netns=ns).sync() is True
    assert flannel_lines(ns, "nat") == GOLDEN_NAT.replace("10.42.1.0/24", "10.42.9.0/24")

    # --ip-masq dropped: the masquerade chain and its jump go, the forward rules stay
    assert masq.MasqRules(masq.desired(N, other, ip_masq=False), netns=ns).sync() is True
    assert flannel_lines(ns, "nat") == ""
    assert "FLANNEL-POSTRTG" not in netns.run(ns, ["iptables-save", "-t", "nat"]).stdout
    assert flannel_lines(ns, "filter") == GOLDEN_FWD
    assert rules(ns, "nat") == others_nat


def test_restore_failure_is_an_error_naming_the_command(netns_factory) -> None:  # type: ignore[no-untyped-def]
    ns = netns_factory("ovl-mfail")
    # a chain named like ours but referenced from elsewhere cannot be deleted: iptables-restore fails
    netns.run(ns, ["iptables-restore", "--noflush"], input=(
        "*nat\n:FLANNEL-POSTRTG - [0:0]\n-A OUTPUT -j FLANNEL-POSTRTG\nCOMMIT\n"))
    with pytest.raises(masq.RulesError, match="iptables-restore"):
        masq.MasqRules(masq.desired(N, P, ip_masq=False), netns=ns).sync()
