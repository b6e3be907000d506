"""flannel meta plugin: subnet.env parsing and the delegate config, against flannel-cni.md's cases."""

from __future__ import annotations

import json

import pytest

from podnet.cni import flannel
from podnet.cni.spec import CniError


def write_env(tmp_path: object, text: str) -> str:
    p = f"{tmp_path}/subnet.env"
    with open(p, "w") as f:
        f.write(text)
    return p


def test_delegate_matches_flannels_own_test_case(tmp_path: object) -> None:
    """flannel_linux_test.go: 10.1.0.0/16, 10.1.17.1/24, MTU 1472, IPMASQ true -> this exact delegate."""
    env = flannel.load_subnet_env(write_env(tmp_path, "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.17.1/24\n"
                                                      "FLANNEL_MTU=1472\nFLANNEL_IPMASQ=true\n"))
    dlg = flannel.delegate_config({"name": "cni-flannel", "type": "flannel"}, env)
    expected = ('{"ipMasq":false,"ipam":{"ranges":[[{"subnet":"10.1.17.0/24"}]],"routes":[{"dst":"10.1.0.0/16"}],'
                '"type":"host-local"},"isGateway":true,"mtu":1472,"name":"cni-flannel","type":"bridge"}')
    assert flannel._go_map_json(dlg).decode() == expected


def test_k8s_manifest_delegate_and_dual_stack(tmp_path: object) -> None:
    env = flannel.load_subnet_env(write_env(tmp_path, "FLANNEL_NETWORK=10.244.0.0/16,10.244.0.0/16\n"
                                                      "FLANNEL_SUBNET=10.244.1.1/24\nFLANNEL_IPV6_NETWORK=fd00::/56\n"
                                                      "FLANNEL_IPV6_SUBNET=fd00:0:0:1::1/64\nFLANNEL_MTU=1450\n"
                                                      "FLANNEL_IPMASQ=false\n"))
    conf = {"name": "cbr0", "cniVersion": "0.3.1", "type": "flannel",
            "delegate": {"hairpinMode": True, "isDefaultGateway": True}, "runtimeConfig": {"portMappings": []},
            "ipam": {"routes": [{"dst": "192.168.0.0/16"}], "dataDir": "/x"}}
    d = flannel.delegate_config(conf, env)
    assert d["ipMasq"] is True and d["mtu"] == 1450 and d["cniVersion"] == "0.3.1"
    assert d["hairpinMode"] and d["isDefaultGateway"] and d["runtimeConfig"] == {"portMappings": []}
    assert d["ipam"] == {"routes": [{"dst": "192.168.0.0/16"}, {"dst": "10.244.0.0/16"}, {"dst": "fd00::/56"}],
                         "dataDir": "/x", "type": "host-local",
                         "ranges": [[{"subnet": "10.244.1.0/24"}], [{"subnet": "fd00:0:0:1::/64"}]]}


def test_missing_keys_named_like_flannel(tmp_path: object) -> None:
    p = write_env(tmp_path, "FLANNEL_MTU=1450\n")
    with pytest.raises(CniError) as e:
        flannel.load_subnet_env(p)
    assert e.value.msg == (f"{p} is missing FLANNEL_NETWORK, FLANNEL_IPV6_NETWORK, FLANNEL_SUBNET, "
                           "FLANNEL_IPV6_SUBNET, FLANNEL_IPMASQ")


@pytest.mark.parametrize("delegate,msg", [({"name": "x"}, "must not have 'name'"), ({"ipam": {}}, "must not have 'ipam'"),
                                          ({"type": 5}, "(string) 'type'")])
def test_delegate_validation(tmp_path: object, delegate: dict, msg: str) -> None:
    env = flannel.load_subnet_env(write_env(tmp_path, "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.1.1/24\n"
                                                      "FLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n"))
    with pytest.raises(CniError) as e:
        flannel.delegate_config({"name": "n", "delegate": delegate}, env)
    assert msg in e.value.msg


def test_explicit_delegate_values_win(tmp_path: object) -> None:
    env = flannel.load_subnet_env(write_env(tmp_path, "FLANNEL_NETWORK=10.1.0.0/16\nFLANNEL_SUBNET=10.1.1.1/24\n"
                                                      "FLANNEL_MTU=1400\nFLANNEL_IPMASQ=true\n"))
    d = flannel.delegate_config({"name": "n", "delegate": {"type": "ptp", "mtu": 1300, "ipMasq": True}}, env)
    assert (d["type"], d["mtu"], d["ipMasq"]) == ("ptp", 1300, True) and "isGateway" not in d
    json.dumps(d)
