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

from array import array
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from podnet.proxy.iptables.names import SERVICE_CHAIN_PREFIXES, Jump

ChainKey = tuple[str, str]  # (table, chain)
Known = Callable[[str, str], bool]  # (table, chain) -> podnet has that chain


class TableRead:
    """One table as a read showed it: per chain its rule count and a digest of its rules (None when only names
    were read), looked up by chain name, and the names of service chains the read's `known` did not know.

    Chains are held by the hash of their name in three sorted arrays (24 bytes a chain): at 10k x 10 the check
    keeps its last read (110k chains) for the next one, and a dict per chain would be ~22 MB a read. Python's
    string hash is only comparable within one process, which is all the check needs; two names with one
    64-bit hash would be one chain (not seen in practice, and at worst a drift missed until the next read)."""

    __slots__ = ("_keys", "_counts", "_digests", "unknown")

    def __init__(self, keys: array[int], counts: array[int] | None, digests: array[int] | None,
                 unknown: list[str]) -> None:
        order = sorted(range(len(keys)), key=keys.__getitem__)
        self._keys = array("q", (keys[i] for i in order))
        self._counts = array("q", (counts[i] for i in order)) if counts is not None else None
        self._digests = array("q", (digests[i] for i in order)) if digests is not None else None
        self.unknown = unknown

    def _index(self, chain: str) -> int:
        h = hash(chain)
        i = bisect_left(self._keys, h)
        return i if i < len(self._keys) and self._keys[i] == h else -1

    def __contains__(self, chain: object) -> bool:
        return isinstance(chain, str) and self._index(chain) >= 0

    def __len__(self) -> int:
        return len(self._keys)

    def __getitem__(self, chain: str) -> tuple[int, int] | None:
        """(rule count, digest), None when only the name was read; KeyError when the chain is not there."""
        i = self._index(chain)
        if i < 0:
            raise KeyError(chain)
        if self._counts is None or self._digests is None:
            return None
        return self._counts[i], self._digests[i]

    def __eq__(self, other: object) -> bool:
        return (isinstance(other, TableRead) and self._keys == other._keys and self._counts == other._counts
                and self._digests == other._digests and self.unknown == other.unknown)


@dataclass
class KernelTables:
    """What a read of the kernel showed: per table a TableRead; the rule lines of built-in chains (where the
    jumps are)."""

    chains: dict[str, TableRead] = field(default_factory=dict)
    builtin: dict[ChainKey, list[str]] = field(default_factory=dict)


class Previous:
    """The digests of an earlier whole read, minus the chains podnet wrote since it (or while it ran): what
    find_drift compares a chain's rules with. A view of that read: nothing is copied per chain."""

    def __init__(self, kernel: KernelTables, written: Iterable[ChainKey] = ()) -> None:
        self.kernel, self.written = kernel, set(written)

    def __contains__(self, key: ChainKey) -> bool:
        return self.get(key) is not None

    def __getitem__(self, key: ChainKey) -> int:
        got = self.get(key)
        if got is None:
            raise KeyError(key)
        return got

    def get(self, key: ChainKey) -> int | None:
        if key in self.written or key[0] not in self.kernel.chains:
            return None
        read = self.kernel.chains[key[0]]
        got = read[key[1]] if key[1] in read else None
        return got[1] if got is not None else None


def _unknown_service_chain(table: str, chain: str, known: Known | None) -> bool:
    return chain.startswith(SERVICE_CHAIN_PREFIXES) and not (known is not None and known(table, chain))


def chains_only(names: Mapping[str, Iterable[str]], tables: Iterable[str], known: Known | None = None
                ) -> KernelTables:
    """KernelTables from chain names alone (`nft list chains`): presence is checked, rules are not."""
    out = KernelTables()
    for t in tables:
        if t in names:
            chains = list(names[t])
            out.chains[t] = TableRead(array("q", map(hash, chains)), None, None,
                                      [c for c in chains if _unknown_service_chain(t, c, known)])
    return out


def read_save(lines: str | Iterable[str], tables: Iterable[str], known: Known | None = None) -> KernelTables:
    """Parse iptables-save output (its text, or its lines as they are read: a pipe), keeping only `tables`.

    Nothing of a user chain is kept but its rule count and a digest (a running hash over its rule lines), and
    the name of a service chain (KUBE-SVC-, -SEP-, ...) that `known` does not know (None: none known), so a
    read of 32 MB at 10k services never holds the text, its lines, or a dict of its chains. Built-in chains
    keep their lines (the jumps are checked there). iptables-save declares a table's chains, then lists their
    rules chain by chain in the same order; a rule found elsewhere is still counted to its chain."""
    wanted = set(tables)
    out = KernelTables()
    table: str | None = None
    builtins: dict[str, list[str]] = {}
    keys, counts, digests = array("q"), array("q"), array("q")
    unknown: list[str] = []
    at = 0  # index of the chain whose rules come now
    cur = ""
    where: dict[int, int] | None = None  # index by hash, made only for rules out of order
    for raw in (lines.splitlines() if isinstance(lines, str) else lines):
        line = raw.rstrip("\n")
        if line.startswith("*"):
            table = line[1:].strip()
            builtins, unknown, at, cur, where = {}, [], 0, "", None
            keys, counts, digests = array("q"), array("q"), array("q")
        elif table not in wanted:
            continue
        elif line.startswith(":"):
            name, _, rest = line[1:].partition(" ")
            keys.append(hash(name))
            counts.append(0)
            digests.append(0)
            if not rest.startswith("-"):  # built-in chains have a policy, user chains "-"
                builtins[name] = []
            elif _unknown_service_chain(table, name, known):
                unknown.append(name)
        elif line.startswith("-A "):
            name = line[3:line.find(" ", 3)]
            if name != cur:
                cur, h = name, hash(name)
                while at < len(keys) and keys[at] != h:
                    at += 1
                if at == len(keys):  # not in declaration order (or not declared): look it up
                    where = where or {k: i for i, k in enumerate(keys)}
                    if h not in where:
                        where[h] = len(keys)
                        keys.append(h)
                        counts.append(0)
                        digests.append(0)
                    at = where[h]
            counts[at] += 1
            digests[at] = hash((digests[at], line))
            if name in builtins:
                builtins[name].append(line)
        elif line == "COMMIT" and table is not None:
            out.chains[table] = TableRead(keys, counts, digests, unknown)
            for c, rules in builtins.items():
                out.builtin[(table, c)] = rules
            table = None
    return out


def find_drift(applied: Mapping[str, Mapping[str, list[str]]], kernel: KernelTables, jumps: Iterable[Jump], *,
               skip: Iterable[ChainKey] = (), previous: Previous | None = None) -> list[str]:
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
        for chain in have.unknown:
            if chain not in chains and (table, chain) not in left_out:
                found.append(f"{table}/{chain}: a service chain podnet does not have")
    for j in jumps:
        key = (j.table, j.chain)
        if key in left_out or j.target not in applied.get(j.table, {}):
            continue
        if not any(j.matches(line) for line in kernel.builtin.get(key, [])):
            found.append(f"{j.table}/{j.chain}: the jump to {j.target} is missing")
    return found
