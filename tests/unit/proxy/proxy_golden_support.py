"""Helpers shared by the proxy golden tests: case loading, kube-proxy's normalisation, consistency.

Cases use the format of shared/reference/kube-proxy-golden (a `proxier:` block of resolved settings
plus `stateAfterEvent` objects). `proxier: {$ref: FILE, key: override}` pulls shared defaults from
FILE in the same folder, so each case states only what differs from kube-proxy's NewFakeProxier.
"""

from __future__ import annotations

import re
from functools import cmp_to_key
from pathlib import Path

import yaml

from podnet.proxy.model import DesiredState
from podnet.proxy.settings import ProxierSettings, settings_from_proxier_block
from podnet.proxy.tracker import desired_state_from_objects

GOLDEN_DIR = Path(__file__).resolve().parent / "golden"
SHARED_GOLDEN = Path(__file__).resolve().parents[3].parent / "shared" / "reference" / "kube-proxy-golden"


def load_case(path: Path) -> dict:
    case = yaml.safe_load(path.read_text())
    block = dict(case.get("proxier") or {})
    ref = block.pop("$ref", None)
    if ref:
        base = yaml.safe_load((path.parent / ref).read_text())
        base.update(block)
        block = base
    case["proxier"] = block
    return case


def case_state(case: dict, state_key: str = "stateAfterEvent") -> tuple[DesiredState, ProxierSettings]:
    settings = settings_from_proxier_block(case["proxier"])
    st = case[state_key]
    objs = [*(st.get("services") or []), *(st.get("endpointSlices") or []), *(st.get("nodes") or [])]
    return desired_state_from_objects(objs, settings.node_name, ip_family=settings.ip_family), settings


def _svc_name(rule: str) -> str:
    m = re.search(r'--comment (?:"([^"]*)"|(\S+))', rule)
    if not m:
        return ""
    name = m.group(1) if m.group(1) is not None else m.group(2)
    cut = [i for i in (name.find(" "), name.find(":")) if i != -1]
    return name[: min(cut)] if cut else name


def sort_like_kube_proxy(text: str) -> str:
    """kube-proxy's sortIPTablesRules: tables by name; chains KUBE-NODEPORTS, KUBE-SERVICES, other
    KUBE-* then the rest, alphabetically; KUBE-NODEPORTS/KUBE-SERVICES rules stably by service name
    (the nat "must be the last rule" rule stays last); -X lines after the rules of their table."""
    tables = []
    cur = None
    for line in text.strip("\n").split("\n"):
        if line.startswith("*"):
            cur = {"name": line[1:], "chains": [], "rules": {}, "deleted": []}
        elif line == "COMMIT":
            tables.append(cur)
        elif line.startswith(":"):
            ch = line[1:].split(" ")[0]
            cur["chains"].append(ch)
            cur["rules"].setdefault(ch, [])
        elif line.startswith("-A "):
            cur["rules"].setdefault(line.split(" ")[1], []).append(line)
        elif line.startswith("-X "):
            cur["deleted"].append(line.split(" ")[1])

    def order(a: str, b: str) -> int:
        for special in ("KUBE-NODEPORTS", "KUBE-SERVICES"):
            if (a == special) != (b == special):
                return -1 if a == special else 1
        if a.startswith("KUBE-") != b.startswith("KUBE-"):
            return -1 if a.startswith("KUBE-") else 1
        return (a > b) - (a < b)

    out = []
    for t in sorted(tables, key=lambda t: t["name"]):
        chains = sorted(t["chains"], key=cmp_to_key(order))
        for ch in ("KUBE-NODEPORTS", "KUBE-SERVICES"):
            if ch in t["rules"]:
                nat_services = t["name"] == "nat" and ch == "KUBE-SERVICES"
                t["rules"][ch].sort(key=lambda r, n=nat_services: (n and "must be the last rule" in r, _svc_name(r)))
        out.append("*" + t["name"])
        out += [f":{c} - [0:0]" for c in chains]
        for c in chains:
            out += t["rules"].get(c, [])
        out += [f"-X {c}" for c in chains if c in t["deleted"]]
        out.append("COMMIT")
    return "\n".join(out) + "\n"


_BUILTIN_TARGETS = {"ACCEPT", "REJECT", "DROP", "MARK", "RETURN", "DNAT", "SNAT", "MASQUERADE"}
_KUBE_TOP = {
    "KUBE-SERVICES", "KUBE-EXTERNAL-SERVICES", "KUBE-NODEPORTS", "KUBE-POSTROUTING", "KUBE-FORWARD",
    "KUBE-MARK-MASQ", "KUBE-PROXY-FIREWALL", "KUBE-FIREWALL",
}


def check_rule_jumps(text: str) -> list[str]:
    """kube-proxy's checkIPTablesRuleJumps: no jump to an uncreated or empty chain, no unused chain."""
    problems = []
    for block in text.split("COMMIT\n"):
        lines = [line for line in block.split("\n") if line]
        if not lines:
            continue
        table = lines[0][1:]
        created = {line[1:].split()[0] for line in lines if line.startswith(":")}
        created -= {line.split()[1] for line in lines if line.startswith("-X ")}
        filled = {line.split()[1] for line in lines if line.startswith("-A ")}
        jumped = set()
        for line in lines:
            m = re.search(r" -j (\S+)", line)
            if line.startswith("-A ") and m:
                jumped.add(m.group(1))
        jumped -= _BUILTIN_TARGETS
        if missing := (jumped | filled) - created:
            problems.append(f"{table}: used but not created: {sorted(missing)}")
        if empty := jumped - filled - {"KUBE-NODEPORTS"}:
            problems.append(f"{table}: jumped to but empty: {sorted(empty)}")
        if unused := created - jumped - _KUBE_TOP:
            problems.append(f"{table}: created but unused: {sorted(unused)}")
    return problems
