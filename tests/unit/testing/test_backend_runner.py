"""The JSON-lines runner answers every request, including wrong ones, with one JSON line."""

from __future__ import annotations

import io
import json

from podnet.testing.backend_runner import lease_from_json, serve


def test_requests_before_init_and_unknown_ops_get_errors():
    out = io.StringIO()
    serve(['{"op": "add", "lease": {}}', "", '{"op": "close"}'], out)
    replies = [json.loads(x) for x in out.getvalue().splitlines()]
    assert [r["ok"] for r in replies] == [False, False]
    assert "before init" in replies[0]["error"]


def test_lease_from_json():
    lease = lease_from_json({"subnet": "10.244.2.0/24", "public_ip": "192.168.77.2", "backend_type": "vxlan",
                             "backend_data": {"VNI": 1, "VtepMAC": "aa:bb:cc:dd:ee:ff"}})
    assert (str(lease.subnet), str(lease.public_ip), lease.backend_data["VNI"]) == ("10.244.2.0/24", "192.168.77.2", 1)
