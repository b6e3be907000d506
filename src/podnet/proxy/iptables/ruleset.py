"""The structured form of iptables-restore input, and the plans that turn it into what to load.

A Ruleset is restore input as data (per table: chains with their complete rules, and chains to delete); a rule
is its restore line ("-A CHAIN rule") verbatim, so the applied model holds the renderer's own strings rather
than a copy of every rule (~33 MB at 10k services x 10 endpoints). A Block is one table of renderer output
(declared chains, then lines); `full_text_parts` streams blocks into a full sync's input (the `-S` cache trick,
stale chains, missing jumps) without ever joining them into one text;
`plan_partial`, the one partial plan, computes a partial sync's input from the applied model (what the kernel
holds) and the old and new renders of the changed services, editing the big dispatch chains with -D/-I.
`parse` reads restore text back (tests and tools; the sync path never parses its own output). Pure:
restore.py runs the result.
"""

from __future__ import annotations

import functools
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field

from podnet.proxy.iptables.names import SERVICE_CHAIN_PREFIXES, Jump

TABLE_ORDER = ("filter", "nat", "mangle", "raw")

# Chains whose rules match disjoint traffic (one service each), so rule order does not matter except for the
# last rule (KUBE-SERVICES' final jump to KUBE-NODEPORTS must stay last). Partial syncs edit them with
# -D / -I 1 instead of rewriting thousands of lines.
DISPATCH_CHAINS = frozenset(
    {
        ("nat", "KUBE-SERVICES"),
        ("nat", "KUBE-NODEPORTS"),
        ("filter", "KUBE-SERVICES"),
        ("filter", "KUBE-EXTERNAL-SERVICES"),
        ("filter", "KUBE-NODEPORTS"),
        ("filter", "KUBE-PROXY-FIREWALL"),
    }
)

# A table block with more distinct chains than this gets the `-S` cache trick (below it, the partial cache
# is cheaper than fetching a large table).
CACHE_TRICK_MIN_CHAINS = 1500

# --------------------------------------------------------------------------------------------------------
# Parsing restore text (pure)


@dataclass(frozen=True, slots=True)
class Block:
    """One table block of restore input, as the renderer makes it: the chains it declares (and so flushes),
    then its lines ("-A CHAIN rule", and "-X CHAIN" for each deleted chain); `deleted` names those chains."""

    chains: tuple[str, ...]
    lines: tuple[str, ...]
    deleted: tuple[str, ...] = ()

    def restore_lines(self) -> list[str]:
        """The table's block of restore input, without the `*table` / COMMIT framing."""
        return [*(f":{c} - [0:0]" for c in self.chains), *self.lines]


def blocks_from_text(text: str) -> dict[str, Block]:
    """Restore text (`*table`, `:CHAIN`, `-A`/`-X` lines, `COMMIT`) as blocks (tests and tools)."""
    out: dict[str, Block] = {}
    table: str | None = None
    chains: list[str] = []
    lines: list[str] = []
    for n, line in enumerate(text.splitlines(), 1):
        if not line or line[0] == "#":
            continue
        if line[0] == "*":
            table, chains, lines = line[1:].strip(), [], []
        elif line.startswith("COMMIT"):
            out[_need(table, n)] = Block(tuple(chains), tuple(lines),
                                         tuple(x[3:] for x in lines if x.startswith("-X ")))
            table = None
        elif line[0] == ":":
            _need(table, n)
            chains.append(line[1:].split(" ", 1)[0])
        else:
            _need(table, n)
            lines.append(line)
    return out


@dataclass
class Ruleset:
    """Parsed restore input: per table, the chains it (re)defines with their rules, and chains it deletes.

    A chain listed in `chains` is complete: those rules and no others. Chains not listed are untouched. Each
    rule is its "-A CHAIN rule" line.
    """

    chains: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    deleted: dict[str, list[str]] = field(default_factory=dict)

    def line_count(self) -> int:
        return sum(len(c) + 1 for t in self.chains.values() for c in t.values())


def parse(text: str) -> Ruleset:
    """Parse iptables-restore text (`*table`, `:CHAIN`, `-A CHAIN rule`, `-X CHAIN`, `COMMIT`).

    Rules are their `-A CHAIN rule` lines verbatim, so what is written back is exactly what was rendered.
    """
    rs = Ruleset()
    table: str | None = None
    chains: dict[str, list[str]] = {}
    for n, line in enumerate(text.splitlines(), 1):
        if not line or line[0] == "#":
            continue
        c = line[0]
        if c == "-":
            op, _, rest = line.partition(" ")
            chain = rest.partition(" ")[0]
            if op == "-A":
                try:
                    chains[chain].append(line)
                except KeyError:
                    raise ValueError(f"line {n}: -A to chain {chain!r} that was not declared") from None
            elif op == "-X":
                rs.deleted.setdefault(_need(table, n), []).append(chain)
            else:
                raise ValueError(f"line {n}: unsupported command {op!r} (renderer output has only -A and -X)")
        elif c == ":":
            chains[line[1:].split(" ", 1)[0]] = []
        elif c == "*":
            table = line[1:].strip()
            chains = rs.chains.setdefault(table, {})
        elif line.startswith("COMMIT"):
            table = None
        else:
            raise ValueError(f"line {n}: cannot parse {line[:80]!r}")
    return rs


def _need(table: str | None, n: int) -> str:
    if table is None:
        raise ValueError(f"line {n}: command outside a *table block")
    return table


# --------------------------------------------------------------------------------------------------------
# Planning restore input (pure)

Applied = dict[str, dict[str, list[str]]]  # table -> chain -> its "-A CHAIN rule" lines, in kernel order


Changes = dict[str, dict[str, list[str] | None]]  # table -> chain -> its rules now (None: deleted)


@dataclass
class Plan:
    text: str
    base: Applied  # the model the plan was made against (not changed by planning)
    changes: Changes  # what the text does to it, chain by chain
    lines: int  # input lines (without the *table/COMMIT framing)
    rules_written: int
    written: dict[str, int] = field(default_factory=dict)  # rules written per table
    touched: set[tuple[str, str]] = field(default_factory=set)  # (table, chain) the text writes or deletes

    @property
    def applied(self) -> Applied:
        """The model after the text, as a new one (a copy of every chain: tests and callers that keep both)."""
        out = {t: dict(c) for t, c in self.base.items()}
        apply_changes(out, self.changes)
        return out


def apply_changes(model: Applied, changes: Changes) -> dict[str, int]:
    """Change model in place: a few dict operations per changed chain, where a copy of the model costs 16 ms
    at 10k services x 10 endpoints (110k chains). Returns how many rules each table gained (or lost)."""
    gained: dict[str, int] = {}
    for table, delta in changes.items():
        chains = model.setdefault(table, {})
        n = 0
        for chain, rules in delta.items():
            n -= len(chains.get(chain) or ())
            if rules is None:
                chains.pop(chain, None)
            else:
                chains[chain] = rules
                n += len(rules)
        gained[table] = n
    return gained


CHUNK = 1 << 20  # characters per piece of a streamed restore input


def full_text(
    blocks: Mapping[str, Block],
    *,
    existing: dict[str, set[str]] | None = None,
    missing_jumps: Sequence[Jump] = (),
    cache_trick: bool = True,
) -> str:
    """A full sync's restore input as one text: "".join(full_text_parts(...)) (error context, tests)."""
    return "".join(full_text_parts(blocks, existing=existing, missing_jumps=missing_jumps, cache_trick=cache_trick))


def full_text_parts(
    blocks: Mapping[str, Block],
    *,
    existing: dict[str, set[str]] | None = None,
    missing_jumps: Sequence[Jump] = (),
    cache_trick: bool = True,
) -> Iterator[str]:
    """A full sync's restore input, in pieces of about CHUNK characters joined from the blocks' lines (so the
    restorer streams it into iptables-restore; the whole input, 32 MB at 10k services, never exists at once).

    The renderer's blocks verbatim, `-S` first in large ones, stale service chains (owned per-service chains in
    `existing`, the kernel's chain names per table, that the blocks do not declare) flushed and deleted after
    every rule, missing jumps last.
    """
    for table in _ordered(set(blocks) | {j.table for j in missing_jumps}):
        block = blocks.get(table, Block((), ()))
        declared = set(block.chains)
        stale = _stale(table, existing, declared)
        trick = cache_trick and len(declared) + len(stale) >= CACHE_TRICK_MIN_CHAINS
        yield from _table_parts(table, _block_lines(block), functools.partial(set, declared), existing,
                                missing_jumps, trick)


def streamed_parts(
    first: str,
    lines: Iterator[str],
    rest: Callable[[], Mapping[str, Block]],
    *,
    existing: dict[str, set[str]] | None = None,
    missing_jumps: Sequence[Jump] = (),
    cache_trick: bool = True,
    first_is_large: bool = False,
) -> Iterator[str]:
    """full_text_parts of a render made while it is loaded (render.FullStream): table `first` from `lines`
    as the renderer makes them (every chain declared before a rule names it), then, once they are
    exhausted, the other tables of `rest()` (the finished render's blocks). `-S` goes first in `first`
    (with cache_trick) when the caller knows the render will be large (first_is_large) or the kernel already
    has many chains there: its chains are only known at the end, as are the stale ones, which go last as
    in full_text_parts."""
    done: dict[str, Block] = {}

    def declared() -> set[str]:
        done.update(rest())
        return set(done[first].chains)

    big = first_is_large or len((existing or {}).get(first, set())) >= CACHE_TRICK_MIN_CHAINS
    yield from _table_parts(first, lines, declared, existing, missing_jumps, cache_trick and big)
    blocks = done or rest()
    yield from full_text_parts({t: b for t, b in blocks.items() if t != first}, existing=existing,
                               missing_jumps=[j for j in missing_jumps if j.table != first], cache_trick=cache_trick)


def _stale(table: str, existing: dict[str, set[str]] | None, declared: set[str]) -> list[str]:
    return sorted(
        c for c in (existing or {}).get(table, set()) if c.startswith(SERVICE_CHAIN_PREFIXES) and c not in declared
    )


def _table_parts(table: str, lines: Iterable[str], declared: Callable[[], set[str]],
                 existing: dict[str, set[str]] | None, missing_jumps: Sequence[Jump], trick: bool) -> Iterator[str]:
    """One table block in pieces of about CHUNK characters; `declared()` is asked after the last line."""
    yield f"*{table}\n" + ("-S\n" if trick else "")
    piece: list[str] = []
    size = 0
    for line in lines:
        piece.append(line)
        size += len(line) + 1
        if size >= CHUNK:
            yield "\n".join(piece) + "\n"
            piece, size = [], 0
    if piece:
        yield "\n".join(piece) + "\n"
    stale = _stale(table, existing, declared())
    tail = [f":{c} - [0:0]\n" for c in stale] + [f"-X {c}\n" for c in stale]
    tail += [f"{line}\n" for line in _jump_lines([j for j in missing_jumps if j.table == table])]
    yield "".join(tail) + "COMMIT\n"


def _block_lines(block: Block) -> Iterator[str]:
    for c in block.chains:
        yield f":{c} - [0:0]"
    yield from block.lines


def _jump_lines(jumps: Sequence[Jump]) -> list[str]:
    """Prepend each jump as kube-proxy does (-I 1, in list order), into empty chains too. Under iptables-nft
    -I fails only in a built-in chain that does not exist yet; the restorer creates those first
    (Restorer._ensure_base_chains). Appending instead, when a listing had shown the chain empty, lost a race:
    a rule another program (flanneld's FLANNEL-FWD jump) appended after the listing stayed ahead of
    kube-proxy's jumps, and its ACCEPT let traffic past the REJECT of a Service with no endpoints."""
    return [f"-I {j.chain} 1 {j.rule()}" for j in jumps]


def _plan(applied: Applied, desired: Ruleset, *, cache_trick: bool) -> Plan:
    """plan_partial's second half: restore input that takes the kernel from `applied` to `applied` updated
    with `desired` (complete chains wanted now, chains to delete).

    Unchanged chains are skipped; dispatch chains get -D/-I lines; other changed chains are flushed and
    rewritten; chains in `desired.deleted` that podnet has are flushed and deleted. Raises KeyError-free:
    a chain unknown to `applied` is simply created.
    """
    changes: Changes = {}
    out: list[str] = []
    written: dict[str, int] = {}
    all_touched: set[tuple[str, str]] = set()
    n_lines = rules = 0
    # `-S` makes iptables fetch the whole table (about 18 us per chain in the kernel) to skip the partial
    # cache's quadratic chain list (n^2/2 x ~55 ns): worth it once n^2 x 27.5 ns > chains x 18 us.
    trick_at = max(CACHE_TRICK_MIN_CHAINS, int((655 * sum(len(c) for c in applied.values())) ** 0.5))
    for table in _ordered(set(desired.chains) | set(desired.deleted)):
        base = applied.get(table, {})
        delta = changes.setdefault(table, {})

        def have(chain: str, base: dict[str, list[str]] = base, delta: dict[str, list[str] | None] = delta,
                 ) -> list[str] | None:
            return delta[chain] if chain in delta else base.get(chain)

        decl: list[str] = []
        body: list[str] = []
        touched: set[str] = set()
        for chain, want in desired.chains.get(table, {}).items():
            cur = have(chain)
            if cur is not None and cur == want:
                continue
            touched.add(chain)
            if cur is not None and (table, chain) in DISPATCH_CHAINS and _can_edit(cur, want):
                edits, model = _dispatch_edits(chain, cur, want)
                if not edits:
                    delta[chain] = model
                    continue
                body.extend(edits)
                rules += len(edits)
                delta[chain] = model
                continue
            decl.append(f":{chain} - [0:0]")
            body.extend(want)
            rules += len(want)
            delta[chain] = list(want)
        deletes: list[str] = []
        for chain in desired.deleted.get(table, []):
            if chain in desired.chains.get(table, {}) or have(chain) is None:
                continue
            decl.append(f":{chain} - [0:0]")
            deletes.append(f"-X {chain}")
            touched.add(chain)
            delta[chain] = None
        if not decl and not body and not deletes:
            continue
        all_touched.update((table, c) for c in touched)
        out.append(f"*{table}")
        if cache_trick and len(touched) >= trick_at:
            out.append("-S")
        out.extend(decl)
        out.extend(body)
        out.extend(deletes)
        out.append("COMMIT")
        n_lines += len(decl) + len(body) + len(deletes)
        written[table] = len(body)
    return Plan("\n".join(out) + "\n" if out else "", applied, changes, n_lines, rules, written, all_touched)


def plan_partial(applied: Applied, old: Ruleset, new: Ruleset, deleted_chains: Iterable[str] = (), *,
                 cache_trick: bool = True) -> Plan:
    """The partial sync's plan, from renders of only the changed services: `old` as last applied, `new` as
    wanted now (both the renderer's structured output, RenderResult.ruleset()).

    Both renders hold the fixed chains plus the changed services' rules. Dispatch-chain rules only in
    `old` are deleted and rules only in `new` inserted; the changed services' own chains are rewritten when
    they differ; `deleted_chains` (chains the old versions needed and the new ones do not) are removed.
    The work is proportional to the changed services, not to the cluster.
    """
    desired = Ruleset()
    for table in _ordered(set(new.chains) | set(old.chains)):
        want = desired.chains.setdefault(table, {})
        cur_table = applied.get(table, {})
        old_t, new_t = old.chains.get(table, {}), new.chains.get(table, {})
        for chain, rules in new_t.items():
            if (table, chain) in DISPATCH_CHAINS and chain in cur_table:
                gone = Counter(old_t.get(chain, [])) - Counter(rules)
                added = Counter(rules) - Counter(old_t.get(chain, []))
                if not gone and not added:
                    continue
                model = _without(cur_table[chain], gone)
                extra = []
                for r in rules:
                    if added.get(r):
                        added[r] -= 1
                        extra.append(r)
                want[chain] = extra + model
            else:
                want[chain] = rules
        for chain in old_t:
            if (table, chain) in DISPATCH_CHAINS and chain not in new_t and chain in cur_table:
                raise ValueError(f"{table}/{chain}: the new render lacks a dispatch chain the old one had")
    for chain in deleted_chains:
        desired.deleted.setdefault("nat", []).append(chain)
    return _plan(applied, desired, cache_trick=cache_trick)


def _can_edit(cur: list[str], want: list[str]) -> bool:
    """-D/-I editing keeps the kernel's last rule last; only allowed if the last rule does not change."""
    if not cur or not want:
        return False
    return cur[-1] == want[-1]


def _dispatch_edits(chain: str, cur: list[str], want: list[str]) -> tuple[list[str], list[str]]:
    """-D lines for rules gone, -I 1 lines for rules new (multiset difference); and the resulting model."""
    have = Counter(cur)
    need = Counter(want)
    gone = have - need
    new = need - have
    edits: list[str] = []
    for rule, k in gone.items():  # rules are "-A CHAIN ..." lines
        edits.extend([f"-D{rule[2:]}"] * k)
    model = _without(cur, gone)
    added: list[str] = []
    for rule in want:  # insert in desired order; each -I 1 goes on top, so insert in reverse
        if new.get(rule):
            new[rule] -= 1
            added.append(rule)
    skip = len(chain) + 4  # "-A CHAIN "
    for rule in reversed(added):
        edits.append(f"-I {chain} 1 {rule[skip:]}")
    model = added + model
    return edits, model


def _without(rules: list[str], gone: Counter[str]) -> list[str]:
    """`rules` in order without the multiset `gone` (each rule gone removes its first occurrences)."""
    if not gone:
        return list(rules)
    remaining = Counter(gone)
    kept: list[str] = []
    for r in rules:
        if remaining.get(r):
            remaining[r] -= 1
            continue
        kept.append(r)
    return kept


def _ordered(tables: Iterable[str]) -> list[str]:
    ts = set(tables)
    return [t for t in TABLE_ORDER if t in ts] + sorted(ts - set(TABLE_ORDER))

