"""kube-proxy's metric names and the healthz rule."""

from __future__ import annotations

import time

import pytest

from podnet.proxy.metrics import Health, ProxyMetrics, split_hostport


def test_metric_names_are_kube_proxys() -> None:
    m = ProxyMetrics()
    m.sync_duration.observe(0.2)
    m.last_sync.set(1.0)
    m.programming.observe(0.3)
    m.iptables_total.labels("nat").set(12)
    text = m.render().decode()
    for name in ("kubeproxy_sync_proxy_rules_duration_seconds_bucket", "kubeproxy_sync_proxy_rules_last_timestamp_seconds",
                 "kubeproxy_network_programming_duration_seconds_bucket",
                 'kubeproxy_sync_proxy_rules_iptables_total{table="nat"} 12.0'):
        assert name in text


def test_health_is_bad_only_when_a_change_waits_too_long() -> None:
    h = Health(sync_period=0.05)
    assert h.status()[0] is False  # never synced
    h.updated()
    assert h.status()[0] is True
    h.queued()
    assert h.status()[0] is True
    time.sleep(0.12)
    ok, body = h.status()
    assert ok is False and body["lastUpdated"].endswith("Z")
    h.updated()
    assert h.status()[0] is True


@pytest.mark.parametrize("text, want", [
    ("127.0.0.1:10249", ("127.0.0.1", 10249)),
    (":10256", ("0.0.0.0", 10256)),
    ("0.0.0.0", ("0.0.0.0", 10249)),
    ("[::1]:9", ("::1", 9)),
])
def test_split_hostport(text: str, want: tuple[str, int]) -> None:
    assert split_hostport(text, 10249) == want
