"""Property-based differential test of host-local: random range configs and random ADD/DEL/CHECK sequences go
to the reference host-local and to podnet's; every output, exit code and the whole store must match.

host-local needs no network namespace, so this runs the two binaries directly, each on its own data dir.
"""

from __future__ import annotations

import ipaddress
import json
import os
import shutil
import subprocess
import tempfile
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

pytestmark = [pytest.mark.integration]

REF = "/usr/lib/cni/host-local"
if not os.path.exists(REF):
    pytest.skip("reference host-local not installed", allow_module_level=True)

from .cni_harness import VENV_BIN  # noqa: E402

POD = os.path.join(VENV_BIN, "podnet-host-local")


def run(binary: str, cmd: str, conf: dict[str, Any], cid: str, ifname: str, args: str) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(CNI_COMMAND=cmd, CNI_CONTAINERID=cid, CNI_NETNS="/dev/null", CNI_IFNAME=ifname, CNI_PATH="/usr/lib/cni")
    if args:
        env["CNI_ARGS"] = args
    p = subprocess.run([binary], input=json.dumps(conf).encode(), env=env, capture_output=True, check=False)
    out = p.stdout.decode()
    if p.returncode != 0 and out:  # podnet adds cniVersion to errors (spec); the reference does not
        e = json.loads(out)
        e.pop("cniVersion", None)
        out = json.dumps(e)
    elif out:
        out = json.dumps(json.loads(out))
    return p.returncode, out


def store(d: str) -> dict[str, tuple[str, str]]:
    out = {}
    for root, _dirs, files in os.walk(d):
        for f in files:
            p = os.path.join(root, f)
            with open(p) as fh:
                out[os.path.relpath(p, d)] = (oct(os.stat(p).st_mode & 0o777), fh.read())
    return out


@st.composite
def ranges(draw: Any) -> list[list[dict[str, str]]]:
    sets = []
    for i in range(draw(st.integers(1, 2))):
        rset = []
        for j in range(draw(st.integers(1, 2))):
            v6 = i == 1 and draw(st.booleans())
            plen = draw(st.integers(122, 127)) if v6 else draw(st.integers(26, 31))
            base = f"fd{60 + i}::{j * 256:x}" if v6 else f"10.{60 + i}.{j * 4 + draw(st.integers(0, 3))}.0"
            net = ipaddress.ip_network(f"{base}/{plen}")
            r: dict[str, str] = {"subnet": str(net)}
            size = net.num_addresses
            if draw(st.booleans()):
                r["rangeStart"] = str(net.network_address + draw(st.integers(0, size)))
            if draw(st.booleans()):
                r["rangeEnd"] = str(net.network_address + draw(st.integers(0, size)))
            if draw(st.booleans()):
                r["gateway"] = str(net.network_address + draw(st.integers(0, size - 1)))
            rset.append(r)
        sets.append(rset)
    return sets


ops = st.lists(st.tuples(st.sampled_from(["ADD", "ADD", "ADD", "DEL", "CHECK"]), st.integers(0, 5),
                         st.sampled_from(["eth0", "eth1"]),
                         st.sampled_from(["", "", "", "IP=10.60.0.5", "IP=10.60.4.2", "IP=10.99.0.1",
                                          "IgnoreUnknown=1;K8S_POD_NAME=x", "FOO=1"])),
               min_size=1, max_size=8)


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rs=ranges(), seq=ops, version=st.sampled_from(["0.3.1", "0.4.0", "1.0.0"]))
def test_host_local_matches_reference(rs: list[list[dict[str, str]]], seq: list[tuple[str, int, str, str]],
                                      version: str) -> None:
    tmp = tempfile.mkdtemp(prefix="pn-cni-hlfuzz-")
    try:
        dirs = {"ref": os.path.join(tmp, "ref"), "pod": os.path.join(tmp, "pod")}
        for cmd, n, ifname, args in seq:
            if cmd == "CHECK" and version == "0.3.1":
                continue
            outs = {}
            for side, binary in (("ref", REF), ("pod", POD)):
                conf = {"cniVersion": version, "name": "fuzz",
                        "ipam": {"type": "host-local", "ranges": rs, "dataDir": dirs[side]}}
                outs[side] = run(binary, cmd, conf, f"c{n}", ifname, args)
            assert outs["pod"] == outs["ref"], (cmd, n, ifname, args, rs)
            assert store(dirs["pod"]) == store(dirs["ref"]), (cmd, n, ifname, args, rs)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
