"""flannel's traffic rules: FLANNEL-POSTRTG (masquerade, with --ip-masq) and FLANNEL-FWD (forward accept).

The rule text is flannel's, byte for byte as `iptables -S` / iptables-save prints it, so flannel's e2e
checks and operators' greps find the same lines. Rules are loaded with one `iptables-restore --noflush`
per change: declaring `:FLANNEL-POSTRTG - [0:0]` flushes and refills only our chain, so rules of other
chains (kube-proxy's, the operator's) are never touched. The jump from POSTROUTING / FORWARD is appended
only when iptables-save shows it missing (iptables-restore has no "append unless present").

`plan()` is pure: desired rules + current iptables-save text -> restore payload (None when in sync). The
daemon calls `MasqRules.sync()` at start and every resync period (flannel: 5 s), so a rule someone deleted
comes back.
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


def masq_rules(
    network: ipaddress.IPv4Network, subnet: ipaddress.IPv4Network, *, random_fully: bool = True
) -> list[str]:
    """FLANNEL-POSTRTG's rules: pod traffic inside the cluster network keeps its source; pod traffic
    leaving it is masqueraded; multicast is left alone."""
    n, p = str(network), str(subnet)
    masq = "-j MASQUERADE --random-fully" if random_fully else "-j MASQUERADE"
    c = MASQ_COMMENT
    return [
        f"-A {MASQ_CHAIN} -m mark --mark {KUBE_MASQ_MARK} {c} -j RETURN",
        f"-A {MASQ_CHAIN} -s {p} -d {n} {c} -j RETURN",
        f"-A {MASQ_CHAIN} -s {n} -d {p} {c} -j RETURN",
        f"-A {MASQ_CHAIN} ! -s {n} -d {p} {c} -j RETURN",
        f"-A {MASQ_CHAIN} -s {n} ! -d 224.0.0.0/4 {c} {masq}",
        f"-A {MASQ_CHAIN} ! -s {n} -d {n} {c} {masq}",
    ]


def forward_rules(network: ipaddress.IPv4Network) -> list[str]:
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


def desired(
    network: ipaddress.IPv4Network, subnet: ipaddress.IPv4Network, *, ip_masq: bool, forward: bool = True,
    random_fully: bool = True,
) -> list[TableRules]:
    return [
        TableRules("nat", MASQ_CHAIN, MASQ_JUMP,
                   tuple(masq_rules(network, subnet, random_fully=random_fully)) if ip_masq else None),
        TableRules("filter", FWD_CHAIN, FWD_JUMP, tuple(forward_rules(network)) if forward else None),
    ]


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

    def save(self) -> str:
        try:
            return "".join(nexec.iptables_save(netns=self.netns, table=t.table, timeout=30) for t in self.want)
        except nexec.CommandError as e:
            raise RulesError(str(e)) from e

    def sync(self) -> bool:
        """Bring the rules in line; True if anything had to be (re)loaded."""
        payload = plan(self.want, self.save())
        if payload is None:
            return False
        log.info("loading flannel rules:\n%s", payload.rstrip())
        try:
            nexec.iptables_restore(payload, netns=self.netns, noflush=True, wait=5, timeout=30)
        except nexec.CommandError as e:
            raise RulesError(str(e)) from e
        return True


__all__ = [
    "FWD_CHAIN", "MASQ_CHAIN", "MasqRules", "RulesError", "TableRules", "desired", "forward_rules", "masq_rules",
    "parse_save", "plan",
]
