"""kube-proxy's jumps stay above a rule another program appends to the same built-in chain while the
proxy's first full sync is on its way (flanneld's FORWARD jump, in a lab whose daemons start together)."""

from __future__ import annotations

from collections.abc import Container, Mapping

import pytest

pytestmark = pytest.mark.integration

FLANNEL = ["-m", "comment", "--comment", "flanneld forward", "-j", "ACCEPT"]


def test_jumps_go_above_a_rule_appended_after_the_listing(netns_factory) -> None:
    from podnet.net import netns
    from podnet.proxy.iptables.backend import IptablesBackend
    from podnet.proxy.iptables.names import Jump
    from podnet.proxy.iptables.restore import Listing, Restorer, Runner
    from podnet.proxy.model import DesiredState
    from podnet.proxy.settings import ProxierSettings

    ns = netns_factory("jmp")

    class Racing(Restorer):
        """The overlay appends its FORWARD rule right after the proxy listed the chains (FORWARD empty)."""

        def missing_jumps(self, declared: Mapping[str, Container[str]], listing: Listing | None = None) -> list[Jump]:
            missing = super().missing_jumps(declared, listing)
            netns.run(ns, ["iptables", "-w", "5", "-A", "FORWARD", *FLANNEL])
            return missing

    IptablesBackend(Racing(Runner(netns=ns))).full_sync(DesiredState(node_name="n1", services={}),
                                                         ProxierSettings(node_name="n1"))
    rules = [line for line in netns.run(ns, ["iptables", "-S", "FORWARD"]).stdout.splitlines()
             if line.startswith("-A ")]
    assert rules[-1] == '-A FORWARD -m comment --comment "flanneld forward" -j ACCEPT', rules
    assert len(rules) > 1 and all("-j KUBE-" in line for line in rules[:-1]), rules
