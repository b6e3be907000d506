"""flannel's FLANNEL-POSTRTG / FLANNEL-FWD rule text (flannel-golden-cases.md §8) and restore planning."""

from __future__ import annotations

import ipaddress

from podnet.overlay import masq

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

EMPTY_SAVE = """\
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
COMMIT
*filter
:INPUT ACCEPT [0:0]
:FORWARD ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
COMMIT
"""


def test_rule_text_is_flannels() -> None:
    assert "\n".join([masq.MASQ_JUMP, *masq.masq_rules(N, P)]) + "\n" == GOLDEN_NAT
    assert "\n".join([masq.FWD_JUMP, *masq.forward_rules(N)]) + "\n" == GOLDEN_FWD


def test_without_random_fully() -> None:
    rules = masq.masq_rules(N, P, random_fully=False)
    assert rules[-1].endswith("-j MASQUERADE") and "--random-fully" not in "".join(rules)


def test_plan_from_empty_tables_loads_everything() -> None:
    payload = masq.plan(masq.desired(N, P, ip_masq=True), EMPTY_SAVE)
    assert payload is not None
    nat, filt = payload.split("COMMIT\n")[:2]
    assert nat.startswith("*nat\n:FLANNEL-POSTRTG - [0:0]\n")
    assert set(GOLDEN_NAT.splitlines()) <= set(nat.splitlines())
    assert set(GOLDEN_FWD.splitlines()) <= set(filt.splitlines())


def _saved(nat_rules: str, fwd_rules: str) -> str:
    return (
        "*nat\n:POSTROUTING ACCEPT [0:0]\n:FLANNEL-POSTRTG - [0:0]\n" + nat_rules + "COMMIT\n"
        "*filter\n:FORWARD ACCEPT [0:0]\n:FLANNEL-FWD - [0:0]\n"
        '-A FORWARD -m comment --comment "kubernetes forwarding rules" -j KUBE-FORWARD\n' + fwd_rules + "COMMIT\n"
    )


def test_plan_in_sync_is_none() -> None:
    assert masq.plan(masq.desired(N, P, ip_masq=True), _saved(GOLDEN_NAT, GOLDEN_FWD)) is None


def test_plan_restores_a_deleted_rule_without_duplicating_the_jump() -> None:
    damaged = "".join(line + "\n" for line in GOLDEN_NAT.splitlines() if "224.0.0.0" not in line)
    payload = masq.plan(masq.desired(N, P, ip_masq=True), _saved(damaged, GOLDEN_FWD))
    assert payload is not None and payload.startswith("*nat\n") and "*filter" not in payload
    assert masq.MASQ_JUMP not in payload  # the jump is still there; only the chain is refilled
    assert "224.0.0.0/4" in payload


def test_plan_re_adds_a_missing_jump() -> None:
    no_jump = GOLDEN_FWD.split("\n", 1)[1]
    payload = masq.plan(masq.desired(N, P, ip_masq=True), _saved(GOLDEN_NAT, no_jump))
    assert payload is not None and masq.FWD_JUMP in payload


def test_plan_removes_masq_when_turned_off() -> None:
    payload = masq.plan(masq.desired(N, P, ip_masq=False), _saved(GOLDEN_NAT, GOLDEN_FWD))
    assert payload == (
        '*nat\n-D POSTROUTING -m comment --comment "flanneld masq" -j FLANNEL-POSTRTG\n'
        ":FLANNEL-POSTRTG - [0:0]\n-X FLANNEL-POSTRTG\nCOMMIT\n"
    )


def test_plan_replaces_rules_of_an_old_subnet() -> None:
    old = GOLDEN_NAT.replace("10.42.1.0/24", "10.42.7.0/24")
    payload = masq.plan(masq.desired(N, P, ip_masq=True), _saved(old, GOLDEN_FWD))
    assert payload is not None and "10.42.7.0" not in payload and "10.42.1.0/24" in payload
