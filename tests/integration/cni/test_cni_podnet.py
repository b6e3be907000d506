"""podnet's CNI plugins where the reference has nothing to compare with: spec 1.1.0 (GC, STATUS),
concurrent allocation, and bad input that must fail cleanly without leaving anything behind."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = [pytest.mark.integration]

if os.geteuid() != 0:
    pytest.skip("needs root for network namespaces", allow_module_level=True)

from podnet.cni.ipmasq import chain_name  # noqa: E402

from .cni_harness import Side  # noqa: E402


@pytest.fixture(scope="module")
def side() -> Iterator[Side]:
    s = Side("podnet")
    try:
        yield s
    finally:
        s.close()


def conf(side: Side, name: str, subnet: str, version: str = "1.1.0", **over: Any) -> dict[str, Any]:
    c: dict[str, Any] = {"cniVersion": version, "name": name, "type": "bridge", "bridge": "cni0", "isGateway": True,
                         "ipMasq": True, "ipam": {"type": "host-local", "subnet": subnet, "dataDir": side.data_dir,
                                                  "routes": [{"dst": "0.0.0.0/0"}]}}
    c.update(over)
    return c


def nat(side: Side) -> list[str]:
    out = subprocess.run(["ip", "netns", "exec", side.host, "iptables", "-t", "nat", "-S"], capture_output=True,
                         text=True, check=True).stdout
    return out.splitlines()


def test_spec_110_add_check_del_and_result_shape(side: Side) -> None:
    c = conf(side, "v110", "10.30.0.0/24", bridge="cni110")
    ns = side.container("v110")
    add = side.call("bridge", "ADD", c, cid="v110c", netns_path=ns, ifname="eth0")
    assert add.rc == 0, add.stdout
    res = add.json
    assert res["cniVersion"] == "1.1.0" and res["ips"] == [
        {"interface": 2, "address": "10.30.0.2/24", "gateway": "10.30.0.1"}]
    chk = side.call("bridge", "CHECK", {**c, "prevResult": res}, cid="v110c", netns_path=ns, ifname="eth0")
    assert (chk.rc, chk.stdout) == (0, "")
    dele = side.call("bridge", "DEL", {**c, "prevResult": res}, cid="v110c", netns_path=ns, ifname="eth0")
    assert (dele.rc, dele.stdout) == (0, "")
    assert "10.30.0.2" not in side.store().get("v110", {})
    assert not any(chain_name("v110", "v110c") in ln for ln in nat(side))


def test_gc_releases_ips_and_masq_of_attachments_not_listed(side: Side) -> None:
    c = conf(side, "gcnet", "10.31.0.0/24", bridge="cnigc")
    ids = ["gc1", "gc2", "gc3"]
    for cid in ids:
        ns = side.container(cid)
        r = side.call("bridge", "ADD", c, cid=cid, netns_path=ns, ifname="eth0")
        assert r.rc == 0, r.stdout
    store = side.store()["gcnet"]
    assert sorted(v[1] for k, v in store.items() if k.startswith("10.")) == [f"{i}\r\neth0" for i in ids]
    gc = side.call("bridge", "GC", {**c, "cni.dev/valid-attachments": [{"containerID": "gc1", "ifname": "eth0"}]})
    assert (gc.rc, gc.stdout) == (0, ""), gc.stdout
    store = side.store()["gcnet"]
    assert {k: v[1] for k, v in store.items() if k.startswith("10.")} == {"10.31.0.2": "gc1\r\neth0"}
    rules = nat(side)
    assert any(chain_name("gcnet", "gc1") in ln for ln in rules)
    assert not any(chain_name("gcnet", cid) in ln for cid in ("gc2", "gc3") for ln in rules)
    # the old key name is honoured too, and GC with nothing valid releases the rest
    gc = side.call("bridge", "GC", {**c, "cni.dev/attachments": []})
    assert gc.rc == 0, gc.stdout
    assert not [k for k in side.store()["gcnet"] if k.startswith("10.")]
    assert not any(chain_name("gcnet", "gc1") in ln for ln in nat(side))
    for cid in ids:  # DEL after GC is still fine (idempotent)
        r = side.call("bridge", "DEL", c, cid=cid, netns_path=side.container(cid), ifname="eth0")
        assert r.rc == 0, r.stdout


def test_gc_host_local_keeps_other_ifnames_apart(side: Side) -> None:
    ipam = {"cniVersion": "1.1.0", "name": "gcipam", "ipam": {"type": "host-local", "subnet": "10.32.0.0/24",
                                                               "dataDir": side.data_dir}}
    for cid, ifn in (("x", "eth0"), ("x", "eth1"), ("y", "eth0")):
        assert side.call("host-local", "ADD", ipam, cid=cid, netns_path="/dev/null", ifname=ifn).rc == 0
    r = side.call("host-local", "GC", {**ipam, "cni.dev/valid-attachments": [{"containerID": "x", "ifname": "eth1"}]})
    assert r.rc == 0, r.stdout
    left = {k: v[1] for k, v in side.store()["gcipam"].items() if k.startswith("10.")}
    assert left == {"10.32.0.3": "x\r\neth1"}


def test_status(side: Side) -> None:
    c = conf(side, "stnet", "10.33.0.0/24")
    assert side.call("bridge", "STATUS", c).rc == 0
    assert side.call("host-local", "STATUS", c).rc == 0
    # flannel is not ready until the overlay has written subnet.env
    fl = {"cniVersion": "1.1.0", "name": "fl", "type": "flannel", "subnetFile": os.path.join(side.tmp, "absent.env")}
    r = side.call("flannel", "STATUS", fl)
    assert r.rc == 1 and r.json["code"] == 50, r.stdout
    # a data dir that cannot be written makes host-local (and bridge, which forwards STATUS) not available
    blocker = os.path.join(side.tmp, "file")
    open(blocker, "w").close()
    os.chmod(side.tmp, 0o755)
    bad = conf(side, "stnet", "10.33.0.0/24")
    bad["ipam"]["dataDir"] = os.path.join(blocker, "sub")
    r = side.call("bridge", "STATUS", bad)
    assert r.rc == 1 and r.json["code"] == 50, r.stdout
    # below 1.1.0 GC/STATUS do not exist
    r = side.call("bridge", "STATUS", {**c, "cniVersion": "1.0.0"})
    assert r.rc == 1 and r.json["code"] == 1


def test_eight_concurrent_adds_never_share_an_ip(side: Side) -> None:
    ipam = {"cniVersion": "1.0.0", "name": "race", "ipam": {"type": "host-local", "subnet": "10.34.0.0/28",
                                                             "dataDir": side.data_dir}}
    env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
    env.update(CNI_COMMAND="ADD", CNI_PATH=side.cni_path, CNI_NETNS="/dev/null", CNI_IFNAME="eth0")
    procs = []
    for i in range(8):
        procs.append(subprocess.Popen([side.plugin_path("host-local")], env={**env, "CNI_CONTAINERID": f"race{i}"},
                                      stdin=subprocess.PIPE, stdout=subprocess.PIPE))
    for p in procs:
        assert p.stdin is not None
        p.stdin.write(json.dumps(ipam).encode())
        p.stdin.close()
    outs = []
    for p in procs:
        assert p.stdout is not None
        outs.append(json.loads(p.stdout.read()))
        assert p.wait(timeout=30) == 0
    ips = [o["ips"][0]["address"] for o in outs]
    assert len(set(ips)) == 8
    store = {k: v[1] for k, v in side.store()["race"].items() if k.startswith("10.")}
    assert sorted(store) == sorted(ip.split("/")[0] for ip in ips)
    assert sorted(store.values()) == sorted(f"race{i}\r\neth0" for i in range(8))


BAD_CASES: list[tuple[str, dict[str, Any], bytes | None, dict[str, str], int]] = [
    # name, conf overrides, raw stdin, env overrides, expected code
    ("malformed-json", {}, b'{"cniVersion":', {}, 6),
    ("json-not-object", {}, b"[1,2]", {}, 6),
    ("empty-stdin", {}, b"", {}, 6),
    ("no-name", {"name": None}, None, {}, 7),
    ("bad-name", {"name": "../etc"}, None, {}, 7),
    ("unknown-version", {"cniVersion": "2.0.0"}, None, {}, 1),
    ("garbage-version", {"cniVersion": "x.y"}, None, {}, 1),
    ("missing-netns", {}, None, {"CNI_NETNS": None}, 4),
    ("missing-ifname", {}, None, {"CNI_IFNAME": None}, 4),
    ("missing-containerid", {}, None, {"CNI_CONTAINERID": None}, 4),
    ("missing-path", {}, None, {"CNI_PATH": ""}, 4),
    ("containerid-traversal", {}, None, {"CNI_CONTAINERID": "../../etc/passwd"}, 4),
    ("containerid-newline", {}, None, {"CNI_CONTAINERID": "abc\n"}, 4),
    ("ifname-slash", {}, None, {"CNI_IFNAME": "a/b"}, 4),
    ("ifname-dotdot", {}, None, {"CNI_IFNAME": ".."}, 4),
    ("ifname-space", {}, None, {"CNI_IFNAME": "eth 0"}, 4),
    ("ifname-too-long", {}, None, {"CNI_IFNAME": "x" * 16}, 4),
    ("unknown-cni-arg", {}, None, {"CNI_ARGS": "FOO=bar"}, 999),
    ("bad-cni-arg-pair", {}, None, {"CNI_ARGS": "FOO"}, 999),
    ("bad-subnet", {"ipam": {"type": "host-local", "subnet": "10.35.0.0/31"}}, None, {}, 999),
    ("host-bits-subnet", {"ipam": {"type": "host-local", "subnet": "10.35.0.1/24"}}, None, {}, 999),
    ("not-a-cidr", {"ipam": {"type": "host-local", "subnet": "banana"}}, None, {}, 999),
    ("range-outside", {"ipam": {"type": "host-local", "ranges": [[{"subnet": "10.35.0.0/24",
                                                                    "rangeStart": "10.36.0.5"}]]}}, None, {}, 999),
    ("no-ranges", {"ipam": {"type": "host-local"}}, None, {}, 999),
    ("unknown-ipam", {"ipam": {"type": "nope"}}, None, {}, 999),
    ("bool-as-string", {"isGateway": "yes"}, None, {}, 999),
    ("hairpin-and-promisc", {"hairpinMode": True, "promiscMode": True}, None, {}, 999),
    ("vlan-unsupported", {"vlan": 5}, None, {}, 2),
    ("netns-not-netns", {}, None, {"CNI_NETNS": "/etc/hostname"}, 999),
    ("netns-missing", {}, None, {"CNI_NETNS": "/run/netns/pn-cni-nope-nope"}, 999),
    ("unknown-command", {}, None, {"CNI_COMMAND": "FOO"}, 4),
    ("netns-is-host", {}, None, {"CNI_NETNS": "HOST"}, 8),
]


@pytest.mark.parametrize("name,over,raw,env,code", BAD_CASES, ids=[c[0] for c in BAD_CASES])
def test_bad_input_gets_error_json_and_leaves_nothing(side: Side, name: str, over: dict[str, Any],
                                                      raw: bytes | None, env: dict[str, str], code: int) -> None:
    c = conf(side, "badnet", "10.35.0.0/24", version="1.0.0", bridge="cnibad")
    for k, v in over.items():
        if v is None:
            c.pop(k, None)
        else:
            c[k] = v
    if "ipam" in over:
        c["ipam"] = {**over["ipam"], "dataDir": side.data_dir}
    ns = side.container("bad")
    if env.get("CNI_NETNS") == "HOST":
        env = {**env, "CNI_NETNS": f"/run/netns/{side.host}"}
    before = side.snapshot()
    r = side.call("bridge", "ADD", c, cid="badc", netns_path=ns, ifname="eth0", extra_env=env, raw_stdin=raw)
    assert r.rc == 1, r.stdout
    err = r.json
    assert err["code"] == code and err["msg"], r.stdout
    assert set(err) <= {"cniVersion", "code", "msg", "details"}
    after = side.snapshot()
    after_store = {k: v for k, v in after["store"].get("badnet", {}).items() if k.startswith("10.")}
    assert after_store == {}, "IPAM file left behind"
    for k in ("containers", "ports", "host_veths", "host_addrs", "host_routes", "nat"):
        assert after[k] == before[k], k
    assert "cnibad" not in after["bridges"], "a bridge made for a failed ADD must go again"


def test_flannel_replays_saved_config_and_forwards_gc(side: Side) -> None:
    senv = os.path.join(side.tmp, "fl-subnet.env")
    with open(senv, "w") as f:
        f.write("FLANNEL_NETWORK=10.40.0.0/16\nFLANNEL_SUBNET=10.40.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    fdir = os.path.join(side.tmp, "fl-state")
    fl = {"cniVersion": "1.1.0", "name": "flnet", "type": "flannel", "subnetFile": senv, "dataDir": fdir,
          "delegate": {"bridge": "cnifl"}, "ipam": {"dataDir": side.data_dir}}
    for cid in ("f1", "f2"):
        r = side.call("flannel", "ADD", fl, cid=cid, netns_path=side.container(cid), ifname="eth0")
        assert r.rc == 0, r.stdout
        assert r.json["cniVersion"] == "1.1.0" and r.json["ips"][0]["address"].startswith("10.40.3.")
    assert sorted(os.listdir(fdir)) == ["f1", "f2"]
    # the node's subnet changes (new lease): DEL must still release what ADD used, from the saved config
    with open(senv, "w") as f:
        f.write("FLANNEL_NETWORK=10.40.0.0/16\nFLANNEL_SUBNET=10.40.9.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    r = side.call("flannel", "DEL", fl, cid="f1", netns_path=side.container("f1"), ifname="eth0")
    assert (r.rc, r.stdout) == (0, "")
    assert os.listdir(fdir) == ["f2"]
    assert not [k for k, v in side.store()["flnet"].items() if v[1].startswith("f1\r")]
    r = side.call("flannel", "DEL", fl, cid="f1", netns_path=side.container("f1"), ifname="eth0")
    assert (r.rc, r.stdout) == (0, ""), "a second DEL (no saved config) is a no-op"
    # GC goes to the delegate chain: bridge -> host-local; nothing valid -> f2's address is released
    with open(senv, "w") as f:
        f.write("FLANNEL_NETWORK=10.40.0.0/16\nFLANNEL_SUBNET=10.40.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    r = side.call("flannel", "GC", {**fl, "cni.dev/valid-attachments": []})
    assert r.rc == 0, r.stdout
    assert not [k for k in side.store()["flnet"] if k.startswith("10.")]
    r = side.call("flannel", "CHECK", fl, cid="f2", netns_path=side.container("f2"), ifname="eth0")
    assert r.rc == 0
    r = side.call("flannel", "DEL", fl, cid="f2", netns_path=side.container("f2"), ifname="eth0")
    assert r.rc == 0 and os.listdir(fdir) == []


def test_podnet_bridge_with_reference_host_local(side: Side) -> None:
    """Delegation by exec: podnet-bridge finds the reference host-local in CNI_PATH and both share one store."""
    bindir = side.cni_path.split(":")[0]
    mixed = os.path.join(side.tmp, "mixed")
    os.makedirs(mixed, exist_ok=True)
    if not os.path.exists(os.path.join(mixed, "bridge")):
        os.symlink(os.path.realpath(os.path.join(bindir, "bridge")), os.path.join(mixed, "bridge"))
    c = conf(side, "mixnet", "10.36.0.0/24", version="1.0.0", bridge="cnimix")
    ns = side.container("mix")
    env = {"CNI_PATH": f"{mixed}:/usr/lib/cni"}
    r = side.call("bridge", "ADD", c, cid="mixc", netns_path=ns, ifname="eth0", extra_env=env)
    assert r.rc == 0, r.stdout
    assert r.json["ips"][0]["address"] == "10.36.0.2/24"
    store = side.store()["mixnet"]
    assert store["10.36.0.2"][1] == "mixc\r\neth0" and store["last_reserved_ip.0"][1] == "10.36.0.2"
    # the reference host-local's errors come through unchanged
    r2 = side.call("bridge", "ADD", c, cid="mixc", netns_path=ns, ifname="eth1", extra_env=env)
    assert r2.rc == 0
    r3 = side.call("bridge", "ADD", {**c, "ipam": {**c["ipam"], "subnet": "10.36.0.0/31"}}, cid="mixd",
                   netns_path=ns, ifname="eth2", extra_env=env)
    assert r3.rc == 1 and r3.json["msg"] == "invalid range set 0: Network 10.36.0.0/31 too small to allocate from"
    for ifn in ("eth0", "eth1"):
        assert side.call("bridge", "DEL", c, cid="mixc", netns_path=ns, ifname=ifn, extra_env=env).rc == 0
    assert not [k for k in side.store()["mixnet"] if k.startswith("10.")]


def test_container_mac_from_cni_args_and_runtime_config(side: Side) -> None:
    c = conf(side, "macnet", "10.37.0.0/24", version="1.0.0", bridge="cnimac", ipMasq=False)
    ns = side.container("mac")
    r = side.call("bridge", "ADD", c, cid="macc", netns_path=ns, ifname="eth0",
                  extra_env={"CNI_ARGS": "IgnoreUnknown=1;MAC=0a:58:0a:25:00:09"})
    assert r.rc == 0, r.stdout
    assert r.json["interfaces"][2]["mac"] == "0a:58:0a:25:00:09"
    link = json.loads(subprocess.run(["ip", "-n", side.ns_name("mac"), "-j", "link", "show", "eth0"],
                                     capture_output=True, text=True, check=True).stdout)[0]
    assert link["address"] == "0a:58:0a:25:00:09"
    rc = {**c, "runtimeConfig": {"mac": "0a:58:0a:25:00:0a"}}
    r = side.call("bridge", "ADD", rc, cid="macc", netns_path=ns, ifname="eth1",
                  extra_env={"CNI_ARGS": "IgnoreUnknown=1;MAC=0a:58:0a:25:00:09"})
    assert r.rc == 0 and r.json["interfaces"][2]["mac"] == "0a:58:0a:25:00:0a", "runtimeConfig wins over CNI_ARGS"
    for ifn in ("eth0", "eth1"):
        assert side.call("bridge", "DEL", c, cid="macc", netns_path=ns, ifname=ifn).rc == 0


HL_BAD = [c for c in BAD_CASES if c[0] in (
    "malformed-json", "empty-stdin", "no-name", "bad-name", "unknown-version", "missing-ifname",
    "missing-containerid", "containerid-traversal", "ifname-slash", "ifname-dotdot", "unknown-cni-arg",
    "bad-subnet", "host-bits-subnet", "not-a-cidr", "range-outside", "no-ranges")]


@pytest.mark.parametrize("name,over,raw,env,code", HL_BAD, ids=[c[0] for c in HL_BAD])
def test_host_local_bad_input_leaves_no_ipam_file(side: Side, name: str, over: dict[str, Any], raw: bytes | None,
                                                  env: dict[str, str], code: int) -> None:
    c: dict[str, Any] = {"cniVersion": "1.0.0", "name": "hlbad",
                         "ipam": {"type": "host-local", "subnet": "10.38.0.0/24", "dataDir": side.data_dir}}
    for k, v in over.items():
        if v is None:
            c.pop(k, None)
        elif k == "ipam":
            c["ipam"] = {**v, "dataDir": side.data_dir}
        else:
            c[k] = v
    r = side.call("host-local", "ADD", c, cid="hlc", netns_path="/dev/null", ifname="eth0", extra_env=env,
                  raw_stdin=raw)
    assert r.rc == 1 and r.json["code"] == code and r.json["msg"], r.stdout
    assert not [k for k in side.store().get("hlbad", {}) if k.startswith("10.")]


@pytest.mark.parametrize("case", ["no-subnet-env", "delegate-name", "delegate-ipam", "bad-version", "bad-id"])
def test_flannel_bad_input_saves_nothing(side: Side, case: str) -> None:
    senv = os.path.join(side.tmp, "fb-subnet.env")
    with open(senv, "w") as f:
        f.write("FLANNEL_NETWORK=10.41.0.0/16\nFLANNEL_SUBNET=10.41.3.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    fdir = os.path.join(side.tmp, "fb-state")
    fl: dict[str, Any] = {"cniVersion": "1.0.0", "name": "fbad", "type": "flannel", "subnetFile": senv,
                          "dataDir": fdir, "delegate": {"bridge": "cnifb"}, "ipam": {"dataDir": side.data_dir}}
    cid = "fbc"
    if case == "no-subnet-env":
        fl["subnetFile"] = os.path.join(side.tmp, "missing.env")
    elif case == "delegate-name":
        fl["delegate"] = {"name": "x"}
    elif case == "delegate-ipam":
        fl["delegate"] = {"ipam": {}}
    elif case == "bad-version":
        fl["cniVersion"] = "7.0.0"
    else:
        cid = "../fbc"
    ns = side.container("fb")
    before = side.snapshot()
    r = side.call("flannel", "ADD", fl, cid=cid, netns_path=ns, ifname="eth0")
    assert r.rc == 1 and r.json["code"] in (1, 4, 999) and r.json["msg"], r.stdout
    assert not os.path.exists(fdir) or os.listdir(fdir) == []
    after = side.snapshot()
    for k in ("containers", "ports", "host_veths", "nat", "store"):
        assert after[k] == before[k], k
