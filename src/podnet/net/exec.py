"""Running the kernel's own tools: a command inside a named netns, `iptables-restore`, `nft -f -`, and
`iptables-save` text read back into tables, chains and rules.

The one place that builds `ip netns exec NAME ...` and the one iptables-save parser. iptables-restore and nft
act on the namespace they run in (DESIGN.md), so every function takes `netns` (None: the caller's own).

Standard library only, and cheap to import: the CNI plugins load this once per pod, so subprocess is imported
when a command first runs and the types below are plain classes (dataclasses and typing cost milliseconds).
"""

from __future__ import annotations

from podnet.errors import PodnetError

TYPE_CHECKING = False
if TYPE_CHECKING:  # annotations only
    import subprocess
    from collections.abc import Sequence

DEFAULT_TIMEOUT = 60.0


class CommandError(PodnetError):
    """A command could not start, timed out or exited non-zero. Names the command, the netns and stderr.

    `argv` is the command as asked for (without the `ip netns exec` prefix); `returncode` is None when the
    command never finished (not found, timed out).
    """

    def __init__(self, argv: Sequence[str], *, netns: str | None = None, returncode: int | None = None,
                 stderr: str = "", stdout: str = "", reason: str = "", context: str = "") -> None:
        self.argv = list(argv)
        self.netns = netns
        self.returncode = returncode
        self.stderr = stderr
        self.stdout = stdout
        where = f" (in netns {netns})" if netns else ""
        if reason:
            msg = f"{self.command}{where}: {reason}"
        else:
            msg = f"{self.command}{where} failed (exit {returncode}): {stderr.strip() or 'no error text'}"
        super().__init__(msg + context)

    @property
    def command(self) -> str:
        return " ".join(self.argv)


class SaveParseError(PodnetError):
    """iptables-save text that is not iptables-save output; names the line."""


def in_netns(netns: str | None, argv: Sequence[str]) -> list[str]:
    """argv that runs `argv` inside the named namespace (None: as it is, in the caller's namespace)."""
    return ["ip", "netns", "exec", netns, *argv] if netns else list(argv)


def run(argv: Sequence[str], *, netns: str | None = None, input: str | None = None,
        timeout: float | None = DEFAULT_TIMEOUT, check: bool = True,
        discard_stdout: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a command (in `netns`), text in and out. Raises CommandError when it cannot start or times out,
    and, with check, when it exits non-zero; without check the caller reads `returncode`."""
    import subprocess

    try:
        p = subprocess.run(in_netns(netns, argv), input=input, text=True, timeout=timeout, check=False,
                           stdout=subprocess.DEVNULL if discard_stdout else subprocess.PIPE,
                           stderr=subprocess.PIPE)
    except OSError as e:
        raise CommandError(argv, netns=netns, reason=e.strerror or str(e)) from e
    except subprocess.TimeoutExpired as e:
        raise CommandError(argv, netns=netns, reason=f"did not finish within {timeout:g}s") from e
    if check and p.returncode != 0:
        raise CommandError(argv, netns=netns, returncode=p.returncode, stderr=p.stderr or "", stdout=p.stdout or "")
    return p


def popen(argv: Sequence[str], *, netns: str | None = None, discard_stdout: bool = True) -> subprocess.Popen[str]:
    """A running command (in `netns`) reading text on stdin, stderr captured: for inputs too large to build
    before the command starts (a sync streams its restore text while it is still being written)."""
    import subprocess

    try:
        return subprocess.Popen(in_netns(netns, argv), stdin=subprocess.PIPE,
                                stdout=subprocess.DEVNULL if discard_stdout else subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    except OSError as e:
        raise CommandError(argv, netns=netns, reason=e.strerror or str(e)) from e


# --------------------------------------------------------------------------------------------------------
# iptables-restore and nft -f


def restore_argv(binary: str = "iptables-restore", *, noflush: bool = True, wait: float | bool | None = 5,
                 counters: bool = False, table: str | None = None) -> list[str]:
    """iptables-restore's command line. wait: seconds to wait for the xtables lock, True = as long as it
    takes (`-w` alone), None/False = not at all. counters: the input carries `[packets:bytes]` (`-c`)."""
    argv = [binary]
    if wait is True:
        argv.append("-w")
    elif wait is not None and wait is not False:
        argv += ["-w", f"{wait:g}"]
    if noflush:
        argv.append("--noflush")
    if counters:
        argv.append("--counters")
    if table is not None:
        argv += ["--table", table]
    return argv


def iptables_restore(text: str, *, netns: str | None = None, binary: str = "iptables-restore",
                     noflush: bool = True, wait: float | bool | None = 5, counters: bool = False,
                     table: str | None = None, timeout: float | None = DEFAULT_TIMEOUT,
                     check: bool = True) -> subprocess.CompletedProcess[str]:
    """Load restore text in one transaction per table. On failure the kernel keeps the failing table's
    previous rules; the CommandError quotes the input lines iptables-restore names ("line 7 failed")."""
    argv = restore_argv(binary, noflush=noflush, wait=wait, counters=counters, table=table)
    p = run(argv, netns=netns, input=text, timeout=timeout, check=False)
    if check and p.returncode != 0:
        raise CommandError(argv, netns=netns, returncode=p.returncode, stderr=p.stderr, stdout=p.stdout,
                           context=input_context(text, p.stderr))
    return p


def nft_apply(script: str, *, netns: str | None = None, binary: str = "nft",
              timeout: float | None = DEFAULT_TIMEOUT) -> None:
    """Apply an nft script as one transaction (`nft -f -`): all of it or, on a CommandError, none of it."""
    if not script.strip():
        return
    argv = [binary, "-f", "-"]
    p = run(argv, netns=netns, input=script, timeout=timeout, check=False)
    if p.returncode != 0:
        raise CommandError(argv, netns=netns, returncode=p.returncode, stderr=p.stderr, stdout=p.stdout,
                           context=input_context(script, p.stderr))


def input_context(text: str, stderr: str) -> str:
    """The input lines around the one a loader's error names (`line 3 failed`, `/dev/stdin:3:1-5: Error`),
    one per line and indented, or "" when it names none. kube-proxy logs the same three lines."""
    n = _error_line(stderr)
    if n is None:
        return ""
    lines = text.splitlines()
    lo, hi = max(0, n - 2), min(len(lines), n + 1)
    return "".join(f"\n  {i + 1}: {lines[i][:200]}" for i in range(lo, hi))


def _error_line(stderr: str) -> int | None:
    # iptables-restore: "... line 7 failed" / "Error occurred at line: 7"; nft: "/dev/stdin:7:3-9: Error: ..."
    for marker in ("line: ", "line "):
        i = stderr.find(marker)
        if i >= 0:
            digits = _leading_digits(stderr[i + len(marker):])
            if digits:
                return int(digits)
    i = stderr.find("stdin:")
    if i >= 0:
        digits = _leading_digits(stderr[i + len("stdin:"):])
        if digits:
            return int(digits)
    return None


def _leading_digits(s: str) -> str:
    n = 0
    while n < len(s) and s[n].isdigit():
        n += 1
    return s[:n]


# --------------------------------------------------------------------------------------------------------
# iptables-save, read back


def iptables_save(*, netns: str | None = None, table: str | None = None, binary: str = "iptables-save",
                  counters: bool = False, timeout: float | None = DEFAULT_TIMEOUT) -> str:
    """The text of `iptables-save [-t table] [-c]` (ip6tables-save, iptables-legacy-save: `binary`)."""
    argv = [binary]
    if counters:
        argv.append("-c")
    if table is not None:
        argv += ["-t", table]
    return run(argv, netns=netns, timeout=timeout).stdout


class Rule:
    """One `-A CHAIN ...` line as iptables-save printed it (counters, if any, taken off the front)."""

    __slots__ = ("bytes", "chain", "line", "packets")

    def __init__(self, chain: str, line: str, packets: int | None = None, bytes: int | None = None) -> None:
        self.chain = chain
        self.line = line
        self.packets = packets
        self.bytes = bytes

    @property
    def spec(self) -> str:
        """The rule without its `-A CHAIN ` head, as iptables-restore takes it after a chain name."""
        return self.line[len(self.chain) + 4:]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Rule) and (self.chain, self.line, self.packets, self.bytes) == (
            other.chain, other.line, other.packets, other.bytes)

    def __repr__(self) -> str:
        c = f" [{self.packets}:{self.bytes}]" if self.packets is not None else ""
        return f"Rule({self.line!r}{c})"


class Chain:
    """A chain of one table: its policy (ACCEPT/DROP for built-in chains, "-" for user chains), the counters
    of its `:CHAIN POLICY [packets:bytes]` line, and its rules in kernel order."""

    __slots__ = ("bytes", "name", "packets", "policy", "rules")

    def __init__(self, name: str, policy: str = "-", packets: int = 0, bytes: int = 0,
                 rules: list[Rule] | None = None) -> None:
        self.name = name
        self.policy = policy
        self.packets = packets
        self.bytes = bytes
        self.rules: list[Rule] = rules if rules is not None else []

    @property
    def builtin(self) -> bool:
        return self.policy != "-"

    def lines(self) -> list[str]:
        """The rules as `-A CHAIN ...` lines."""
        return [r.line for r in self.rules]

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Chain) and (self.name, self.policy, self.packets, self.bytes, self.rules) == (
            other.name, other.policy, other.packets, other.bytes, other.rules)

    def __repr__(self) -> str:
        return f"Chain({self.name!r}, {self.policy!r}, [{self.packets}:{self.bytes}], {len(self.rules)} rules)"


def parse_save(text: str) -> dict[str, dict[str, Chain]]:
    """iptables-save (or ip6tables-save) text -> {table: {chain: Chain}}, tables and chains in the order
    printed. A table printed twice (two saves concatenated) is merged. Comment, blank and COMMIT lines are
    skipped; any other line that iptables-save does not print raises SaveParseError naming it."""
    tables: dict[str, dict[str, Chain]] = {}
    chains: dict[str, Chain] | None = None
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.rstrip()
        if not line or line[0] == "#" or line == "COMMIT":
            continue
        head = line[0]
        if head == "*":
            name = line[1:].strip()
            if not name or " " in name:
                raise SaveParseError(f"iptables-save line {n}: bad table header {raw[:80]!r}")
            chains = tables.setdefault(name, {})
            continue
        if chains is None:
            raise SaveParseError(f"iptables-save line {n}: {raw[:80]!r} before any *table line")
        if head == ":":
            words = line[1:].split()
            if len(words) not in (2, 3):
                raise SaveParseError(f"iptables-save line {n}: bad chain line {raw[:80]!r}")
            packets, nbytes = _counters(words[2], n, raw) if len(words) == 3 else (0, 0)
            ch = chains.get(words[0])
            if ch is None:
                chains[words[0]] = Chain(words[0], words[1], packets, nbytes)
            else:
                ch.policy, ch.packets, ch.bytes = words[1], packets, nbytes
            continue
        rpackets: int | None = None
        rbytes: int | None = None
        if head == "[":  # iptables-save -c: "[packets:bytes] -A CHAIN ..."
            end = line.find("] ")
            if end < 0:
                raise SaveParseError(f"iptables-save line {n}: bad counters {raw[:80]!r}")
            rpackets, rbytes = _counters(line[:end + 1], n, raw)
            line = line[end + 2:].lstrip()
        if not line.startswith("-A "):
            raise SaveParseError(f"iptables-save line {n}: cannot parse {raw[:80]!r}")
        chain = line[3:].split(" ", 1)[0]
        if not chain:
            raise SaveParseError(f"iptables-save line {n}: rule without a chain {raw[:80]!r}")
        ch = chains.get(chain)
        if ch is None:  # not declared (hand-written input): a user chain
            ch = chains[chain] = Chain(chain)
        ch.rules.append(Rule(chain, line, rpackets, rbytes))
    return tables


def _counters(word: str, n: int, raw: str) -> tuple[int, int]:
    if word[:1] != "[" or word[-1:] != "]":
        raise SaveParseError(f"iptables-save line {n}: bad counters {word!r} in {raw[:80]!r}")
    p, sep, b = word[1:-1].partition(":")
    if not sep or not p.isdigit() or not b.isdigit():
        raise SaveParseError(f"iptables-save line {n}: bad counters {word!r} in {raw[:80]!r}")
    return int(p), int(b)

