"""`podnet overlay config|leases|revoke` end to end in-process, on a sqlite store in tmp_path."""

from __future__ import annotations

import json
import sys

import pytest

from podnet.cli.main import main
from podnet.store import keys
from podnet.store.sqlite import SqliteStore


def podnet(monkeypatch, capsys, store_url: str, *args: str) -> tuple[int, str, str]:  # type: ignore[no-untyped-def]
    monkeypatch.setattr(sys, "argv", ["podnet", "--store", store_url, *args])
    code = 0
    try:
        main()
    except SystemExit as e:
        code = int(e.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def url(tmp_path) -> str:  # type: ignore[no-untyped-def]
    return f"sqlite://{tmp_path}/state.db"


def test_config_set_get_round_trip(monkeypatch, capsys, url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "net-conf.json"
    f.write_text('{"network": "10.3.0.0/16", "Backend": {"Type": "host-gw"}}')
    code, out, _ = podnet(monkeypatch, capsys, url, "overlay", "config", "set", "-f", str(f))
    assert code == 0 and "10.3.0.0/16" in out and "host-gw" in out
    code, out, _ = podnet(monkeypatch, capsys, url, "overlay", "config", "get")
    assert code == 0 and out == f.read_text() + "\n"  # stored byte-identical, as flannel's registry does
    code, out, _ = podnet(monkeypatch, capsys, url, "overlay", "config", "get", "--effective")
    eff = json.loads(out)
    assert (eff["SubnetLen"], eff["SubnetMin"], eff["SubnetMax"]) == (24, "10.3.1.0", "10.3.255.0")


def test_bad_config_is_refused_and_not_stored(monkeypatch, capsys, url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    f = tmp_path / "net-conf.json"
    f.write_text('{"Network": "10.3.0.0/16", "SubnetLen": 17, "SubnetMin": "10.9.0.0", "Backend": {"Type": "wat"}}')
    code, _, err = podnet(monkeypatch, capsys, url, "overlay", "config", "set", "-f", str(f))
    assert code == 1
    assert "error: SubnetLen: 17: network 10.3.0.0/16 must be able to accommodate at least four subnets" in err
    assert "error: Backend.Type: 'wat': unknown backend type" in err
    with SqliteStore(url) as store:
        assert store.get(keys.NETWORK_CONFIG) is None
    code, _, err = podnet(monkeypatch, capsys, url, "overlay", "config", "get")
    assert code == 1 and "network config not found" in err
    code, _, err = podnet(monkeypatch, capsys, url, "overlay", "config", "set", "-f", str(tmp_path / "missing.json"))
    assert code == 1 and "--filename" in err


def test_leases_list_and_revoke(monkeypatch, capsys, url) -> None:  # type: ignore[no-untyped-def]
    with SqliteStore(url) as store:
        lease = store.grant(60)
        store.put(keys.subnet_lease("10.244.7.0/24"),
                  b'{"PublicIP":"10.0.0.7","PublicIPv6":null,"BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:07"}}',
                  lease=lease)
        store.put(keys.subnet_lease("10.244.8.0/24"), b'{"PublicIP":"10.0.0.8","PublicIPv6":null}')
    code, out, _ = podnet(monkeypatch, capsys, url, "overlay", "leases", "-o", "json")
    rows = {r["subnet"]: r for r in json.loads(out)}
    assert code == 0 and set(rows) == {"10.244.7.0/24", "10.244.8.0/24"}
    assert rows["10.244.7.0/24"]["backend_data"]["VtepMAC"] == "aa:bb:cc:dd:ee:07"
    assert 50 <= rows["10.244.7.0/24"]["expires_in"] <= 60
    assert rows["10.244.8.0/24"]["reservation"] is True
    code, out, _ = podnet(monkeypatch, capsys, url, "overlay", "leases")
    assert code == 0 and "10.244.7.0/24" in out and "reservation" in out
    code, out, _ = podnet(monkeypatch, capsys, url, "overlay", "revoke", "10.244.7.0/24")
    assert code == 0
    code, _, err = podnet(monkeypatch, capsys, url, "overlay", "revoke", "10.244.7.0/24")
    assert code == 1 and "no lease for 10.244.7.0/24" in err
    with SqliteStore(url) as store:
        assert [kv.key for kv in store.list(keys.SUBNETS_PREFIX).items] == [keys.subnet_lease("10.244.8.0/24")]


def test_leases_table_piped_to_a_file_keeps_each_row_on_one_line(url, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Not a terminal: rich would fold the table at 80 columns; a file or grep gets whole rows."""
    import os
    import subprocess

    with SqliteStore(url) as store:
        store.put(keys.subnet_lease("10.244.7.0/24"), b'{"PublicIP":"192.168.177.107","BackendType":"vxlan",'
                  b'"BackendData":{"VNI":1,"VtepMAC":"aa:bb:cc:dd:ee:07"}}')
    env = {k: v for k, v in os.environ.items() if k != "COLUMNS"}
    with open(tmp_path / "out.txt", "w") as f:
        r = subprocess.run([sys.executable, "-m", "podnet.cli.main", "--store", url, "overlay", "leases"],
                           stdout=f, stderr=subprocess.PIPE, text=True, env=env, timeout=60)
    assert r.returncode == 0, r.stderr
    (row,) = [line for line in (tmp_path / "out.txt").read_text().splitlines() if "10.244.7.0/24" in line]
    assert len(row) > 80 and '{"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:07"}' in row and "never (reservation)" in row
