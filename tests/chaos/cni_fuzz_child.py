"""The CNI half of test_fuzz_inputs.py, run as a child process inside a throw-away pn- namespace.

The plugins act on the namespace they run in (DEL and GC run iptables there, ADD makes a bridge), so the
fuzzing must never run in the test runner's own namespace: test_fuzz_inputs.py starts this script with
`ip netns exec`. Every generated call goes through main.run(), the exec protocol itself (env + stdin ->
stdout + exit code). Every answer must be a valid result (exit 0) or the CNI error JSON (exit 1) whose
message is no Python programming error. Prints {"tried": N, "outcomes": {...}} on success.

usage: cni_fuzz_child.py WORKDIR CONTAINER_NETNS_PATH MAX_EXAMPLES
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnet.cni import main

WORK, CONT_NS, MAX = sys.argv[1], sys.argv[2], int(sys.argv[3])
DATA = os.path.join(WORK, "data")
SUBNET_ENV = os.path.join(WORK, "subnet.env")
BIN = os.path.join(WORK, "bin")
EMPTY = os.path.join(WORK, "empty")
MARKER = os.path.join(WORK, "RAN")
PROGRAMMING_ERRORS = ("TypeError", "KeyError", "AttributeError", "IndexError", "AssertionError", "NameError",
                      "UnboundLocalError", "RecursionError", "ZeroDivisionError")
tally: Counter[str] = Counter()

json_leaf = st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=12)
json_any = st.recursive(json_leaf, lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=8), c,
                                                                                        max_size=3), max_leaves=8)
def mostly(good: st.SearchStrategy, bad: st.SearchStrategy) -> st.SearchStrategy:
    """good about 4 times in 5: deep paths get reached, odd values still reach every check."""
    return st.integers(0, 4).flatmap(lambda i: bad if i == 4 else good)


ids = st.sampled_from(["c1", "c1", "c1", "c2", "pnfuzz", "a.b-c_d", "", "../x", "a/b", "x" * 300]) \
    .flatmap(lambda v: mostly(st.just(v), st.text(max_size=20)))
ifnames = mostly(st.sampled_from(["eth0", "eth0", "eth0", "eth1", "", "a/b", ".", "x" * 20, "e th"]), st.text(max_size=16))
netns_paths = st.sampled_from([CONT_NS, CONT_NS, "/nonexistent/ns", "", "/dev/null"])
cni_paths = mostly(st.sampled_from([BIN, BIN, BIN, EMPTY, BIN + ":" + EMPTY, "", ":"]),
                   st.text(max_size=20).map(lambda t: "/nonexistent/" + t))
delegate_types = mostly(st.sampled_from(["host-local", "host-local", "host-local", "bridge", "flannel", "",
                                         "../evil.sh", MARKER + ".sh", "/bin/sh", "nope"]), json_leaf)
versions = mostly(st.sampled_from(["1.0.0", "1.1.0", "0.4.0", "0.3.1", "0.1.0", "0.2.0", "0.3.0", "", "9.9.9",
                                   "1.x"]), json_leaf)
subnets = mostly(st.sampled_from(["10.250.0.0/24", "10.250.0.0/24", "10.250.0.0/24", "10.250.1.0/30",
                                  "fd00:250::/120", "10.250.0.0/33", "garbage", ""]), json_leaf)


@st.composite
def configs(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 19)) == 19:
        return draw(st.binary(max_size=64))
    ipam: dict[str, object] = {"type": draw(delegate_types), "subnet": draw(subnets), "dataDir": DATA}
    if draw(st.booleans()):
        ipam["ranges"] = draw(st.lists(st.lists(st.fixed_dictionaries({"subnet": subnets}), max_size=2), max_size=2)
                              | json_leaf)
    if draw(st.booleans()):
        ipam["routes"] = draw(st.lists(st.fixed_dictionaries({"dst": subnets}), max_size=2) | json_leaf)
    conf: dict[str, object] = {
        "cniVersion": draw(versions), "name": draw(mostly(st.sampled_from(["fuzznet"] * 6 + ["", "a/b"]), json_leaf)),
        "type": draw(st.sampled_from(["bridge", "flannel", "host-local"])), "bridge": "pnfz0", "ipam": ipam,
        "subnetFile": SUBNET_ENV, "dataDir": DATA,
    }
    for key in draw(st.lists(st.sampled_from(["isGateway", "ipMasq", "mtu", "hairpinMode", "promiscMode", "vlan",
                                              "isDefaultGateway", "prevResult", "runtimeConfig", "args", "delegate",
                                              "cni.dev/valid-attachments", "dns", "macspoofchk"]), max_size=2)):
        conf[key] = draw(json_any)
    if isinstance(conf.get("delegate"), dict):
        conf["delegate"].pop("dataDir", None)  # type: ignore[union-attr]
    if draw(st.booleans()):
        conf["delegate"] = {"type": draw(delegate_types)}
    return json.dumps(conf).encode()


def check(cmd: str, rc: int, out: str) -> None:
    if rc == 0:
        if cmd == "VERSION":
            assert "supportedVersions" in json.loads(out), out
        elif cmd == "ADD":
            res = json.loads(out)
            assert isinstance(res, dict) and "cniVersion" in res, out
        elif out:
            json.loads(out)
        tally[f"ok {cmd or '(none)'}"] += 1
        return
    assert rc == 1, (rc, out)
    err = json.loads(out)
    assert isinstance(err, dict) and isinstance(err.get("code"), int) and isinstance(err.get("msg"), str), out
    assert not err["msg"].startswith(PROGRAMMING_ERRORS), f"a bug, not an answer: {err}"
    tally[f"error {err['code']}"] += 1


@settings(max_examples=MAX, deadline=None, database=None, derandomize=True,
          suppress_health_check=list(HealthCheck))
@given(plugin=st.sampled_from(["bridge", "host-local", "flannel"]),
       cmd=st.sampled_from(["ADD", "ADD", "ADD", "DEL", "DEL", "CHECK", "DEL", "CHECK", "GC", "STATUS", "VERSION", "", "add", "BOGUS"]),
       cid=ids, ifname=ifnames, netns=netns_paths, path=cni_paths,
       args=mostly(st.sampled_from(["", "", "", "IgnoreUnknown=1", "MAC=aa:bb:cc:dd:ee:ff", "K8S_POD_NAME=x",
                                    "a=b=c"]), st.text(max_size=16)),
       stdin=configs())
def fuzz(plugin: str, cmd: str, cid: str, ifname: str, netns: str, path: str, args: str, stdin: bytes) -> None:
    env = {"CNI_COMMAND": cmd, "CNI_CONTAINERID": cid, "CNI_IFNAME": ifname, "CNI_NETNS": netns,
           "CNI_PATH": path, "CNI_ARGS": args}
    rc, out, _err = main.run(plugin, env, stdin)
    tally["tried"] += 1
    check(cmd, rc, out)
    assert not os.path.exists(MARKER), "a delegate outside CNI_PATH ran"


def _setup() -> None:
    for d in (DATA, BIN, EMPTY):
        os.makedirs(d, exist_ok=True)
    venv_bin = os.path.dirname(sys.executable)
    for name, script in (("bridge", "podnet-bridge"), ("host-local", "podnet-host-local"),
                         ("flannel", "podnet-flannel")):
        if not os.path.exists(os.path.join(BIN, name)):
            os.symlink(os.path.join(venv_bin, script), os.path.join(BIN, name))
    with open(MARKER + ".sh", "w") as f:
        f.write(f"#!/bin/sh\ntouch {MARKER}\n")
    os.chmod(MARKER + ".sh", 0o755)
    with open(SUBNET_ENV, "w") as f:
        f.write("FLANNEL_NETWORK=10.250.0.0/16\nFLANNEL_SUBNET=10.250.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")


if __name__ == "__main__":
    _setup()
    fuzz()
    print(json.dumps({"tried": tally["tried"], "outcomes": dict(sorted(tally.items()))}))
