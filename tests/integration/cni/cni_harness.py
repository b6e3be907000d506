"""Run CNI plugins the way a runtime does, inside a throw-away "host" namespace, and snapshot what they did.

A `Side` is one complete, isolated world: a host netns (where the plugin runs, so cni0, iptables and
sysctls land there and never in the root namespace), container netns, a CNI_PATH and an IPAM data
dir. The differential suite builds one Side for the reference plugins and one for podnet's and
plays the same calls against both.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any

from podnet.net import netns

REF_BIN = "/usr/lib/cni"
VENV_BIN = os.path.dirname(sys.executable)
MAC_RE = re.compile(r"^[0-9a-f]{2}(:[0-9a-f]{2}){5}$")


def podnet_bin_dir(tmp: str) -> str:
    """A CNI_PATH dir where podnet's console scripts are installed under the reference names."""
    d = os.path.join(tmp, "bin")
    os.makedirs(d, exist_ok=True)
    for name, script in (("bridge", "podnet-bridge"), ("host-local", "podnet-host-local"),
                         ("flannel", "podnet-flannel")):
        src = os.path.join(VENV_BIN, script)
        dst = os.path.join(d, name)
        if not os.path.exists(dst):
            os.symlink(src, dst)
    return d


@dataclass
class Call:
    rc: int
    stdout: str
    stderr: str

    @property
    def json(self) -> Any:
        return json.loads(self.stdout) if self.stdout.strip() else None


@dataclass
class Side:
    """One isolated plugin world. kind: "ref" or "podnet"."""

    kind: str
    tag: str = field(default_factory=lambda: secrets.token_hex(2))
    namespaces: list[str] = field(default_factory=list)
    tmp: str = ""

    def __post_init__(self) -> None:
        self.tmp = tempfile.mkdtemp(prefix=f"pn-cni-{self.kind}-")
        self.data_dir = os.path.join(self.tmp, "ipam")
        self.flannel_dir = os.path.join(self.tmp, "flannel")
        if self.kind == "ref":
            self.cni_path = REF_BIN
        else:
            self.cni_path = podnet_bin_dir(self.tmp) + ":" + REF_BIN  # tuning etc. from the reference
        self.host = self.ns_name("h")
        self.make_ns(self.host)

    # -- namespaces ------------------------------------------------------------------------------------
    def ns_name(self, key: str) -> str:
        return f"pn-cni-{self.kind[0]}{self.tag}-{key}"

    def make_ns(self, name: str) -> str:
        if not netns.exists(name):
            netns.create(name)
            self.namespaces.append(name)
        return name

    def container(self, key: str) -> str:
        """netns path for container `key` (created on first use)."""
        return "/run/netns/" + self.make_ns(self.ns_name(key))

    def drop_ns(self, key: str) -> None:
        """Delete a container netns and wait until the kernel has destroyed its veth peers in the host
        (netns teardown is asynchronous; a snapshot taken too early would still see them)."""
        name = self.ns_name(key)
        peers = len([ln for ln in self._ipj(self.host, "link", "show") if ln.get("link_netnsid") is not None])
        in_ns = len([ln for ln in self._ipj(name, "link", "show") if ln.get("link_netnsid") is not None])
        netns.remove(name)
        if name in self.namespaces:
            self.namespaces.remove(name)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = len([ln for ln in self._ipj(self.host, "link", "show") if ln.get("link_netnsid") is not None])
            if now <= peers - in_ns:
                return
            time.sleep(0.02)

    def close(self) -> None:
        for name in reversed(self.namespaces):
            try:
                netns.remove(name)
            except OSError:
                pass
        self.namespaces.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)

    # -- calls -----------------------------------------------------------------------------------------
    def plugin_path(self, plugin: str) -> str:
        for d in self.cni_path.split(":"):
            p = os.path.join(d, plugin)
            if os.path.exists(p):
                return p
        raise FileNotFoundError(plugin)

    def call(self, plugin: str, command: str, conf: Any, *, cid: str = "", netns_path: str = "",
             ifname: str = "", extra_env: dict[str, str] | None = None, raw_stdin: bytes | None = None) -> Call:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CNI_")}
        env.pop("PYTHONDONTWRITEBYTECODE", None)
        env["CNI_COMMAND"] = command
        env["CNI_PATH"] = self.cni_path
        if cid:
            env["CNI_CONTAINERID"] = cid
        if netns_path:
            env["CNI_NETNS"] = netns_path
        if ifname:
            env["CNI_IFNAME"] = ifname
        for k, v in (extra_env or {}).items():
            if v is None:
                env.pop(k, None)
            else:
                env[k] = v
        if command == "" or (extra_env and "CNI_COMMAND" in extra_env and not extra_env["CNI_COMMAND"]):
            env.pop("CNI_COMMAND", None)
        data = raw_stdin if raw_stdin is not None else json.dumps(conf).encode()
        proc = subprocess.run(netns.exec_argv(self.host, [self.plugin_path(plugin)]), input=data, env=env,
                              capture_output=True, timeout=60, check=False)
        return Call(proc.returncode, proc.stdout.decode(), proc.stderr.decode())

    # -- state -----------------------------------------------------------------------------------------
    def _ipj(self, ns: str, *args: str) -> Any:
        out = subprocess.run(["ip", "-n", ns, "-j", *args], capture_output=True, text=True, check=False).stdout
        return json.loads(out) if out.strip() else []

    _PROBE = ("ip -j -d link show; echo @@; ip -j addr show; echo @@; ip -j route show; echo @@; "
              "ip -j -6 route show; echo @@; grep -H . /proc/sys/net/ipv4/conf/*/arp_notify "
              "/proc/sys/net/ipv6/conf/*/accept_dad /proc/sys/net/ipv6/conf/*/accept_ra 2>/dev/null; echo @@; "
              "cat /proc/sys/net/ipv4/ip_forward; echo @@; iptables -t nat -S; echo @@; ip6tables -t nat -S")

    def _probe(self, ns: str, host: bool) -> list[str]:
        """One process per namespace reads everything (a snapshot runs after every step: keep it cheap)."""
        script = self._PROBE if host else self._PROBE.split("; echo @@; cat")[0]
        out = subprocess.run(netns.exec_argv(ns, ["sh", "-c", script]), capture_output=True, text=True,
                             check=False).stdout
        return out.split("@@\n")

    def snapshot(self) -> dict[str, Any]:
        """Kernel and disk state with random values (MACs, host veth names, ifindexes) left out.
        Observed with iproute2/iptables, independently of the code under test."""
        h = self.host
        snap: dict[str, Any] = {}
        parts = self._probe(h, True)
        links, addrs_j, routes_j, routes6_j = (json.loads(x) if x.strip() else [] for x in parts[:4])
        bridges = {}
        ports = []
        names = {ln["ifindex"]: ln["ifname"] for ln in links}
        for ln in links:
            info = ln.get("linkinfo", {})
            if info.get("info_kind") == "bridge":
                bridges[ln["ifname"]] = {"mtu": ln["mtu"], "up": "UP" in ln["flags"],
                                         "promisc": ln.get("promiscuity", 0) > 0,
                                         "stp": info.get("info_data", {}).get("stp_state")}
            if info.get("info_slave_kind") == "bridge":
                sd = info.get("info_slave_data", {})
                ports.append({"master": ln.get("master"), "mtu": ln["mtu"], "kind": info.get("info_kind"),
                              "up": "UP" in ln["flags"], "hairpin": sd.get("hairpin"),
                              "learning": sd.get("learning"), "flood": sd.get("flood")})
        snap["bridges"] = bridges
        snap["ports"] = sorted(ports, key=lambda p: json.dumps(p, sort_keys=True))
        snap["host_veths"] = len([ln for ln in links if ln.get("linkinfo", {}).get("info_kind") == "veth"])
        snap["host_addrs"] = _global_addrs(addrs_j)
        snap["host_routes"] = sorted(_route_str(r, names) for r in routes_j)
        snap["host_routes6"] = sorted(_route_str(r, names) for r in routes6_j
                                      if not str(r.get("dst", "")).startswith("fe80"))
        sysctls = {h.rsplit("-", 1)[1]: _sysctls(parts[4])}
        snap["ip_forward"] = parts[5].strip()
        snap["nat"] = [ln for ln in parts[6].splitlines() if not ln.startswith("-P ")]
        snap["nat6"] = [ln for ln in parts[7].splitlines() if not ln.startswith("-P ")]
        conts = {}
        for ns in self.namespaces:
            if ns == h:
                continue
            key = ns.rsplit("-", 1)[1]
            cparts = self._probe(ns, False)
            clinks, caddrs, croutes, croutes6 = (json.loads(x) if x.strip() else [] for x in cparts[:4])
            cnames = {ln["ifindex"]: ln["ifname"] for ln in clinks}
            conts[key] = {
                "links": sorted(f"{ln['ifname']} mtu={ln['mtu']} up={'UP' in ln['flags']} "
                                f"kind={ln.get('linkinfo', {}).get('info_kind', '')}" for ln in clinks),
                "addrs": _global_addrs(caddrs),
                "routes": sorted(_route_str(r, cnames) for r in croutes),
                "routes6": sorted(_route_str(r, cnames) for r in croutes6
                                  if not str(r.get("dst", "")).startswith(("fe80", "multicast"))),
            }
            sysctls[key] = _sysctls(cparts[4] if len(cparts) > 4 else "")
        snap["containers"] = conts
        snap["sysctls"] = sysctls
        snap["store"] = self.store()
        return snap

    def store(self) -> dict[str, dict[str, Any]]:
        out: dict[str, dict[str, Any]] = {}
        if not os.path.isdir(self.data_dir):
            return out
        for net in sorted(os.listdir(self.data_dir)):
            d = os.path.join(self.data_dir, net)
            files = {}
            for name in sorted(os.listdir(d)):
                p = os.path.join(d, name)
                with open(p, "rb") as f:
                    files[name] = (oct(os.stat(p).st_mode & 0o777), f.read().decode())
            out[net] = files
        return out


def _global_addrs(addrs_j: list[dict[str, Any]]) -> list[str]:
    out = []
    for a in addrs_j:
        for ai in a.get("addr_info", []):
            if ai.get("scope") == "global":
                out.append(f"{a['ifname']} {ai['local']}/{ai['prefixlen']} brd={ai.get('broadcast', '')}")
    return sorted(out)


def _sysctls(text: str) -> dict[str, Any]:
    """Per-interface sysctls the plugins set (arp_notify, accept_dad, accept_ra); veth names folded."""
    vals: dict[str, Any] = {}
    for line in text.splitlines():
        path, _, value = line.partition(":")
        parts = path.split("/")
        if len(parts) < 2:
            continue
        ifname, key = parts[-2], parts[-1]
        if ifname in ("all", "default", "lo"):
            continue
        if ifname.startswith("veth"):
            vals.setdefault(f"veth*/{key}", []).append(value)
        else:
            vals[f"{ifname}/{key}"] = value
    return {k: sorted(v) if isinstance(v, list) else v for k, v in sorted(vals.items())}


def _route_str(r: dict[str, Any], names: dict[int, str]) -> str:
    return " ".join(str(x) for x in (r.get("dst"), r.get("gateway", "-"), r.get("dev", "-"),
                                      r.get("protocol", "boot"), r.get("scope", "global"), r.get("prefsrc", "-")))


def normalize_result(obj: Any, side: Side) -> Any:
    """Replace the values the spec lets differ: MACs, the host veth name, side-specific netns names."""
    if obj is None:
        return None
    text = json.dumps(obj).replace(f"pn-cni-{side.kind[0]}{side.tag}-", "pn-cni-SIDE-")
    obj = json.loads(text)
    for i, intf in enumerate(obj.get("interfaces", []) if isinstance(obj, dict) else []):
        if "mac" in intf and MAC_RE.match(intf["mac"]):
            intf["mac"] = "<MAC>"
        if i == 1 and intf.get("name", "").startswith("veth"):
            intf["name"] = "<VETH>"
    return obj


_MAC_IN_TEXT = re.compile(r"\b[0-9a-f]{2}(:[0-9a-f]{2}){5}\b")


def normalize_text(text: str, side: Side, macs: bool = False) -> str:
    if macs:
        text = _MAC_IN_TEXT.sub(lambda m: m.group(0) if m.group(0).startswith("02:00:00") else "<MAC>", text)
    return text.replace(f"pn-cni-{side.kind[0]}{side.tag}-", "pn-cni-SIDE-").replace(side.tmp, "<TMP>")
