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
    (b'{"Network": "10.244.0.0/16", "EnableIPv6": true, "IPv6Network": "fd00::/48"}', "EnableIPv6"),
    (b'{"EnableIPv4": false, "EnableIPv6": true, "IPv6Network": "fd00::/48"}', "EnableIPv4"),
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
