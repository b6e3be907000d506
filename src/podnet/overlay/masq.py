"""flannel's traffic rules: FLANNEL-POSTRTG (masquerade, with --ip-masq) and FLANNEL-FWD (forward accept).

The rule text is flannel's, byte for byte as `iptables -S` / iptables-save prints it, so flannel's e2e
checks and operators' greps find the same lines. Rules are loaded with one `iptables-restore --noflush`
per change: declaring `:FLANNEL-POSTRTG - [0:0]` flushes and refills only our chain, so rules of other
chains (kube-proxy's, the operator's) are never touched. The jump from POSTROUTING / FORWARD is appended
only when iptables-save shows it missing (iptables-restore has no "append unless present").

`plan()` is pure: desired rules + current iptables-save text -> restore payload (None when in sync). The
daemon calls `MasqRules.sync()` at start and every resync period (flannel: 5 s), so a rule someone deleted
comes back.

IPv6 (dual-stack or IPv6-only net-confs) gets the same chains and rule layout in ip6tables, with the IPv6
Network and subnet and ff00::/8 in place of 224.0.0.0/4, as flannel's iptables traffic manager does.
`TableRules.family` picks the tool (iptables-save/-restore or ip6tables-save/-restore).
"""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Sequence
from dataclasses import dataclass

from podnet.errors import PodnetError
from podnet.net import exec as nexec

log = logging.getLogger(__name__)

MASQ_CHAIN = "FLANNEL-POSTRTG"
FWD_CHAIN = "FLANNEL-FWD"
MASQ_COMMENT = '-m comment --comment "flanneld masq"'
FWD_COMMENT = '-m comment --comment "flanneld forward"'
MASQ_JUMP = f"-A POSTROUTING {MASQ_COMMENT} -j {MASQ_CHAIN}"
FWD_JUMP = f"-A FORWARD {FWD_COMMENT} -j {FWD_CHAIN}"
KUBE_MASQ_MARK = "0x4000/0x4000"  # kube-proxy's masquerade mark: kube-proxy masquerades those itself


class RulesError(PodnetError):
    """iptables-save / iptables-restore failed."""


Network = ipaddress.IPv4Network | ipaddress.IPv6Network
MULTICAST = {4: "224.0.0.0/4", 6: "ff00::/8"}


def masq_rules(network: Network, subnet: Network, *, random_fully: bool = True) -> list[str]:
    """FLANNEL-POSTRTG's rules: pod traffic inside the cluster network keeps its source; pod traffic
    leaving it is masqueraded; multicast is left alone. Network and subnet of one family."""
    if network.version != subnet.version:
        raise ValueError(f"masq_rules: {network} and {subnet} are of different families")
    n, p = str(network), str(subnet)
    mcast = MULTICAST[network.version]
    masq = "-j MASQUERADE --random-fully" if random_fully else "-j MASQUERADE"
    c = MASQ_COMMENT
    return [
        f"-A {MASQ_CHAIN} -m mark --mark {KUBE_MASQ_MARK} {c} -j RETURN",
        f"-A {MASQ_CHAIN} -s {p} -d {n} {c} -j RETURN",
        f"-A {MASQ_CHAIN} -s {n} -d {p} {c} -j RETURN",
        f"-A {MASQ_CHAIN} ! -s {n} -d {p} {c} -j RETURN",
        f"-A {MASQ_CHAIN} -s {n} ! -d {mcast} {c} {masq}",
        f"-A {MASQ_CHAIN} ! -s {n} -d {n} {c} {masq}",
    ]


def forward_rules(network: Network) -> list[str]:
    """FLANNEL-FWD's rules: accept forwarding to and from pods even when the FORWARD policy is DROP."""
    return [
        f"-A {FWD_CHAIN} -s {network} {FWD_COMMENT} -j ACCEPT",
        f"-A {FWD_CHAIN} -d {network} {FWD_COMMENT} -j ACCEPT",
    ]


@dataclass(frozen=True, slots=True)
class TableRules:
    """One table's part: our chain, its rules (None = the chain should not be in use), the jump to it."""

    table: str
    chain: str
    jump: str
    rules: tuple[str, ...] | None
    family: int = 4  # 4: iptables, 6: ip6tables


def desired(
    network: Network | None, subnet: Network | None, *, ip_masq: bool, forward: bool = True,
    random_fully: bool = True, network_v6: ipaddress.IPv6Network | None = None,
    subnet_v6: ipaddress.IPv6Network | None = None,
) -> list[TableRules]:
    """The tables' parts for each family that has a network and a subnet (IPv4 first, then IPv6)."""
    out: list[TableRules] = []
    for fam, net, sub in ((4, network, subnet), (6, network_v6, subnet_v6)):
        if net is None or sub is None:
            continue
        out += [
            TableRules("nat", MASQ_CHAIN, MASQ_JUMP,
                       tuple(masq_rules(net, sub, random_fully=random_fully)) if ip_masq else None, fam),
            TableRules("filter", FWD_CHAIN, FWD_JUMP, tuple(forward_rules(net)) if forward else None, fam),
        ]
    return out


_TOOLS = {4: ("iptables-save", "iptables-restore"), 6: ("ip6tables-save", "ip6tables-restore")}


def parse_save(text: str) -> dict[str, dict[str, list[str]]]:
    """iptables-save text -> {table: {chain: ["-A chain ..." lines]}} (chains declared but empty -> [])."""
    return {table: {name: chain.lines() for name, chain in chains.items()}
            for table, chains in nexec.parse_save(text).items()}


def plan(want: Sequence[TableRules], saved: str) -> str | None:
    """The iptables-restore --noflush payload that brings `saved` to `want`, or None if nothing differs."""
    current = parse_save(saved)
    blocks = []
    for t in want:
        chains = current.get(t.table, {})
        have_rules = chains.get(t.chain)
        parent = t.jump.split()[1]
        jumps = [line for line in chains.get(parent, []) if line == t.jump]
        lines: list[str] = []
        if t.rules is not None:
            if have_rules != list(t.rules) or len(jumps) != 1:
                lines.append(f":{t.chain} - [0:0]")  # declares the chain and flushes it
                lines += t.rules
                lines += ["-D" + j[2:] for j in jumps[1:]]  # duplicate jumps (someone re-added one)
                if not jumps:
                    lines.append(t.jump)
        elif have_rules is not None:  # turned off (e.g. --ip-masq dropped): remove jump and chain
            lines += ["-D" + j[2:] for j in jumps]
            lines += [f":{t.chain} - [0:0]", f"-X {t.chain}"]
        if lines:
            blocks.append(f"*{t.table}\n" + "".join(line + "\n" for line in lines) + "COMMIT\n")
    return "".join(blocks) or None


class MasqRules:
    """Keeps flannel's chains in the namespace the process runs in (or `netns`, for tests)."""

    def __init__(self, want: Sequence[TableRules], *, netns: str | None = None) -> None:
        self.want = list(want)
        self.netns = netns

    def families(self) -> list[int]:
        return sorted({t.family for t in self.want})

    def save(self, family: int = 4) -> str:
        try:
            return "".join(nexec.iptables_save(netns=self.netns, table=t.table, timeout=30, binary=_TOOLS[family][0])
                           for t in self.want if t.family == family)
        except nexec.CommandError as e:
            raise RulesError(str(e)) from e

    def sync(self) -> bool:
        """Bring the rules in line, IPv4 then IPv6; True if anything had to be (re)loaded."""
        changed = False
        for family in self.families():
            payload = plan([t for t in self.want if t.family == family], self.save(family))
            if payload is None:
                continue
            log.info("loading flannel rules (%s):\n%s", _TOOLS[family][1], payload.rstrip())
            try:
                nexec.iptables_restore(payload, netns=self.netns, noflush=True, wait=5, timeout=30,
                                       binary=_TOOLS[family][1])
            except nexec.CommandError as e:
                raise RulesError(str(e)) from e
            changed = True
        return changed


__all__ = [
    "FWD_CHAIN", "MASQ_CHAIN", "MasqRules", "RulesError", "TableRules", "desired", "forward_rules", "masq_rules",
    "parse_save", "plan",
]
