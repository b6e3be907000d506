"""A full sync streams its input into iptables-restore in pieces: a rejected input and a stuck restore still end
as before (a RestoreError naming the line, or the timeout; the kernel keeps its rules, the next sync is full)."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Sequence

import pytest

pytestmark = pytest.mark.integration


def _big_state(n: int = 3000):  # type: ignore[no-untyped-def]
    from podnet.proxy.model import DesiredState, Endpoint, ServicePort, ServicePortName

    services = {}
    for i in range(n):
        name = ServicePortName("ns", f"s{i}", "http", "TCP")
        eps = tuple(Endpoint(ip=f"10.{128 + (i >> 8)}.{i & 255}.{j + 1}", port=8080, node_name="o") for j in range(3))
        services[name] = ServicePort(name=name, cluster_ip=f"10.96.{i >> 8}.{i & 255}", port=80, endpoints=eps)
    return DesiredState(node_name="n1", services=services)


def _settings():  # type: ignore[no-untyped-def]
    from podnet.proxy.settings import LocalDetector, ProxierSettings

    return ProxierSettings(node_name="n1", node_ip="192.168.0.1", node_ips=("192.168.0.1",),
                           local_detector=LocalDetector.by_cidr("10.128.0.0/9"))


def test_a_big_input_is_loaded_whole(netns_factory) -> None:  # type: ignore[no-untyped-def]
    from podnet.net import netns
    from podnet.proxy.iptables.backend import IptablesBackend
    from podnet.proxy.iptables.render import render
    from podnet.proxy.iptables.restore import Restorer, Runner

    ns = netns_factory("stream")
    state = _big_state()
    backend = IptablesBackend(Restorer(Runner(netns=ns)))
    backend.full_sync(state, _settings())
    kernel = netns.run(ns, ["iptables-save", "-t", "nat"]).stdout
    want = render(state, _settings(), full=True, cleanup_stale=False)
    assert len(want.text) > 3 << 20  # several pieces
    assert sum(1 for line in kernel.splitlines() if line.startswith("-A KUBE-")) == want.nat_rules_written
    assert backend.check_drift() is None


def test_an_input_refused_early_ends_the_stream_and_names_the_line(netns_factory) -> None:  # type: ignore[no-untyped-def]
    """iptables-restore stops reading at the first bad line while megabytes are still to come: the writer's
    broken pipe is not the error, iptables-restore's message is."""
    from podnet.proxy.iptables.restore import RestoreError, Restorer, Runner
    from podnet.proxy.iptables.ruleset import Ruleset, blocks_from_text

    ns = netns_factory("stream")
    body = "".join(f":KUBE-SEP-{i:016d} - [0:0]\n-A KUBE-SEP-{i:016d} -j RETURN\n" for i in range(60000))
    text = f"*nat\n:KUBE-SVC-BAD - [0:0]\n-A KUBE-SVC-BAD -j NO-SUCH-CHAIN\n{body}COMMIT\n"
    restorer = Restorer(Runner(netns=ns))
    with pytest.raises(RestoreError) as e:
        restorer.sync_full(blocks_from_text(text), lambda: Ruleset())
    assert "NO-SUCH-CHAIN" in str(e.value) and not e.value.partial
    assert restorer.needs_full
    from podnet.net import netns

    assert "KUBE-SEP-" not in netns.run(ns, ["iptables-save", "-t", "nat"]).stdout  # nothing half-applied


def test_a_restore_that_does_not_read_is_stopped_at_the_timeout(netns_factory) -> None:  # type: ignore[no-untyped-def]
    from podnet.proxy.iptables.restore import RestoreError, Restorer, Runner
    from podnet.proxy.iptables.ruleset import Ruleset, blocks_from_text

    ns = netns_factory("stream")

    class Stuck(Runner):
        def popen(self, argv: Sequence[str]) -> subprocess.Popen[str]:
            # sleeps before it reads a byte: the feed blocks on a full pipe until the restorer kills it
            return super().popen([sys.executable, "-c",
                                  "import os, sys, time; time.sleep(30); os.execvp(sys.argv[1], sys.argv[1:])", *argv])

    body = "".join(f":KUBE-SEP-{i:016d} - [0:0]\n" for i in range(60000))
    restorer = Restorer(Stuck(netns=ns, timeout=1.0), mode="nft")
    with pytest.raises(RestoreError, match="timed out after 1.0s"):
        restorer.sync_full(blocks_from_text(f"*nat\n{body}COMMIT\n"), lambda: Ruleset())
    assert restorer.needs_full


def test_a_render_that_fails_while_it_is_streamed_commits_nothing(netns_factory) -> None:  # type: ignore[no-untyped-def]
    """The full sync renders into iptables-restore as it goes (FullStream): a render that raises halfway
    stops the load before its COMMIT; the kernel keeps what it had and the next sync is a full one."""
    from podnet.net import netns
    from podnet.proxy.iptables.backend import IptablesBackend
    from podnet.proxy.iptables.render import FullStream
    from podnet.proxy.iptables.restore import Restorer, Runner

    ns = netns_factory("stream")
    state = _big_state()
    backend = IptablesBackend(Restorer(Runner(netns=ns)))

    class Broken(FullStream):
        def lines(self):  # type: ignore[no-untyped-def]
            for i, line in enumerate(super().lines()):
                if i == 2000:
                    raise RuntimeError("render failed halfway")
                yield line

    stream = Broken(state, _settings())
    with pytest.raises(RuntimeError, match="halfway"):
        backend.restorer.sync_full(stream, stream.ruleset, backend.restorer.list_kernel())
    assert backend.needs_full
    assert "KUBE-" not in netns.run(ns, ["iptables-save", "-t", "nat"]).stdout


def test_a_refused_streamed_load_quotes_the_lines_it_read(netns_factory) -> None:  # type: ignore[no-untyped-def]
    from podnet.proxy.iptables.render import FullStream
    from podnet.proxy.iptables.restore import RestoreError, Restorer, Runner

    ns = netns_factory("stream")

    class Refusing(Runner):
        def popen(self, argv: Sequence[str]) -> subprocess.Popen[str]:
            return super().popen(["sh", "-c", "cat >/dev/null; echo 'iptables-restore: line 3 failed' >&2; exit 1"])

    stream = FullStream(_big_state(), _settings())
    restorer = Restorer(Refusing(netns=ns), mode="nft")
    with pytest.raises(RestoreError) as e:
        restorer.sync_full(stream, stream.ruleset, restorer.list_kernel())
    lines = str(e.value).splitlines()
    assert lines[1:] == ["  2: -S", "  3: :KUBE-SERVICES - [0:0]", "  4: :KUBE-NODEPORTS - [0:0]"], lines
