"""kube-proxy's metric names (the healthz rule is test_healthcheck.py's)."""

from __future__ import annotations

import pytest

from podnet.proxy.metrics import ProxyMetrics, split_hostport


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


@pytest.mark.parametrize("text, want", [
    ("127.0.0.1:10249", ("127.0.0.1", 10249)),
    (":10256", ("0.0.0.0", 10256)),
    ("0.0.0.0", ("0.0.0.0", 10249)),
    ("[::1]:9", ("::1", 9)),
])
def test_split_hostport(text: str, want: tuple[str, int]) -> None:
    assert split_hostport(text, 10249) == want
