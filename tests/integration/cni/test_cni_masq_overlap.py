"""ipMasq's iptables-restore runs while ADD puts the addresses and routes in and while DEL takes the veth
pair down (ipmasq.start_setup / start_teardown, waited for at the end). A failing or missing
iptables-restore must still end in the CNI error JSON, a failed ADD must leave nothing behind (also rules
the restore had applied before something else failed), and a failed DEL reports as before."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = [pytest.mark.integration]

if os.geteuid() != 0:
    pytest.skip("needs root for network namespaces", allow_module_level=True)

from podnet.cni.ipmasq import chain_name  # noqa: E402

from .cni_harness import Side  # noqa: E402

FAILING_RESTORE = '#!/bin/sh\ncat >/dev/null\necho "iptables-restore: line 2 failed" >&2\nexit 1\n'
STATE = ("containers", "ports", "host_veths", "host_addrs", "host_routes", "nat", "nat6", "bridges")


@pytest.fixture(scope="module")
def side() -> Iterator[Side]:
    s = Side("podnet")
    try:
        yield s
    finally:
        s.close()


def conf(side: Side, name: str, subnet: str, bridge: str) -> dict[str, Any]:
    return {"cniVersion": "1.0.0", "name": name, "type": "bridge", "bridge": bridge, "isGateway": True,
            "ipMasq": True, "ipam": {"type": "host-local", "subnet": subnet, "dataDir": side.data_dir,
                                     "routes": [{"dst": "0.0.0.0/0"}]}}


def fake_bin(side: Side, name: str, restore: str | None) -> str:
    """A directory with `ip` (the harness runs `ip netns exec`), the real iptables-save and, if given, a
    fake iptables-restore."""
    d = os.path.join(side.tmp, name)
    os.makedirs(d, exist_ok=True)
    for tool in ("ip", "iptables-save", "ip6tables-save"):
        real = shutil.which(tool, path="/usr/sbin:/usr/bin:/sbin:/bin")
        assert real, tool
        if not os.path.exists(os.path.join(d, tool)):
            os.symlink(real, os.path.join(d, tool))
    if restore is not None:
        with open(os.path.join(d, "iptables-restore"), "w") as f:
            f.write(restore)
        os.chmod(os.path.join(d, "iptables-restore"), 0o755)
    return d


def state(side: Side, net: str) -> dict[str, Any]:
    snap = side.snapshot()
    out = {k: snap[k] for k in STATE}
    out["store"] = {k: v for k, v in snap["store"].get(net, {}).items() if not k.startswith(("lock", "last_"))}
    return out


def test_failing_restore_fails_add_with_the_error_json_and_leaves_nothing(side: Side) -> None:
    c = conf(side, "mqfail", "10.37.1.0/24", "cnimq1")
    ns = side.container("mq1")
    before = state(side, "mqfail")
    path = fake_bin(side, "failbin", FAILING_RESTORE) + ":/usr/sbin:/usr/bin:/sbin:/bin"
    r = side.call("bridge", "ADD", c, cid="mq1c", netns_path=ns, ifname="eth0", extra_env={"PATH": path})
    assert r.rc == 1
    assert r.json == {"cniVersion": "1.0.0", "code": 999,
                      "msg": "running [iptables-restore --noflush]: exit status 1: iptables-restore: line 2 failed"}
    assert state(side, "mqfail") == before


def test_missing_restore_fails_add_with_the_error_json_and_leaves_nothing(side: Side) -> None:
    c = conf(side, "mqmiss", "10.37.2.0/24", "cnimq2")
    ns = side.container("mq2")
    before = state(side, "mqmiss")
    r = side.call("bridge", "ADD", c, cid="mq2c", netns_path=ns, ifname="eth0",
                  extra_env={"PATH": fake_bin(side, "nobin", None)})
    assert r.rc == 1
    assert r.json == {"cniVersion": "1.0.0", "code": 999,
                      "msg": "iptables-restore -w --noflush: No such file or directory"}
    assert state(side, "mqmiss") == before


def test_add_failing_after_the_restore_started_removes_its_rules(side: Side) -> None:
    """The gateway check fails while (or after) the masquerade restore ran: its rules go again."""
    c = conf(side, "mqgw", "10.37.3.0/24", "cnimq3")
    ns = side.container("mq3")
    subprocess.run(["ip", "-n", side.host, "link", "add", "cnimq3", "type", "bridge"], check=True)
    subprocess.run(["ip", "-n", side.host, "addr", "add", "10.37.99.1/24", "dev", "cnimq3"], check=True)
    subprocess.run(["ip", "-n", side.host, "link", "set", "cnimq3", "up"], check=True)  # as ADD leaves it
    try:
        before = state(side, "mqgw")
        for attempt in range(3):  # the restore and the failure race differently each time
            r = side.call("bridge", "ADD", c, cid=f"mq3c{attempt}", netns_path=ns, ifname="eth0")
            assert r.rc == 1 and r.json["code"] == 999
            assert r.json["msg"] == ('failed to set bridge addr: "cnimq3" already has an IP address different '
                                     "from 10.37.3.1/24")
            assert state(side, "mqgw") == before
            assert not any(chain_name("mqgw", f"mq3c{attempt}") in ln for ln in before["nat"])
    finally:
        subprocess.run(["ip", "-n", side.host, "link", "del", "cnimq3"], check=False)


def test_del_reports_a_failing_restore_after_the_link_and_address_are_gone(side: Side) -> None:
    c = conf(side, "mqdel", "10.37.4.0/24", "cnimq4")
    ns = side.container("mq4")
    add = side.call("bridge", "ADD", c, cid="mq4c", netns_path=ns, ifname="eth0")
    assert add.rc == 0, add.stdout
    chain = chain_name("mqdel", "mq4c")
    assert any(chain in ln for ln in side.snapshot()["nat"])
    path = fake_bin(side, "failbin", FAILING_RESTORE) + ":/usr/sbin:/usr/bin:/sbin:/bin"
    prev = {**c, "prevResult": add.json}
    r = side.call("bridge", "DEL", prev, cid="mq4c", netns_path=ns, ifname="eth0", extra_env={"PATH": path})
    assert r.rc == 1
    assert r.json == {"cniVersion": "1.0.0", "code": 999,
                      "msg": "running [iptables-restore --noflush]: exit status 1: iptables-restore: line 2 failed"}
    snap = side.snapshot()
    assert snap["containers"]["mq4"]["links"] == [ln for ln in snap["containers"]["mq4"]["links"] if ln.startswith("lo ")]
    assert "10.37.4.2" not in snap["store"].get("mqdel", {})
    assert any(chain in ln for ln in snap["nat"])  # what failed is still there, for the retried DEL
    again = side.call("bridge", "DEL", prev, cid="mq4c", netns_path=ns, ifname="eth0")
    assert (again.rc, again.stdout) == (0, "")
    assert not any(chain in ln for ln in side.snapshot()["nat"])
