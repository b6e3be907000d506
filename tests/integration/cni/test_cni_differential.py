"""Differential suite: the reference plugins (Debian containernetworking-plugins 1.1.1, /usr/lib/cni) and
podnet's, driven through the same calls, must give the same exit codes, results, error codes and
messages, IPAM files and kernel state, step by step.

The scenario is run-reference.sh's (every case in shared/reference/cni-reference-outputs/, error
cases included) plus cases for hairpin/promisc/MTU/isDefaultGateway/L2-only and flannel. Each side
runs in its own throw-away host namespace. Where podnet deliberately differs, DEVIATIONS says how
and why, and the test checks podnet's side of it instead of skipping the step.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from typing import Any

import pytest

pytestmark = [pytest.mark.integration]

if os.geteuid() != 0 or not os.path.exists("/usr/lib/cni/bridge"):
    pytest.skip("needs root and the reference plugins in /usr/lib/cni", allow_module_level=True)

from podnet.cni import flannel  # noqa: E402

from .cni_harness import Call, Side, normalize_result, normalize_text  # noqa: E402

NET = "refnet"
SUBNET = "10.244.1.0/24"

# step -> how podnet is allowed (and required) to differ from the reference, and why
DEVIATIONS: dict[str, dict[str, Any]] = {
    "00-version-bridge": {"version": True, "why": "podnet also speaks spec 1.1.0 (GC, STATUS)"},
    "00-version-host-local-0.3.1": {"version": True, "why": "podnet also speaks spec 1.1.0"},
    "00-version-emptystdin": {"version": True, "why": "podnet also speaks spec 1.1.0"},
    "31-err-version-1.1.0": {"details": True, "why": "1.1.0 is supported by podnet; its side is sent 1.2.0 "
                             "(unsupported by both) and must fail the same way; 1.1.0 has its own tests"},
    "31b-err-version-9.9.9": {"details": True, "why": "the supported list in details includes 1.1.0"},
    "31c-err-version-garbage": {"details": True, "why": "the supported list in details includes 1.1.0"},
    "50-check": {"rc": (1, 0), "why": "reference CHECK reports the non-default route 10.96.0.0/12 missing although "
                 "it is in the container's table (compared in 50-add); podnet checks the table correctly"},
    "33c-err-unknown-ipam": {"no_leftovers": "d", "why": "as 33b: the IPAM plugin is not found after the veth "
                             "pair was made; the reference leaves it, podnet removes it"},
    "53-check": {"rc": (1, 0), "why": "as 50-check, for the IPv6 route fd20::/64 (present on both sides, see 53-add)"},
    "54-add-b-conflict": {"no_leftovers": "f", "why": "as 33b: the gateway conflict is found after the veth pair "
                          "was made; the reference leaves it, podnet removes it"},
    "34-err-cmd-GC": {"code": (3, 1), "msg": True, "why": "GC exists in spec 1.1; with a 1.0.0 config the "
                      "1.1 skel answers 'config version does not allow GC' (code 1)"},
    "34a-err-cmd-GC-with-ids": {"code": (4, 1), "msg": True, "why": "as 34"},
    "34b-err-cmd-STATUS": {"code": (3, 1), "msg": True, "why": "as 34, for STATUS"},
    "16c-del-c3-eth1": {"rc": (1, 0), "msg": True, "why": "reference flushes the chain it shares with eth0 and "
                        "fails on -X (plugins#810 family); podnet removes only eth1's rule, keeps eth0's masquerade"},
    "33b-err-bad-subnet": {"no_leftovers": "d", "why": "reference leaves the veth pair behind after a failed "
                           "IPAM ADD; podnet leaves nothing (bad input must not half-apply)"},
}
# (containerID, first step where the reference leaks or breaks its masquerade chain, step from which podnet
#  must have no rule of that container at all). plugins#810: DEL cannot find the addresses.
MASQ_LEAKS = [("cnirefc3", "16c-del-c3-eth1", "19-del-c3"), ("cnirefc2", "18-del-c2-netns-gone", "18-del-c2-netns-gone")]


# (step name, subnet.env lines, container id, ifname): flannel's meta plugin on other families
FLANNEL_FAMILY_CASES = (
    ("61-flannel-dualstack", "FLANNEL_NETWORK=10.2.0.0/16\nFLANNEL_SUBNET=10.2.17.1/24\n"
     "FLANNEL_IPV6_NETWORK=fd00:10:2::/56\nFLANNEL_IPV6_SUBNET=fd00:10:2:11::1/64\n", "fld", "eth1"),
    ("62-flannel-ipv6only", "FLANNEL_IPV6_NETWORK=fd00:10:3::/56\nFLANNEL_IPV6_SUBNET=fd00:10:3:11::1/64\n",
     "fl6", "eth2"),
)


def base_conf(side: Side, **over: Any) -> dict[str, Any]:
    conf: dict[str, Any] = {
        "cniVersion": "1.0.0", "name": NET, "type": "bridge", "bridge": "cni0", "isGateway": True, "ipMasq": True,
        "ipam": {"type": "host-local", "subnet": SUBNET, "routes": [{"dst": "0.0.0.0/0"}], "dataDir": side.data_dir},
    }
    conf.update(over)
    return conf


def with_prev(conf: dict[str, Any], call: Call) -> dict[str, Any]:
    return {**conf, "prevResult": call.json}


def run_list(side: Side, op: str, conflist: dict[str, Any], cache: dict[str, Any], **kw: Any) -> list[Call]:
    """A minimal runtime for a conflist: ADD chains prevResult; CHECK and DEL (reverse) get the cached result."""
    calls = []
    plugins = conflist["plugins"] if op != "DEL" else list(reversed(conflist["plugins"]))
    prev = cache.get("result") if op != "ADD" else None
    for p in plugins:
        req = {**p, "cniVersion": conflist["cniVersion"], "name": conflist["name"]}
        if prev is not None:
            req["prevResult"] = prev
        c = side.call(p["type"], op, req, **kw)
        calls.append(c)
        if c.rc != 0:
            break
        if op == "ADD":
            prev = c.json
    if op == "ADD" and calls and calls[-1].rc == 0:
        cache["result"] = prev
    return calls


def scenario(s: Side) -> dict[str, tuple[Call, dict[str, Any]]]:
    out: dict[str, tuple[Call, dict[str, Any]]] = {}

    def step(name: str, plugin: str, cmd: str, conf: Any, cid: str = "", ns: str = "", ifname: str = "",
             env: dict[str, str] | None = None, raw: bytes | None = None) -> Call:
        c = s.call(plugin, cmd, conf, cid=cid, netns_path=ns, ifname=ifname, extra_env=env, raw_stdin=raw)
        out[name] = (c, s.snapshot())
        return c

    conf = base_conf(s)
    step("00-version-bridge", "bridge", "VERSION", {"cniVersion": "1.0.0"})
    step("00-version-host-local-0.3.1", "host-local", "VERSION", {"cniVersion": "0.3.1"})
    step("00-version-emptystdin", "bridge", "VERSION", None, raw=b"")
    step("00-about-bridge", "bridge", "", None, raw=b"")

    ipam = {"cniVersion": "1.0.0", "name": "ipamonly", "ipam": {
        "type": "host-local", "ranges": [[{"subnet": "10.99.0.0/24", "rangeStart": "10.99.0.10",
                                           "rangeEnd": "10.99.0.11"}]],
        "routes": [{"dst": "0.0.0.0/0"}, {"dst": "192.168.0.0/16", "gw": "10.99.0.254"}], "dataDir": s.data_dir}}
    hl = {"ns": "/dev/null", "ifname": "eth0"}
    step("01-ipam-add-a", "host-local", "ADD", ipam, cid="ipamA", **hl)
    step("01-ipam-add-b", "host-local", "ADD", ipam, cid="ipamB", **hl)
    step("01-ipam-add-c-exhausted", "host-local", "ADD", ipam, cid="ipamC", **hl)
    step("01-ipam-add-a-dup", "host-local", "ADD", ipam, cid="ipamA", **hl)
    step("01-ipam-check-a", "host-local", "CHECK", ipam, cid="ipamA", **hl)
    step("01-ipam-check-unknown", "host-local", "CHECK", ipam, cid="ipamZ", **hl)
    step("01-ipam-del-a", "host-local", "DEL", ipam, cid="ipamA", ifname="eth0")
    step("01-ipam-del-a-again", "host-local", "DEL", ipam, cid="ipamA", ifname="eth0")
    step("01-ipam-del-b", "host-local", "DEL", ipam, cid="ipamB", ifname="eth0")

    a, b, c, d = (s.container(k) for k in "abcd")
    r1 = step("10-add-c1", "bridge", "ADD", conf, "cnirefc1", a, "eth0")
    step("11-check-c1", "bridge", "CHECK", with_prev(conf, r1), "cnirefc1", a, "eth0")
    step("11-check-c1-noprev", "bridge", "CHECK", conf, "cnirefc1", a, "eth0")
    r2 = step("12-add-c2", "bridge", "ADD", conf, "cnirefc2", b, "eth0")
    step("13-del-c1", "bridge", "DEL", with_prev(conf, r1), "cnirefc1", a, "eth0")
    step("14-del-c1-again", "bridge", "DEL", with_prev(conf, r1), "cnirefc1", a, "eth0")
    r3 = step("15-add-c3-roundrobin", "bridge", "ADD", conf, "cnirefc3", c, "eth0")
    step("16-add-c3-twice", "bridge", "ADD", conf, "cnirefc3", c, "eth0")
    step("16b-add-c3-other-ifname", "bridge", "ADD", conf, "cnirefc3", c, "eth1")
    step("16c-del-c3-eth1", "bridge", "DEL", conf, "cnirefc3", c, "eth1")
    step("16d-del-c3-eth1-retry", "bridge", "DEL", conf, "cnirefc3", c, "eth1")
    subprocess.run(["ip", "-n", s.ns_name("c"), "addr", "flush", "dev", "eth0", "scope", "global"], check=True)
    step("17-check-c3-addr-removed", "bridge", "CHECK", with_prev(conf, r3), "cnirefc3", c, "eth0")
    s.drop_ns("b")
    step("18-del-c2-netns-gone", "bridge", "DEL", with_prev(conf, r2), "cnirefc2", b, "eth0")
    step("18b-del-c2-no-netns-env", "bridge", "DEL", conf, "cnirefc2", "", "eth0")
    step("19-del-c3", "bridge", "DEL", with_prev(conf, r3), "cnirefc3", c, "eth0")

    for v in ("0.4.0", "0.3.1", "0.2.0"):
        cv = {**conf, "cniVersion": v, "name": f"{NET}-v{v.replace('.', '')}"}
        step(f"20-add-v{v}", "bridge", "ADD", cv, "cnirefv", d, "eth0")
        step(f"20-del-v{v}", "bridge", "DEL", cv, "cnirefv", d, "eth0")

    e = {"cid": "cnirefe", "ns": d, "ifname": "eth0"}
    step("30-err-malformed-json", "bridge", "ADD", None, raw=b'{"cniVersion":"1.0.0","name":"refnet","type":"bridge",', **e)
    step("31-err-version-1.1.0", "bridge", "ADD", {**conf, "cniVersion": "1.1.0" if s.kind == "ref" else "1.2.0"}, **e)
    step("31b-err-version-9.9.9", "bridge", "ADD", {**conf, "cniVersion": "9.9.9"}, **e)
    step("31c-err-version-garbage", "bridge", "ADD", {**conf, "cniVersion": "abc"}, **e)
    step("32-err-missing-netns", "bridge", "ADD", conf, "cnirefe", s.container("d")[:-1] + "zz-doesnotexist", "eth0")
    step("32b-err-netns-env-unset", "bridge", "ADD", conf, "cnirefe", "", "eth0")
    step("32c-err-netns-not-a-netns", "bridge", "ADD", conf, "cnirefe", "/etc/hostname", "eth0")
    step("33-err-no-name", "bridge", "ADD", {k: v for k, v in conf.items() if k != "name"}, **e)
    bad = {**conf, "ipam": {**conf["ipam"], "subnet": "10.244.1.0/31"}}
    step("33b-err-bad-subnet", "bridge", "ADD", bad, **e)
    step("33b-del-after-failed-add", "bridge", "DEL", bad, **e)
    nope = {**conf, "ipam": {**conf["ipam"], "type": "nope"}}
    step("33c-err-unknown-ipam", "bridge", "ADD", nope, **e)
    step("33c-del-after-failed-add", "bridge", "DEL", nope, **e)
    step("34-err-cmd-GC", "bridge", "GC", conf)
    step("34a-err-cmd-GC-with-ids", "bridge", "GC", conf, cid="cnirefe", ifname="eth0")
    step("34b-err-cmd-STATUS", "bridge", "STATUS", conf)
    step("34c-err-cmd-bogus", "bridge", "FOO", conf, **e)
    step("35-err-ifname-too-long", "bridge", "ADD", conf, "cnirefe", d, "eth0123456789abcdef")
    step("35b-err-bad-containerid", "bridge", "ADD", conf, "bad/id", d, "eth0")
    step("35c-err-no-cni-path", "bridge", "ADD", conf, env={"CNI_PATH": ""}, **e)
    step("36-check-v0.3.1-not-allowed", "bridge", "CHECK", {**conf, "cniVersion": "0.3.1"}, **e)
    step("37-err-cni-args-unknown-key", "bridge", "ADD", conf, env={"CNI_ARGS": "FOO=bar"}, **e)
    args = {"CNI_ARGS": "IgnoreUnknown=1;FOO=bar;IP=10.244.1.77"}
    step("37b-add-cni-args-ignoreunknown", "bridge", "ADD", conf, env=args, **e)
    step("37c-del-cni-args-ignoreunknown", "bridge", "DEL", conf, env=args, **e)

    conflist = {"cniVersion": "1.0.0", "name": f"{NET}-list", "plugins": [
        {k: v for k, v in conf.items() if k not in ("cniVersion", "name")},
        {"type": "tuning", "sysctl": {"net.ipv4.conf.eth0.arp_filter": "1"}}]}
    cache: dict[str, Any] = {}
    kw = {"cid": "cnirefl", "netns_path": d, "ifname": "eth0"}
    for op, name in (("ADD", "40-conflist-add"), ("CHECK", "40-conflist-check"), ("DEL", "40-conflist-del"),
                     ("DEL", "40-conflist-del-again")):
        calls = run_list(s, op, conflist, cache, **kw)
        out[name] = (calls[-1], s.snapshot())
        out[name + "-chain"] = (Call(max(x.rc for x in calls), json.dumps([x.json for x in calls]), ""),
                                out[name][1])

    # beyond the captured cases: the remaining bridge options, each ADD -> CHECK -> DEL
    opts = base_conf(s, bridge="cni1", hairpinMode=True, mtu=1400, isDefaultGateway=True, name="optnet",
                     ipam={"type": "host-local", "subnet": "10.245.0.0/24", "routes": [{"dst": "10.96.0.0/12"}],
                           "dataDir": s.data_dir})
    f = s.container("f")
    r = step("50-add-hairpin-mtu-defaultgw", "bridge", "ADD", opts, "optc", f, "eth0")
    step("50-check", "bridge", "CHECK", with_prev(opts, r), "optc", f, "eth0")
    step("50-del", "bridge", "DEL", with_prev(opts, r), "optc", f, "eth0")
    prom = base_conf(s, bridge="cni2", promiscMode=True, isGateway=False, ipMasq=False, name="promnet",
                     ipam={"type": "host-local", "ranges": [[{"subnet": "10.246.0.0/24", "rangeStart": "10.246.0.100",
                                                              "rangeEnd": "10.246.0.101", "gateway": "10.246.0.254"}]],
                           "dataDir": s.data_dir})
    r = step("51-add-promisc", "bridge", "ADD", prom, "promc", f, "eth1")
    step("51-check", "bridge", "CHECK", with_prev(prom, r), "promc", f, "eth1")
    step("51-del", "bridge", "DEL", prom, "promc", f, "eth1")
    ds = base_conf(s, bridge="cni6", name="dsnet", isDefaultGateway=True,
                   ipam={"type": "host-local", "ranges": [[{"subnet": "10.247.0.0/24"}], [{"subnet": "fd10::/64"}]],
                         "routes": [{"dst": "fd20::/64"}], "dataDir": s.data_dir})
    r = step("53-add-dualstack", "bridge", "ADD", ds, "dsc", f, "eth3")
    step("53-check", "bridge", "CHECK", with_prev(ds, r), "dsc", f, "eth3")
    step("53-del", "bridge", "DEL", with_prev(ds, r), "dsc", f, "eth3")
    # forceAddress: a bridge that already carries another network's gateway
    fa = base_conf(s, bridge="cni7", name="fanet", ipMasq=False,
                   ipam={"type": "host-local", "subnet": "10.248.0.0/24", "dataDir": s.data_dir})
    fb = {**fa, "name": "fbnet", "ipam": {**fa["ipam"], "subnet": "10.249.0.0/24"}}
    step("54-add-a", "bridge", "ADD", fa, "fac", f, "eth4")
    step("54-add-b-conflict", "bridge", "ADD", fb, "fbc", f, "eth5")
    step("54-del-b-after-conflict", "bridge", "DEL", fb, "fbc", f, "eth5")
    step("54-add-b-force", "bridge", "ADD", {**fb, "forceAddress": True}, "fbc", f, "eth5")
    step("54-del-b", "bridge", "DEL", fb, "fbc", f, "eth5")
    step("54-del-a", "bridge", "DEL", fa, "fac", f, "eth4")
    # CHECK finds what was broken after ADD, with the reference's words
    ck = base_conf(s, bridge="cni8", name="cknet", ipMasq=False, isDefaultGateway=True,
                   ipam={"type": "host-local", "subnet": "10.250.0.0/24", "dataDir": s.data_dir})
    r = step("55-add", "bridge", "ADD", ck, "ckc", f, "eth6")
    fake = json.loads(r.stdout)
    fake["interfaces"][2]["mac"] = "02:00:00:00:00:01"
    step("55-check-wrong-mac", "bridge", "CHECK", {**ck, "prevResult": fake}, "ckc", f, "eth6")
    subprocess.run(["ip", "-n", s.host, "link", "set", "cni8", "promisc", "on"], check=True)
    step("55-check-promisc-changed", "bridge", "CHECK", with_prev(ck, r), "ckc", f, "eth6")
    subprocess.run(["ip", "-n", s.host, "link", "set", "cni8", "promisc", "off"], check=True)
    subprocess.run(["ip", "-n", s.ns_name("f"), "route", "del", "default", "dev", "eth6"], check=True)
    step("55-check-route-gone", "bridge", "CHECK", with_prev(ck, r), "ckc", f, "eth6")
    step("55-del", "bridge", "DEL", with_prev(ck, r), "ckc", f, "eth6")
    l2 = {"cniVersion": "0.4.0", "name": "l2net", "type": "bridge", "bridge": "cni3"}
    step("52-add-l2only", "bridge", "ADD", l2, "l2c", f, "eth2")
    step("52-del-l2only", "bridge", "DEL", l2, "l2c", f, "eth2")

    # flannel: podnet-flannel vs the reference bridge given the delegate config flannel generates
    senv = os.path.join(s.tmp, "subnet.env")
    with open(senv, "w") as fh:
        fh.write("FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
    fconf = {"cniVersion": "0.3.1", "name": "cbr0", "type": "flannel", "subnetFile": senv,
             "dataDir": s.flannel_dir, "delegate": {"hairpinMode": True, "isDefaultGateway": True, "bridge": "cnifl0"},
             "ipam": {"dataDir": s.data_dir}}
    dconf = flannel.delegate_config(fconf, flannel.load_subnet_env(senv))
    g = s.container("g")
    if s.kind == "ref":
        step("60-flannel-add", "bridge", "ADD", dconf, "flc", g, "eth0")
        step("60-flannel-del", "bridge", "DEL", dconf, "flc", g, "eth0")
    else:
        step("60-flannel-add", "flannel", "ADD", fconf, "flc", g, "eth0")
        with open(os.path.join(s.flannel_dir, "flc"), "rb") as fh:
            out["60-flannel-saved"] = (Call(0, fh.read().decode(), ""), {})
        step("60-flannel-del", "flannel", "DEL", fconf, "flc", g, "eth0")
    # flannel on a dual-stack node (FLANNEL_IPV6_* from EnableIPv6) and on an IPv6-only one
    for name, env, cid, ifname in FLANNEL_FAMILY_CASES:
        senv = os.path.join(s.tmp, f"{cid}.env")
        with open(senv, "w") as fh:
            fh.write(env + "FLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n")
        fconf = {"cniVersion": "1.0.0", "name": f"{cid}net", "type": "flannel", "subnetFile": senv,
                 "dataDir": s.flannel_dir, "delegate": {"isDefaultGateway": True, "bridge": f"cni{cid}"},
                 "ipam": {"dataDir": s.data_dir}}
        if s.kind == "ref":
            dconf = flannel.delegate_config(fconf, flannel.load_subnet_env(senv))
            step(f"{name}-add", "bridge", "ADD", dconf, cid, g, ifname)
            step(f"{name}-del", "bridge", "DEL", dconf, cid, g, ifname)
        else:
            step(f"{name}-add", "flannel", "ADD", fconf, cid, g, ifname)
            with open(os.path.join(s.flannel_dir, cid), "rb") as fh:
                out[f"{name}-saved"] = (Call(0, fh.read().decode(), ""), {})
            step(f"{name}-del", "flannel", "DEL", fconf, cid, g, ifname)
    return out


@pytest.fixture(scope="module")
def runs() -> Iterator[tuple[Side, dict[str, Any], Side, dict[str, Any]]]:
    ref, pod = Side("ref"), Side("podnet")
    try:
        yield ref, scenario(ref), pod, scenario(pod)
    finally:
        ref.close()
        pod.close()


def _step_names() -> list[str]:
    # the order of the scenario, without running it: parse it from the source of scenario()
    import inspect
    import re

    src = inspect.getsource(scenario)
    names = re.findall(r'step\(f?"([^"]+)"', src)
    loop_steps = [n for n in names if n.startswith("{name}")]
    out: list[str] = []
    for n in names:
        if n in out:
            continue
        if n == "50-add-hairpin-mtu-defaultgw":
            out += [f"40-conflist-{x}{y}" for x in ("add", "check", "del", "del-again") for y in ("", "-chain")]
        if "{v}" in n:
            out += [n.replace("{v}", v) for v in ("0.4.0", "0.3.1", "0.2.0")]
        elif n.startswith("{name}"):  # the FLANNEL_FAMILY_CASES loop: each case's steps in turn, once
            if f"{FLANNEL_FAMILY_CASES[0][0]}-add" not in out:
                out += [x.replace("{name}", case[0]) for case in FLANNEL_FAMILY_CASES for x in dict.fromkeys(loop_steps)]
        else:
            out.append(n)
    return out


STEPS = _step_names()


def _filter_nat(nat: list[str], cids: set[str]) -> list[str]:
    from podnet.cni.ipmasq import chain_name

    chains = {chain_name(NET, c) for c in cids}
    return [ln for ln in nat if not any(ch in ln for ch in chains) and not any(f'id: \\"{c}\\"' in ln for c in cids)]


def _after(step: str, ref_step: str) -> bool:
    order = STEPS
    return step in order and ref_step in order and order.index(step) >= order.index(ref_step)


@pytest.mark.parametrize("step", STEPS)
def test_step_matches_reference(runs: Any, step: str) -> None:
    ref_side, ref, pod_side, pod = runs
    (rc_ref, snap_ref), (rc_pod, snap_pod) = ref[step], pod[step]
    dev = DEVIATIONS.get(step, {})
    # exit code
    assert (rc_ref.rc, rc_pod.rc) == dev.get("rc", (rc_ref.rc, rc_ref.rc)), (rc_ref.stdout, rc_pod.stdout)
    # stdout
    jr, jp = rc_ref.json, rc_pod.json
    if dev.get("rc", (None, None))[1] == 0:
        assert rc_pod.stdout == ""
    elif dev.get("version"):
        assert jp["supportedVersions"] == jr["supportedVersions"] + ["1.1.0"] and jp["cniVersion"] == "1.1.0"
    elif jr is None:
        assert jp is None, rc_pod.stdout
    elif "code" in jr:
        assert jp is not None and "code" in jp, rc_pod.stdout
        assert (jr["code"], jp["code"]) == dev.get("code", (jr["code"], jr["code"]))
        if not dev.get("msg"):
            ref_msg = normalize_text(jr["msg"].replace(ref_side.cni_path, "<CNI_PATH>"), ref_side, macs=True)
            pod_msg = normalize_text(jp["msg"].replace(" ".join(pod_side.cni_path.split(":")), "<CNI_PATH>"),
                                     pod_side, macs=True)
            assert pod_msg == ref_msg
            if not dev.get("details"):
                assert jp.get("details", "") == jr.get("details", "")
            else:
                assert "plugin supports" in jp["details"] and "1.1.0" in jp["details"]
        assert set(jp) <= {"cniVersion", "code", "msg", "details"}
    elif isinstance(jr, list):  # a conflist chain: every plugin's output
        assert [normalize_result(x, pod_side) for x in jp] == [normalize_result(x, ref_side) for x in jr]
    else:
        assert normalize_result(jp, pod_side) == normalize_result(jr, ref_side)
    # kernel and disk state
    sr, sp = json.loads(normalize_text(json.dumps(snap_ref), ref_side)), json.loads(
        normalize_text(json.dumps(snap_pod), pod_side))
    if not sr:
        return
    leaked = {cid for cid, first, _clean in MASQ_LEAKS if _after(step, first)}
    for cid, _first, clean in MASQ_LEAKS:
        if _after(step, clean):
            assert not any(f'id: \\"{cid}\\"' in ln for ln in sp["nat"]), f"podnet left rules of {cid}: {sp['nat']}"
    sr["nat"], sp["nat"] = _filter_nat(sr["nat"], leaked), _filter_nat(sp["nat"], leaked)
    if dev.get("no_leftovers"):
        # podnet's failed ADD must leave the world exactly as the step before left it
        key = dev["no_leftovers"]
        prev = json.loads(normalize_text(json.dumps(pod[STEPS[STEPS.index(step) - 1]][1]), pod_side))
        for k in ("containers", "ports", "host_veths", "sysctls", "nat", "nat6", "host_addrs"):
            assert sp[k] == prev[k], k
        assert key in sp["containers"]
        for k in ("containers", "ports", "host_veths", "sysctls"):
            sr.pop(k)
            sp.pop(k)
    for key in sorted(set(sr) | set(sp)):
        assert (key, sp.get(key)) == (key, sr.get(key))


def test_flannel_saved_delegate_is_flannels_json(runs: Any) -> None:
    """The file DEL replays is the delegate config flannel writes: Go map JSON, keys sorted."""
    _ref_side, _ref, pod_side, pod = runs
    saved = json.loads(pod["60-flannel-saved"][0].stdout)
    assert pod["60-flannel-saved"][0].stdout == json.dumps(saved, sort_keys=True, separators=(",", ":"))
    assert saved["ipam"]["ranges"] == [[{"subnet": "10.1.17.0/24"}]]
    assert saved["ipam"]["routes"] == [{"dst": "10.1.0.0/16"}]
    assert (saved["type"], saved["ipMasq"], saved["mtu"], saved["isGateway"], saved["name"]) == (
        "bridge", False, 1450, True, "cbr0")
    assert saved["hairpinMode"] is True and saved["isDefaultGateway"] is True and saved["cniVersion"] == "0.3.1"
    assert not os.path.exists(os.path.join(pod_side.flannel_dir, "flc")), "DEL must remove the saved config"


@pytest.mark.parametrize(("name", "ranges", "routes"), [
    ("61-flannel-dualstack", [[{"subnet": "10.2.17.0/24"}], [{"subnet": "fd00:10:2:11::/64"}]],
     [{"dst": "10.2.0.0/16"}, {"dst": "fd00:10:2::/56"}]),
    ("62-flannel-ipv6only", [[{"subnet": "fd00:10:3:11::/64"}]], [{"dst": "fd00:10:3::/56"}]),
])
def test_flannel_passes_both_families_to_the_delegate(runs: Any, name: str, ranges: list[Any],
                                                      routes: list[Any]) -> None:
    """The subnet.env's IPv6 lines become the delegate's second range and route (flannel's getDelegateIPAM);
    the result carries an address of each family (compared with the reference bridge step by step above)."""
    _ref_side, _ref, _pod_side, pod = runs
    saved = json.loads(pod[f"{name}-saved"][0].stdout)
    assert saved["ipam"]["ranges"] == ranges and saved["ipam"]["routes"] == routes
    result = pod[f"{name}-add"][0].json
    got = sorted(ip["address"].split("/")[0].count(":") > 0 for ip in result["ips"])
    assert got == sorted(len(r) > 0 and ":" in r[0]["subnet"] for r in ranges)
