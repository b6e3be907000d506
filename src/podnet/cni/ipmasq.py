"""Per-container masquerade rules, named and laid out as the reference bridge plugin does.

    -N CNI-<sha512(network + containerID)[:24]>
    -A POSTROUTING -s <ip>/32 -m comment --comment "name: \\"<net>\\" id: \\"<id>\\"" -j CNI-...
    -A CNI-... -d <ip's subnet> -m comment ... -j ACCEPT
    -A CNI-... ! -d 224.0.0.0/4 -m comment ... -j MASQUERADE          (ff00::/8 for IPv6)

Operators and tools that know the reference find the same chains. Changes go through one
iptables-restore --noflush per family, in the namespace the plugin runs in. `start_setup` and
`start_teardown` only start that restore (posix_spawn: subprocess alone costs ~5 ms to import per pod)
so the plugin does its netlink work meanwhile; `Pending.wait()` then reaps it and, when the one-shot
restore was refused, takes the careful path (read the table, apply the difference). Two deliberate
differences from the reference (which leaks or breaks in these cases, plugins#810):
teardown removes only this attachment's POSTROUTING rule and drops the chain once nothing jumps to
it any more (a second attachment of the same container keeps its masquerade), and when the netns
is gone every rule of the (network, container) is removed, since all its attachments are gone.
"""

from __future__ import annotations

import _signal
import ipaddress
import os

from podnet.cni import spec
from podnet.net import exec as nexec

TYPE_CHECKING = False
if TYPE_CHECKING:
    import re
    import subprocess

_MCAST = {4: "224.0.0.0/4", 6: "ff00::/8"}
_TOOLS = {4: ("iptables-save", "iptables-restore"), 6: ("ip6tables-save", "ip6tables-restore")}


def chain_name(network: str, container_id: str) -> str:
    try:
        from _sha512 import sha512  # builtin; hashlib would load OpenSSL (~2 ms)
    except ImportError:  # pragma: no cover
        from hashlib import sha512
    return "CNI-" + sha512((network + container_id).encode()).hexdigest()[:24]


def comment(network: str, container_id: str) -> str:
    return f"name: {spec.go_quote(network)} id: {spec.go_quote(container_id)}"


def _q(text: str) -> str:
    """Quote a comment the way iptables-save prints it (and iptables-restore reads it)."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _save(family: int) -> dict[str, nexec.Chain]:
    """The nat table's chains, as iptables-save shows them now."""
    tool = _TOOLS[family][0]
    try:
        text = nexec.iptables_save(binary=tool, table="nat", timeout=None)
    except nexec.CommandError as e:
        why = f"exit status {e.returncode}: {e.stderr}" if e.returncode is not None else str(e)
        raise spec.internal(f"running [{tool} -t nat]: {why}") from None
    return nexec.parse_save(text).get("nat", {})


def _rule_lines(have: dict[str, nexec.Chain]) -> list[str]:
    return [r.line for c in have.values() for r in c.rules]


def _restore(family: int, lines: list[str]) -> subprocess.CompletedProcess[str]:
    text = "*nat\n" + "\n".join(lines) + "\nCOMMIT\n"
    try:
        return nexec.iptables_restore(text, binary=_TOOLS[family][1], wait=True, noflush=True, timeout=None,
                                      check=False)
    except nexec.CommandError as e:  # not installed
        raise spec.internal(str(e)) from None


def _apply(family: int, lines: list[str]) -> None:
    if not lines:
        return
    proc = _restore(family, lines)
    if proc.returncode != 0:
        raise spec.internal(f"running [{_TOOLS[family][1]} --noflush]: exit status {proc.returncode}: "
                            f"{proc.stderr.strip()}")


class _Restore:
    """`iptables-restore -w --noflush` on `lines` of the nat table, started now and reaped by wait(): the
    command line, environment, namespace and signal dispositions of nexec.iptables_restore (subprocess's
    own posix_spawn path, SIGPIPE and SIGXFSZ back to default), stdout to /dev/null, stderr kept."""

    def __init__(self, family: int, lines: list[str]) -> None:
        self.argv = nexec.restore_argv(_TOOLS[family][1], wait=True, noflush=True)
        text = ("*nat\n" + "\n".join(lines) + "\nCOMMIT\n").encode()
        r_in, w_in = os.pipe()
        r_err, w_err = os.pipe()
        try:
            self.pid = os.posix_spawnp(
                self.argv[0], self.argv, os.environ, setsigdef=(_signal.SIGPIPE, _signal.SIGXFSZ),
                file_actions=[(os.POSIX_SPAWN_DUP2, r_in, 0), (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
                              (os.POSIX_SPAWN_DUP2, w_err, 2)])
        except OSError as e:  # not installed: the words of nexec.run's CommandError
            for fd in (r_in, w_in, r_err, w_err):
                os.close(fd)
            raise spec.internal(str(nexec.CommandError(self.argv, reason=e.strerror or str(e)))) from None
        os.close(r_in)
        os.close(w_err)
        self._err = r_err
        try:
            view = memoryview(text)
            while view:  # a few hundred bytes: one write, well within the pipe's buffer
                view = view[os.write(w_in, view):]
        except BrokenPipeError:
            pass  # it exited without reading; its status says why
        finally:
            os.close(w_in)
        self.returncode: int | None = None
        self.stderr = ""

    def wait(self) -> int:
        if self.returncode is None:
            chunks = []
            try:
                while chunk := os.read(self._err, 65536):
                    chunks.append(chunk)
            finally:
                os.close(self._err)
            self.stderr = b"".join(chunks).decode(errors="replace")
            self.returncode = os.waitstatus_to_exitcode(os.waitpid(self.pid, 0)[1])
        return self.returncode


class Pending:
    """Masquerade changes under way, one family each: the one-shot restore started, and what to do when
    it is refused. wait() finishes them all and raises what the synchronous setup()/teardown() would have
    (the first CniError; a ValueError for an address that does not parse, which starts nothing);
    reap() only waits for the started processes (on a failed ADD, before undoing what they may have done)."""

    def __init__(self, cidrs: list[str] | None, network: str, container_id: str) -> None:
        self.cidrs, self.network, self.container_id = cidrs, network, container_id
        # (family, the one-shot restore or None, the rules setup wants or None for a teardown)
        self._steps: list[tuple[int, _Restore | None, list[str] | None]] = []
        self._error: ValueError | None = None

    def reap(self) -> None:
        for _fam, proc, _want in self._steps:
            if proc is not None:
                proc.wait()

    def wait(self) -> None:
        if self._error is not None:
            raise self._error
        try:
            for fam, proc, want in self._steps:
                if proc is not None and proc.wait() == 0:
                    continue
                if want is not None:
                    _setup_careful(fam, want, chain_name(self.network, self.container_id))
                else:
                    _teardown_careful(fam, self.cidrs, self.network, self.container_id)
        finally:
            self.reap()


def _rules(iface: ipaddress.IPv4Interface | ipaddress.IPv6Interface, chain: str, cmt: str) -> tuple[str, ...]:
    host = 32 if iface.version == 4 else 128
    c = _q(cmt)
    return (
        f"-A POSTROUTING -s {iface.ip}/{host} -m comment --comment {c} -j {chain}",
        f"-A {chain} -d {iface.network} -m comment --comment {c} -j ACCEPT",
        f"-A {chain} ! -d {_MCAST[iface.version]} -m comment --comment {c} -j MASQUERADE",
    )


def setup(cidrs: list[str], network: str, container_id: str) -> None:
    """Masquerade traffic from each address leaving its own subnet (idempotent, like AppendUnique)."""
    start_setup(cidrs, network, container_id).wait()


def start_setup(cidrs: list[str], network: str, container_id: str) -> Pending:
    """setup(), started: the caller must wait() (or, when giving up, reap() and tear down)."""
    chain, cmt = chain_name(network, container_id), comment(network, container_id)
    pending = Pending(cidrs, network, container_id)
    try:
        parsed = [ipaddress.ip_interface(c) for c in cidrs]
    except ValueError as e:
        pending._error = e
        return pending
    try:
        for fam in (4, 6):
            ifaces = [i for i in parsed if i.version == fam]
            if not ifaces:
                continue
            want: list[str] = []
            for i in ifaces:
                post, acc, masq = _rules(i, chain, cmt)
                for r in (acc, masq, post):
                    if r not in want:
                        want.append(r)
            # Fast path: a new container has no chain yet, so one restore creates everything.
            fresh = _Restore(fam, [f"-N {chain}"] + [r for r in want if not r.startswith("-A POSTROUTING")]
                             + [r for r in want if r.startswith("-A POSTROUTING")])
            pending._steps.append((fam, fresh, want))
    except BaseException:
        pending.reap()
        raise
    return pending


def _setup_careful(fam: int, want: list[str], chain: str) -> None:
    """The chain exists already (a repeated ADD): add only the rules it lacks."""
    have = _save(fam)
    rules = _rule_lines(have)
    lines = [] if chain in have else [f"-N {chain}"]
    lines += [r for r in want if r not in rules]
    _apply(fam, lines)


def _jump_re(chain: str) -> re.Pattern[str]:
    import re

    return re.compile(rf"^-A POSTROUTING .* -j {re.escape(chain)}$")


def teardown(cidrs: list[str] | None, network: str, container_id: str) -> None:
    """Remove the POSTROUTING rules of `cidrs` (None: every rule of this container), then the chain
    once nothing jumps to it. Missing rules and chains are fine (DEL is idempotent)."""
    start_teardown(cidrs, network, container_id).wait()


def start_teardown(cidrs: list[str] | None, network: str, container_id: str) -> Pending:
    """teardown(), started: the caller must wait()."""
    chain, cmt = chain_name(network, container_id), comment(network, container_id)
    pending = Pending(cidrs, network, container_id)
    try:
        parsed = None if cidrs is None else [ipaddress.ip_interface(c) for c in cidrs]
    except ValueError as e:
        pending._error = e
        return pending
    fams = (4, 6) if parsed is None else sorted({i.version for i in parsed})
    try:
        for fam in fams:
            fast = None
            if parsed is not None:
                # Fast path, the usual DEL after ADD: this attachment's jumps, then the chain, in one restore.
                # Any surprise (rule already gone, chain shared with another attachment) fails the whole
                # transaction atomically, and the careful path reads the table first.
                ifaces = [i for i in parsed if i.version == fam]
                fast = _Restore(fam, ["-D" + _rules(i, chain, cmt)[0][2:] for i in ifaces]
                                + [f"-F {chain}", f"-X {chain}"])
            pending._steps.append((fam, fast, None))
    except BaseException:
        pending.reap()
        raise
    return pending


def _teardown_careful(fam: int, cidrs: list[str] | None, network: str, container_id: str) -> None:
    """Read the table and remove what is ours there, the chain only once nothing jumps to it."""
    chain, cmt = chain_name(network, container_id), comment(network, container_id)
    have = _save(fam)
    if chain not in have:
        # no chain: nothing of ours can jump to it either (a rule cannot target a missing chain)
        return
    jumps = [h for h in _rule_lines(have) if _jump_re(chain).match(h)]
    if cidrs is None:
        gone = jumps
    else:
        gone = []
        for c in cidrs:
            i = ipaddress.ip_interface(c)
            if i.version != fam:
                continue
            host = 32 if fam == 4 else 128
            for src in (f"{i.ip}/{host}", str(i.network)):
                r = f"-A POSTROUTING -s {src} -m comment --comment {_q(cmt)} -j {chain}"
                if r in jumps and r not in gone:
                    gone.append(r)
    lines = ["-D" + r[2:] for r in gone]
    if len(gone) == len(jumps):
        lines += [f"-F {chain}", f"-X {chain}"]
    _apply(fam, lines)


def gc(network: str, keep_ids: set[str]) -> list[str]:
    """Remove the chains (and their jumps) of this network's containers not in keep_ids. Returns errors."""
    import re

    errors = []
    pat = re.compile(r'--comment "name: \\"' + re.escape(network) + r'\\" id: \\"([^"\\]+)\\""')
    for fam in (4, 6):
        try:
            have = _save(fam)
        except spec.CniError as e:
            errors.append(e.msg)
            continue
        rules = _rule_lines(have)
        stale = set()
        for h in rules:
            m = pat.search(h)
            if m and m.group(1) not in keep_ids:
                stale.add(m.group(1))
        for cid in sorted(stale):
            chain = chain_name(network, cid)
            lines = ["-D" + h[2:] for h in rules if _jump_re(chain).match(h)]
            if chain in have:
                lines += [f"-F {chain}", f"-X {chain}"]
            try:
                _apply(fam, lines)
            except spec.CniError as e:
                errors.append(e.msg)
    return errors
