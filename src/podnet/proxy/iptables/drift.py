"""Drift: does the kernel still hold what the iptables backend applied? Found by reading, never by writing.

kube-proxy rewrites its rules periodically and watches a canary chain for flushes. At 10k services x 10
endpoints a full rewrite takes about 20 s of iptables-restore, and every change that arrives meanwhile waits
behind it. podnet's periodic check instead reads the tables once (one `iptables-save`, a few seconds of work
in another process, off the sync loop) and compares them with the applied model (restore.py's `applied`):

* every chain podnet owns is in the kernel, with as many rules as were applied. Rules are counted, not compared
  by text: iptables-save spells a rule its own way (`-s 10.1.2.3/32`, `--set-xmark 0x4000/0x4000`,
  `--probability 0.10000000009`);
* no stale service chain (KUBE-SVC-/SVL-/SEP-/FW-/EXT-) that the model does not have;
* kube-proxy's jumps are in the built-in chains;
* a chain's rules, in the kernel's own spelling, are what they were at the previous check, unless podnet wrote
  that chain in between: this catches a rule replaced in place (`iptables -R`), which counting cannot.

Chains written while the read ran are left out of that check: the read may show them before or after the
write. A drift makes the next sync a full one (restore.py), as a failed restore does.

A whole read restarts inside iptables whenever a transaction commits meanwhile, so under a steady stream of
changes at 10k services it may not finish; restore.py then checks what it could read (chain names and the
built-in chains: `chains_only`) and tries the rules again at the next check.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from podnet.proxy.iptables.names import SERVICE_CHAIN_PREFIXES, Jump

ChainKey = tuple[str, str]  # (table, chain)


@dataclass
class KernelTables:
    """What a read of the kernel showed, per table: each chain's rule count and a digest of its rules (None
    when only chain names were read); the rule lines of built-in chains (where the jumps are)."""

    chains: dict[str, dict[str, tuple[int, int] | None]] = field(default_factory=dict)
    builtin: dict[ChainKey, list[str]] = field(default_factory=dict)

    def digests(self, skip: Iterable[ChainKey] = ()) -> dict[ChainKey, int]:
        left_out = set(skip)
        return {(t, c): got[1] for t, chains in self.chains.items() for c, got in chains.items()
                if got is not None and (t, c) not in left_out}


def chains_only(names: Mapping[str, Iterable[str]], tables: Iterable[str]) -> KernelTables:
    """KernelTables from chain names alone (`nft list chains`): presence is checked, rules are not."""
    return KernelTables({t: dict.fromkeys(names[t]) for t in tables if t in names})


def read_save(lines: str | Iterable[str], tables: Iterable[str]) -> KernelTables:
    """Parse iptables-save output (its text, or its lines as they are read: a pipe), keeping only `tables`.

    Nothing of a user chain is kept but its rule count and a digest: a running hash over its rule lines
    (Python's string hash: comparable within one process, which is all the check needs), so a read of
    32 MB at 10k services never holds the text, or its lines, at once. Built-in chains keep their lines
    (the jumps are checked there)."""
    wanted = set(tables)
    out = KernelTables()
    table: str | None = None
    builtins: dict[str, list[str]] = {}
    counts: dict[str, list[int]] = {}  # chain -> [rules, digest]
    for raw in (lines.splitlines() if isinstance(lines, str) else lines):
        line = raw.rstrip("\n")
        if line.startswith("*"):
            table = line[1:].strip()
            builtins, counts = {}, {}
        elif table not in wanted:
            continue
        elif line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            counts[name] = [0, 0]
            if not rest.startswith("-"):  # built-in chains have a policy, user chains "-"
                builtins[name] = []
        elif line.startswith("-A "):
            name = line[3:line.find(" ", 3)]
            got = counts.setdefault(name, [0, 0])
            got[0] += 1
            got[1] = hash((got[1], line))
            if name in builtins:
                builtins[name].append(line)
        elif line == "COMMIT" and table is not None:
            out.chains[table] = {c: (n, d) for c, (n, d) in counts.items()}
            for c, rules in builtins.items():
                out.builtin[(table, c)] = rules
            table = None
    return out


def find_drift(applied: Mapping[str, Mapping[str, list[str]]], kernel: KernelTables, jumps: Iterable[Jump], *,
               skip: Iterable[ChainKey] = (), previous: Mapping[ChainKey, int] | None = None) -> list[str]:
    """What in `kernel` differs from `applied` (table -> chain -> rules as podnet wrote them), one line each.

    `skip`: chains written while the kernel was read (no conclusion about them). `previous`: digests from the
    last check of chains podnet has not written since (None: no earlier check to compare with). `jumps`: the
    built-in chains' jumps that must be there (those whose target podnet owns).
    """
    left_out = set(skip)
    found: list[str] = []
    for table, chains in applied.items():
        have = kernel.chains.get(table)
        if have is None:
            found.append(f"table {table}: not in the kernel")
            continue
        for chain, rules in chains.items():
            if (table, chain) in left_out:
                continue
            if chain not in have:
                found.append(f"{table}/{chain}: missing")
                continue
            got = have[chain]
            if got is None:
                continue  # only the chain's name was read
            if got[0] != len(rules):
                found.append(f"{table}/{chain}: {got[0]} rules in the kernel, {len(rules)} applied")
            elif previous is not None and (table, chain) in previous and previous[(table, chain)] != got[1]:
                found.append(f"{table}/{chain}: rules changed by another program")
        for chain in have:
            if chain.startswith(SERVICE_CHAIN_PREFIXES) and chain not in chains and (table, chain) not in left_out:
                found.append(f"{table}/{chain}: a service chain podnet does not have")
    for j in jumps:
        key = (j.table, j.chain)
        if key in left_out or j.target not in applied.get(j.table, {}):
            continue
        if not any(j.matches(line) for line in kernel.builtin.get(key, [])):
            found.append(f"{j.table}/{j.chain}: the jump to {j.target} is missing")
    return found
