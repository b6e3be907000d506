"""Masquerade chain naming must equal the reference's (operators grep for these names)."""

from __future__ import annotations

from podnet.cni import ipmasq


def test_chain_names_from_reference_outputs() -> None:
    # 10-add-c1/state/iptables-nat.txt and 16c-del-c3-eth1/stdout
    assert ipmasq.chain_name("refnet", "cnirefc1") == "CNI-3204ef0ee2d4d567404effe2"
    assert ipmasq.chain_name("refnet", "cnirefc2") == "CNI-a6c0bb26c389f810c3554ea6"
    assert ipmasq.chain_name("refnet", "cnirefc3") == "CNI-aee664494c89feb84e521612"


def test_rules_text_matches_iptables_save() -> None:
    import ipaddress

    post, acc, masq = ipmasq._rules(ipaddress.ip_interface("10.244.1.2/24"), "CNI-x",
                                    ipmasq.comment("refnet", "cnirefc1"))
    c = '"name: \\"refnet\\" id: \\"cnirefc1\\""'
    assert post == f"-A POSTROUTING -s 10.244.1.2/32 -m comment --comment {c} -j CNI-x"
    assert acc == f"-A CNI-x -d 10.244.1.0/24 -m comment --comment {c} -j ACCEPT"
    assert masq == f"-A CNI-x ! -d 224.0.0.0/4 -m comment --comment {c} -j MASQUERADE"
    post6, _acc6, masq6 = ipmasq._rules(ipaddress.ip_interface("fd00::5/64"), "CNI-x", "c")
    assert post6.startswith("-A POSTROUTING -s fd00::5/128 ") and "! -d ff00::/8" in masq6
