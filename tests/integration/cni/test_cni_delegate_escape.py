"""A delegate's `type` can never name a program outside CNI_PATH (the CVE-2021-20206 class).

Real execution: the plugins run as a runtime runs them (exec'd, in a throw-away host namespace), and the
"delegate" is a real executable script next to CNI_PATH that would leave a marker file if it ever ran.
Every command that delegates (ADD, DEL, CHECK, GC, STATUS; bridge's IPAM and flannel's delegate) must answer
libcni's error for an invalid plugin name and leave no marker. Where the reference bridge can answer the
same call (spec <= 1.0.0), podnet's exit code, error code and message must be the reference's.
"""

from __future__ import annotations

import json
import os
import stat
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = [pytest.mark.integration]

if os.geteuid() != 0:
    pytest.skip("needs root for network namespaces", allow_module_level=True)

from .cni_harness import Call, Side  # noqa: E402


@pytest.fixture
def side() -> Iterator[Side]:
    s = Side("podnet")
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def ref() -> Iterator[Side]:
    if not os.path.exists("/usr/lib/cni/bridge"):
        pytest.skip("reference plugins not installed")
    s = Side("ref")
    try:
        yield s
    finally:
        s.close()


def plant(side: Side) -> tuple[str, str]:
    """An executable that would create a marker file, outside every CNI_PATH dir. -> (script, marker)."""
    marker = os.path.join(side.tmp, "RAN")
    script = os.path.join(side.tmp, "evil.sh")
    with open(script, "w") as f:
        f.write(f"#!/bin/sh\ntouch {marker}\necho '{{\"cniVersion\":\"1.0.0\",\"ips\":[]}}'\n")
    os.chmod(script, os.stat(script).st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return script, marker


def bridge_conf(side: Side, ipam_type: str, version: str = "1.0.0") -> dict[str, Any]:
    return {"cniVersion": version, "name": "escnet", "type": "bridge", "bridge": "cniesc0", "isGateway": True,
            "ipam": {"type": ipam_type, "subnet": "10.251.0.0/24", "dataDir": side.data_dir}}


def names(side: Side, script: str) -> list[str]:
    """The escaping spellings: relative to the first CNI_PATH dir (where podnet's plugins are), and absolute."""
    rel = os.path.relpath(script, side.cni_path.split(":")[0])
    assert rel.startswith("..")
    return [rel, script]


def refused(c: Call, name: str) -> None:
    assert c.rc == 1, (c.stdout, c.stderr)
    assert c.json["code"] == 999 and c.json["msg"] == f"invalid plugin name: {name}", c.stdout


@pytest.mark.parametrize("cmd", ["ADD", "DEL", "CHECK"])
def test_bridge_ipam_type_escaping_cni_path_runs_nothing(side: Side, cmd: str) -> None:
    script, marker = plant(side)
    ns = side.container("c")
    for name in names(side, script):
        c = side.call("bridge", cmd, bridge_conf(side, name), cid="esc1", netns_path=ns, ifname="eth0")
        refused(c, name)
    assert not os.path.exists(marker), "the delegate outside CNI_PATH was executed"
    assert "cniesc0" not in {ln["ifname"] for ln in side._ipj(side.host, "link", "show")}, "ADD half-applied"


@pytest.mark.parametrize("cmd", ["GC", "STATUS"])
def test_bridge_gc_and_status_refuse_it_too(side: Side, cmd: str) -> None:
    script, marker = plant(side)
    for name in names(side, script):
        refused(side.call("bridge", cmd, bridge_conf(side, name, "1.1.0")), name)
    assert not os.path.exists(marker)


def test_bin_sh_as_ipam_type_is_refused(side: Side) -> None:
    c = side.call("bridge", "ADD", bridge_conf(side, "/bin/sh"), cid="esc2", netns_path=side.container("d"),
                  ifname="eth0")
    refused(c, "/bin/sh")


def test_same_answer_as_the_reference_bridge(side: Side, ref: Side) -> None:
    """The reference (libcni's FindInPath) refuses the same names with the same code and message."""
    for s in (side, ref):
        script, marker = plant(s)
        for cmd in ("ADD", "DEL"):
            c = s.call("bridge", cmd, bridge_conf(s, script), cid="esc3", netns_path=s.container("e"),
                       ifname="eth0")
            refused(c, script)
        assert not os.path.exists(marker), s.kind


def _subnet_env(side: Side) -> str:
    p = os.path.join(side.tmp, "subnet.env")
    with open(p, "w") as f:
        f.write("FLANNEL_NETWORK=10.252.0.0/16\nFLANNEL_SUBNET=10.252.1.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    return p


def flannel_conf(side: Side, **over: Any) -> dict[str, Any]:
    conf = {"cniVersion": "1.1.0", "name": "escfl", "type": "flannel", "subnetFile": _subnet_env(side),
            "dataDir": side.flannel_dir, "delegate": {"bridge": "cniescfl0"}}
    conf.update(over)
    return conf


@pytest.mark.parametrize("where", ["delegate", "ipam"])
@pytest.mark.parametrize("cmd", ["ADD", "GC", "STATUS"])
def test_flannel_delegate_and_ipam_type_escaping_runs_nothing(side: Side, where: str, cmd: str) -> None:
    script, marker = plant(side)
    for name in names(side, script):
        conf = (flannel_conf(side, delegate={"type": name}) if where == "delegate"
                else flannel_conf(side, ipam={"type": name}))
        env = {"cid": "escf1", "netns_path": side.container("f"), "ifname": "eth0"} if cmd == "ADD" else {}
        refused(side.call("flannel", cmd, conf, **env), name)
    assert not os.path.exists(marker)
    # ADD refused before it saved anything: there is no config for a later DEL to replay
    assert not os.path.exists(os.path.join(side.flannel_dir, "escf1"))


def test_flannel_del_never_replays_a_saved_escaping_type(side: Side) -> None:
    """A saved delegate config (e.g. written by an older version) naming a path is refused on DEL."""
    script, marker = plant(side)
    os.makedirs(side.flannel_dir, exist_ok=True)
    with open(os.path.join(side.flannel_dir, "escf2"), "w") as f:
        json.dump({"cniVersion": "1.1.0", "name": "escfl", "type": script}, f)
    refused(side.call("flannel", "DEL", flannel_conf(side), cid="escf2", ifname="eth0"), script)
    assert not os.path.exists(marker)
