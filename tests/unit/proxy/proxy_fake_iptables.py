"""A tiny in-memory iptables for tests: applies restore input the way `iptables-restore --noflush` does.

It keeps chains and rules per table, flushes a chain on its `:CHAIN` line, deletes on `-X` (refused
while a rule still jumps to the chain) and refuses a jump to a chain that does not exist. A refused
input changes nothing (each restore is atomic), which is what lets tests replay kube-proxy's
"partial restore fails, next sync is full" step.
"""

from __future__ import annotations

import copy
import shlex

BUILTIN_CHAINS = {
    "filter": ("INPUT", "FORWARD", "OUTPUT"),
    "nat": ("PREROUTING", "INPUT", "OUTPUT", "POSTROUTING"),
    "mangle": ("PREROUTING", "INPUT", "FORWARD", "OUTPUT", "POSTROUTING"),
}
TARGETS = {"ACCEPT", "DROP", "REJECT", "RETURN", "MARK", "MASQUERADE", "DNAT", "SNAT"}


class RestoreError(Exception):
    pass


def jump_target(rule: str) -> str | None:
    words = shlex.split(rule)
    for i, w in enumerate(words):
        if w == "-j" and i + 1 < len(words):
            return words[i + 1]
    return None


class FakeIPTables:
    def __init__(self) -> None:
        self.tables: dict[str, dict[str, list[str]]] = {
            t: {c: [] for c in chains} for t, chains in BUILTIN_CHAINS.items()
        }

    def chains(self, table: str) -> set[str]:
        return set(self.tables.get(table, {}))

    def rules(self, table: str, chain: str) -> list[str]:
        return list(self.tables[table][chain])

    def add_rule(self, table: str, line: str) -> None:
        """Inject a rule behind the renderer's back (like kube-proxy's test does in step 9)."""
        chain = line.split()[1]
        self.tables[table][chain].append(line)

    def restore(self, text: str) -> None:
        staged = copy.deepcopy(self.tables)
        cur: dict[str, list[str]] | None = None
        name = ""
        for n, line in enumerate(text.split("\n"), 1):
            if not line or line.startswith("#"):
                continue
            if line.startswith("*"):
                name = line[1:]
                cur = staged.setdefault(name, {c: [] for c in BUILTIN_CHAINS.get(name, ())})
            elif cur is None:
                raise RestoreError(f"line {n}: no table")
            elif line == "COMMIT":
                for chain, rules in cur.items():
                    for r in rules:
                        t = jump_target(r)
                        if t and t not in TARGETS and t not in cur:
                            raise RestoreError(f"{name}: {chain} jumps to missing chain {t}")
                cur = None
            elif line.startswith(":"):
                chain = line[1:].split()[0]
                cur[chain] = []
            elif line.startswith("-A "):
                chain = line.split()[1]
                if chain not in cur:
                    raise RestoreError(f"line {n}: chain {chain} does not exist")
                cur[chain].append(line)
            elif line.startswith("-X "):
                chain = line.split()[1]
                if chain not in cur:
                    raise RestoreError(f"line {n}: cannot delete missing chain {chain}")
                users = [r for rules in cur.values() for r in rules if jump_target(r) == chain]
                if users:
                    raise RestoreError(f"line {n}: chain {chain} is still referenced by {users[0]!r}")
                del cur[chain]
            else:
                raise RestoreError(f"line {n}: cannot parse {line!r}")
        if cur is not None:
            raise RestoreError("missing COMMIT")
        self.tables = staged
