"""`overlay config set` refuses what the overlay daemon refuses (one check, netconf.check_supported):
a config that is stored and then silently ignored must not exist."""

from __future__ import annotations

import pytest

from podnet.errors import ValidationError
from podnet.overlay import netconf
from podnet.overlay.daemon import OverlayDaemon
from podnet.store import keys
from podnet.store.sqlite import SqliteStore


@pytest.mark.parametrize("data,field", [
    # no Backend = udp (flannel's quirk), and flannel's udp backend is IPv4 only
    (b'{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48"}', "EnableIPv6"),
    (b'{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/48", "Backend": {"Type": "udp"}}',
     "EnableIPv6"),
    (b'{"Network": "10.244.0.0/16", "EnableNFTables": true}', "EnableNFTables"),
])
def test_config_set_refuses_what_the_daemon_refuses(tmp_path: object, data: bytes, field: str) -> None:
    store = SqliteStore(f"sqlite://{tmp_path}/s.db")
    try:
        with pytest.raises(ValidationError) as saved:
            netconf.save_netconf(store, data)
        assert store.get(keys.NETWORK_CONFIG) is None
        with pytest.raises(ValidationError) as daemon:
            OverlayDaemon.check_supported(netconf.parse_netconf(data))
        assert [p.field for p in saved.value.problems] == [p.field for p in daemon.value.problems]
        assert field in [p.field for p in saved.value.problems]
    finally:
        store.close()


@pytest.mark.parametrize("data", [
    b'{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "IPv6SubnetLen": 64,'
    b' "Backend": {"Type": "vxlan"}}',
    b'{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00:10:244::/56", "Backend": {"Type": "host-gw"}}',
])
def test_dual_stack_and_ipv6_only_configs_are_stored(tmp_path: object, data: bytes) -> None:
    """The interim IPv6 refusals are gone: vxlan and host-gw run IPv6, as flannel's do."""
    store = SqliteStore(f"sqlite://{tmp_path}/s.db")
    try:
        conf = netconf.save_netconf(store, data)
        OverlayDaemon.check_supported(conf)
        kv = store.get(keys.NETWORK_CONFIG)
        assert kv is not None and kv.value == data
        assert conf.enable_ipv6 and conf.ipv6_subnet_len == 64
    finally:
        store.close()


def test_udp_with_ipv6_names_the_field_and_the_way_out() -> None:
    conf = netconf.parse_netconf(b'{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48",'
                                 b' "Backend": {"Type": "udp"}}')
    with pytest.raises(ValidationError) as e:
        OverlayDaemon.check_supported(conf)
    [problem] = e.value.problems
    assert problem.field == "EnableIPv6" and "udp backend is IPv4 only" in problem.reason and "vxlan" in problem.reason
