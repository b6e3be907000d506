"""host-local allocation order, config validation and the on-disk store (in a temp dir, no kernel)."""

from __future__ import annotations

import ipaddress
import json
import os
import stat

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from podnet.cni import host_local as hl
from podnet.cni import spec
from podnet.cni.spec import CniError, Request


def req(tmp: str, ipam: dict, cid: str = "c1", ifname: str = "eth0", args: str = "", cmd: str = "ADD",
        version: str = "1.0.0", **extra: object) -> Request:
    conf = {"cniVersion": version, "name": "net", "ipam": {"type": "host-local", "dataDir": tmp, **ipam}, **extra}
    env = {"CNI_COMMAND": cmd, "CNI_CONTAINERID": cid, "CNI_IFNAME": ifname, "CNI_ARGS": args, "CNI_PATH": "/x"}
    return Request(env, json.dumps(conf).encode(), conf, version)


def ips(res: dict) -> list[str]:
    return [i["address"] for i in res["ips"]]


def test_round_robin_after_release_like_reference(tmp_path: object) -> None:
    """c1 .2, c2 .3, DEL c1, c3 gets .4 not .2, the next .5 (reference steps 10-16b)."""
    t = str(tmp_path)
    ipam = {"subnet": "10.244.1.0/24"}
    assert ips(hl.add(req(t, ipam, "c1"))) == ["10.244.1.2/24"]
    assert ips(hl.add(req(t, ipam, "c2"))) == ["10.244.1.3/24"]
    hl.delete(req(t, ipam, "c1", cmd="DEL"))
    assert ips(hl.add(req(t, ipam, "c3"))) == ["10.244.1.4/24"]
    assert ips(hl.add(req(t, ipam, "c3", "eth1"))) == ["10.244.1.5/24"]
    d = os.path.join(t, "net")
    with open(os.path.join(d, "10.244.1.4"), "rb") as f:
        assert f.read() == b"c3\r\neth0"
    with open(os.path.join(d, "last_reserved_ip.0"), "rb") as f:
        assert f.read() == b"10.244.1.5"
    assert stat.S_IMODE(os.stat(os.path.join(d, "10.244.1.4")).st_mode) == 0o644 & ~_umask()
    assert stat.S_IMODE(os.stat(os.path.join(d, "lock")).st_mode) == 0o750 & ~_umask()


def _umask() -> int:
    m = os.umask(0)
    os.umask(m)
    return m


def test_wraps_skips_gateway_and_exhausts(tmp_path: object) -> None:
    t = str(tmp_path)
    ipam = {"ranges": [[{"subnet": "10.9.0.0/29", "gateway": "10.9.0.3"}]]}
    got = [ips(hl.add(req(t, ipam, f"c{i}")))[0] for i in range(5)]
    assert got == ["10.9.0.1/29", "10.9.0.2/29", "10.9.0.4/29", "10.9.0.5/29", "10.9.0.6/29"]
    with pytest.raises(CniError) as e:
        hl.add(req(t, ipam, "c9"))
    assert e.value.msg == "failed to allocate for range 0: no IP addresses available in range set: 10.9.0.1-10.9.0.6"
    hl.delete(req(t, ipam, "c1", cmd="DEL"))  # c1 held .2: round-robin wraps past .1 (taken) to it
    assert ips(hl.add(req(t, ipam, "c10"))) == ["10.9.0.2/29"]


def test_multiple_ranges_in_a_set_and_two_families(tmp_path: object) -> None:
    t = str(tmp_path)
    ipam = {"ranges": [[{"subnet": "10.1.0.0/30"}, {"subnet": "10.2.0.0/30"}], [{"subnet": "fd00::/120"}]]}
    r1 = hl.add(req(t, ipam, "a"))
    r2 = hl.add(req(t, ipam, "b"))
    assert ips(r1) == ["10.1.0.2/30", "fd00::2/120"]
    assert ips(r2) == ["10.2.0.2/30", "fd00::3/120"]
    assert r1["ips"][1]["gateway"] == "fd00::1"


def test_requested_ip_and_duplicates(tmp_path: object) -> None:
    t = str(tmp_path)
    ipam = {"subnet": "10.5.0.0/24"}
    assert ips(hl.add(req(t, ipam, "a", args="IP=10.5.0.77"))) == ["10.5.0.77/24"]
    with pytest.raises(CniError) as e:
        hl.add(req(t, ipam, "b", args="IP=10.5.0.77"))
    assert "10.5.0.77 is not available" in e.value.msg
    with pytest.raises(CniError) as e:
        hl.add(req(t, ipam, "c", args="IP=10.5.0.1"))
    assert "is subnet's gateway" in e.value.msg
    with pytest.raises(CniError) as e:
        hl.add(req(t, ipam, "a"))
    assert e.value.msg.endswith("10.5.0.77 has been allocated to a, duplicate allocation is not allowed")
    with pytest.raises(CniError) as e:
        hl.add(req(t, ipam, "d", args="IP=10.6.0.1"))
    assert e.value.msg == "failed to allocate all requested IPs: 10.6.0.1"
    assert not [f for f in os.listdir(os.path.join(t, "net")) if f.startswith("10.") and f != "10.5.0.77"]


@pytest.mark.parametrize("ipam,msg", [
    ({"subnet": "10.0.0.0/31"}, "invalid range set 0: Network 10.0.0.0/31 too small to allocate from"),
    ({"subnet": "10.0.0.5/24"}, "invalid range set 0: Network has host bits set. For a subnet mask of length 24 "
                                "the network address is 10.0.0.0"),
    ({"ranges": [[{"subnet": "10.0.0.0/24", "rangeStart": "10.0.1.1"}]]},
     "invalid range set 0: RangeStart 10.0.1.1 not in network 10.0.0.0/24"),
    ({"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.0.0.0/25"}]]}, "range set 0 overlaps with 1"),
    ({"ranges": [[{"subnet": "10.0.0.0/24"}, {"subnet": "fd00::/64"}]]}, "invalid range set 0: mixed address families"),
    ({}, "no IP ranges specified"),
    # found by the property-based differential test: the start is checked against a given end first
    ({"ranges": [[{"subnet": "10.60.0.0/26", "rangeStart": "10.60.0.1", "rangeEnd": "10.60.0.0"}]]},
     "invalid range set 0: RangeStart 10.60.0.1 not in network 10.60.0.0/26"),
    ({"subnet": "nope"}, "invalid CIDR address: nope"),
])
def test_config_errors(tmp_path: object, ipam: dict, msg: str) -> None:
    with pytest.raises(CniError) as e:
        hl.load_config(req(str(tmp_path), ipam))
    assert (e.value.code, e.value.msg) == (999, msg)


def test_old_versions_allow_one_address_per_family(tmp_path: object) -> None:
    ipam = {"ranges": [[{"subnet": "10.0.0.0/24"}], [{"subnet": "10.1.0.0/24"}]]}
    with pytest.raises(CniError):
        hl.load_config(req(str(tmp_path), ipam, version="0.2.0"))
    hl.load_config(req(str(tmp_path), ipam, version="0.3.0"))


def test_check_and_legacy_files(tmp_path: object) -> None:
    t = str(tmp_path)
    ipam = {"subnet": "10.7.0.0/24"}
    with pytest.raises(CniError):
        hl.check(req(t, ipam, "old", cmd="CHECK"))
    os.makedirs(os.path.join(t, "net"), exist_ok=True)
    with open(os.path.join(t, "net", "10.7.0.9"), "w") as f:
        f.write("old")  # a file from an old version: only the container id
    hl.check(req(t, ipam, "old", cmd="CHECK"))
    hl.delete(req(t, ipam, "old", cmd="DEL"))
    assert not os.path.exists(os.path.join(t, "net", "10.7.0.9"))


def test_routes_dns_and_old_result_shape(tmp_path: object) -> None:
    t = str(tmp_path)
    rc = os.path.join(t, "resolv.conf")
    with open(rc, "w") as f:
        f.write("nameserver 10.96.0.10\nsearch a.svc b.svc\noptions ndots:5\ndomain cluster.local\n")
    ipam = {"subnet": "10.8.0.0/24", "routes": [{"dst": "10.96.0.0/12", "gw": "10.8.0.254"}], "resolvConf": rc}
    res = hl.add(req(t, ipam, "z", version="0.2.0"))
    assert res == {"cniVersion": "0.2.0", "ip4": {"ip": "10.8.0.2/24", "gateway": "10.8.0.1",
                                                  "routes": [{"dst": "10.96.0.0/12", "gw": "10.8.0.254"}]},
                   "dns": {"nameservers": ["10.96.0.10"], "domain": "cluster.local", "search": ["a.svc", "b.svc"],
                           "options": ["ndots:5"]}}


@settings(max_examples=40, deadline=None)
@given(prefix=st.integers(24, 29), start_off=st.integers(1, 3), taken=st.sets(st.integers(0, 7), max_size=4),
       last=st.one_of(st.none(), st.integers(0, 10)))
def test_iterate_visits_each_candidate_once(prefix: int, start_off: int, taken: set[int], last: int | None) -> None:
    """Round-robin order: every usable address exactly once, never the gateway, starting after `last`."""
    net = ipaddress.ip_network(f"10.3.0.0/{prefix}")
    r = hl._canonical_range({"subnet": str(net), "rangeStart": str(net.network_address + start_off)})
    last_ip = net.network_address + last if last is not None else None
    seen = [str(ip) for ip, _r in hl._iterate([r], last_ip)]
    usable = [str(ip) for ip in net.hosts() if r.start <= ip <= r.end and ip != r.gateway]
    assert sorted(seen, key=ipaddress.ip_address) == usable and len(seen) == len(set(seen))
    if last_ip is not None and r.contains(last_ip):
        nxt = [u for u in usable if ipaddress.ip_address(u) > last_ip]
        assert seen[0] == (nxt[0] if nxt else usable[0])
    else:
        assert seen[0] == usable[0]


def test_gc_and_status(tmp_path: object) -> None:
    t = str(tmp_path)
    ipam = {"subnet": "10.4.0.0/24"}
    for cid in ("a", "b"):
        hl.add(req(t, ipam, cid))
    gc = req(t, ipam, cmd="GC", version="1.1.0", **{"cni.dev/valid-attachments": [{"containerID": "b",
                                                                                     "ifname": "eth0"}]})
    hl.gc(gc)
    assert sorted(f for f in os.listdir(os.path.join(t, "net")) if f.startswith("10.")) == ["10.4.0.3"]
    hl.status(req(t, ipam, cmd="STATUS", version="1.1.0"))
    blocker = os.path.join(t, "f")
    open(blocker, "w").close()
    bad = req(t, ipam, cmd="STATUS", version="1.1.0")
    bad.conf["ipam"]["dataDir"] = os.path.join(blocker, "x")
    with pytest.raises(CniError) as e:
        hl.status(bad)
    assert e.value.code == spec.ERR_NOT_AVAILABLE
