"""`podnet proxy run` in a node namespace: packets really reach endpoints, for every proxy mode.

The scenarios share one cluster (conftest.Env) and run in file order; the last ones kill the proxy.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest

from tests.integration.proxy.pxcluster import (
    CLIENT_IP,
    EP1,
    EP2,
    NODE_IP,
    NODE_POD_GW,
    PROBE,
    Env,
    endpoint_slice,
    service,
    sh,
)

pytestmark = pytest.mark.integration


def test_cluster_ip_spreads_connections_over_both_endpoints(env: Env) -> None:
    counts = env.probe(env.client, "tcp", "10.96.0.10", "80", "--count", "200")
    assert counts["errors"] == 0
    # P(one side < 50 of 200 at p=0.5) is about 1e-13
    assert counts.get("ep1", 0) >= 50 and counts.get("ep2", 0) >= 50, counts


def test_node_port_reachable_from_another_namespace(env: Env) -> None:
    counts = env.probe(env.client, "tcp", NODE_IP, "30080", "--count", "30")
    assert counts["errors"] == 0
    assert counts.get("ep1", 0) + counts.get("ep2", 0) == 30 and len(counts) == 3, counts


def test_node_port_is_busy_for_other_processes(env: Env) -> None:
    for ip in (NODE_IP, "0.0.0.0"):
        assert env.probe(env.node, "bind", ip, "30080") == {"result": "in-use"}, ip
    assert env.probe(env.node, "bind", NODE_IP, "30081") == {"result": "ok"}  # a port no service uses


def test_service_without_endpoints_is_refused_at_once(env: Env) -> None:
    res = env.probe(env.client, "connect", "10.96.0.30", "80", "--timeout", "5")
    assert res["result"] == "refused", res
    assert res["seconds"] < 1.0, res


def test_client_ip_affinity_keeps_a_client_on_one_endpoint(env: Env) -> None:
    counts = env.probe(env.client, "tcp", "10.96.0.20", "80", "--count", "30")
    assert counts["errors"] == 0
    hits = {k: v for k, v in counts.items() if k != "errors"}
    assert len(hits) == 1 and sum(hits.values()) == 30, counts


def test_pod_reaches_itself_through_its_service(env: Env) -> None:
    res = env.probe(env.ep1, "connect", "10.96.0.40", "80")
    assert res["result"] == "ok", res
    # served by itself, seen from the node's address: the SEP chain's hairpin masquerade did its job
    assert res["body"] == f"ep1 {NODE_POD_GW}", res


def test_udp_flow_moves_to_remaining_endpoint_when_its_endpoint_goes(env: Env) -> None:
    p = env.spawn(env.client, [sys.executable, PROBE, "udp", "10.96.0.53", "53", "--sport", "40123",
                               "--count", "160", "--interval", "0.05"])
    assert p.stdout is not None
    try:
        first = [p.stdout.readline().split()[1] for _ in range(6)]
        assert first[0] in ("ep1", "ep2") and len(set(first)) == 1, first  # one flow, one endpoint
        stuck = first[0]
        keep = EP2 if stuck == "ep1" else EP1
        mark = len(env.log_text())
        env.put(endpoint_slice("dns-1", "dns", 5353, [keep], "UDP"))
        changed_at = time.monotonic()
        env.synced_after(mark)
        seen_after: list[tuple[float, str]] = []
        while time.monotonic() - changed_at < 5:
            line = p.stdout.readline()
            if not line:
                break
            seen_after.append((time.monotonic() - changed_at, line.split()[1]))
            if seen_after[-1][1] not in (stuck, "-") and len(seen_after) > 3:
                break
        moved = [t for t, name in seen_after if name not in (stuck, "-")]
        assert moved, f"the flow stayed on {stuck} (the stale conntrack entry was not removed): {seen_after}"
        assert moved[0] < 2.5, seen_after  # store watch + sync + conntrack, on a loaded 2-core box
        # once moved, it stays on the live endpoint
        tail = [name for t, name in seen_after if t >= moved[0]]
        assert stuck not in tail, seen_after
    finally:
        os.kill(p.pid, signal.SIGKILL)
        p.wait(5)
        env.put(endpoint_slice("dns-1", "dns", 5353, [EP1, EP2], "UDP"))


STALE = "KUBE-SVC-PNSTALE0000000000"


def test_other_programs_chains_survive_syncs(env: Env) -> None:
    mark = len(env.log_text())
    if env.mode == "iptables":
        # the periodic run reads the kernel; a stale service chain is a drift, repaired by a full sync
        sh(env.node, "iptables", "-w", "5", "-t", "nat", "-N", STALE)
        env.wait_log(rf"the kernel no longer holds the rules podnet applied \(.*nat/{STALE}", after=mark, timeout=15)
    env.wait_log(r"full sync of \d+ service ports", after=mark, timeout=15)  # a periodic full sync ran
    nat = sh(env.node, "iptables-save", "-t", "nat")
    assert STALE not in nat
    flt = sh(env.node, "iptables-save", "-t", "filter")
    assert "-A PN-FOREIGN-NAT -d 198.51.100.7/32 -j RETURN" in nat
    assert "-A PREROUTING -j PN-FOREIGN-NAT" in nat
    assert "-A PN-FOREIGN-FILTER -s 198.51.100.8/32 -j DROP" in flt
    assert "-A INPUT -j PN-FOREIGN-FILTER" in flt


def test_invalid_store_object_is_skipped_while_the_rest_syncs(env: Env) -> None:
    mark = len(env.log_text())
    bad = service("bad", "10.96.0.999", 80, 8080)
    env.put(bad)
    env.put(service("late", "10.96.0.50", 80, 8080))
    env.put(endpoint_slice("late-1", "late", 8080, [EP2]))
    env.synced_after(mark)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        res = env.probe(env.client, "connect", "10.96.0.50", "80")
        if res["result"] == "ok":
            break
        time.sleep(0.2)
    assert res["result"] == "ok" and res["body"].startswith("ep2"), res
    log = env.log_text()[mark:]
    bad_lines = [line for line in log.splitlines() if "services/default/bad" in line]
    assert bad_lines and "10.96.0.999" in bad_lines[0], log
    env.delete("Service", "bad")


def test_metrics_and_healthz_are_served_inside_the_node_namespace(env: Env) -> None:
    metrics = sh(env.node, "curl", "-sf", "http://127.0.0.1:10249/metrics")
    values = {}
    for line in metrics.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            values[name] = float(value)
    assert values["kubeproxy_sync_proxy_rules_duration_seconds_count"] >= 1
    assert values["kubeproxy_sync_proxy_rules_last_timestamp_seconds"] > time.time() - 60
    assert values["kubeproxy_network_programming_duration_seconds_count"] >= 1
    if env.mode == "iptables":
        assert values['kubeproxy_sync_proxy_rules_iptables_total{table="nat"}'] > 10
    health = json.loads(sh(env.node, "curl", "-sf", f"http://{NODE_IP}:10256/healthz"))
    assert health["lastUpdated"] and health["nodeEligible"] is True and health["healthy"] is True
    assert health["status"]["IPv4"]["healthy"] is True  # kube-proxy's per-family status (v1.33)
    live = json.loads(sh(env.node, "curl", "-sf", f"http://{NODE_IP}:10256/livez"))
    assert live["healthy"] is True and "nodeEligible" not in live
    # kube-proxy's defaults: metrics on loopback only, health on every address
    assert sh(env.client, "curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "2",
              f"http://{NODE_IP}:10256/healthz", check=False) == "200"


def test_failed_restore_keeps_previous_rules_and_is_retried(env: Env) -> None:
    from podnet.proxy.iptables.names import endpoint_chain_name

    if env.mode != "iptables":
        pytest.skip("provokes an iptables-restore failure")
    sep = endpoint_chain_name("default/self:p", "tcp", f"{EP1}:8080")
    # another program references podnet's chain: deleting it (the endpoint goes) must fail
    sh(env.node, "iptables", "-w", "5", "-t", "nat", "-A", "PN-FOREIGN-NAT", "-d", "198.51.100.9/32", "-j", sep)
    mark = len(env.log_text())
    try:
        env.put(endpoint_slice("self-1", "self", 8080, [EP2]))
        env.wait_log(r"partial sync failed, falling back to a full sync", after=mark)
        env.wait_log(r"full sync failed \(previous rules stay in place\), retrying", after=mark)
        # the kernel kept the previous, consistent rules: the service still goes to its old endpoint
        res = env.probe(env.client, "connect", "10.96.0.40", "80")
        assert res["result"] == "ok" and res["body"].startswith("ep1"), res
    finally:
        sh(env.node, "iptables", "-w", "5", "-t", "nat", "-D", "PN-FOREIGN-NAT", "-d", "198.51.100.9/32", "-j", sep)
    env.wait_log(r"full sync of \d+ service ports", after=mark, timeout=15)  # the retry
    res = env.probe(env.client, "connect", "10.96.0.40", "80")
    assert res["result"] == "ok" and res["body"].startswith("ep2"), res
    assert sep not in sh(env.node, "iptables-save", "-t", "nat")
    mark = len(env.log_text())
    env.put(endpoint_slice("self-1", "self", 8080, [EP1]))
    env.synced_after(mark)


def test_restarted_proxy_leaves_rules_identical(env: Env) -> None:
    mark = len(env.log_text())
    env.synced_after(mark)  # a periodic sync (iptables mode: partial, after a read of the kernel)
    before = env.rules()
    env.stop_proxy(signal.SIGKILL)
    env.start_proxy()
    after = env.rules()
    assert after == before


def test_forwarding_survives_kill_9_and_a_new_listener_gets_nothing(env: Env) -> None:
    env.stop_proxy(signal.SIGKILL)
    counts = env.probe(env.client, "tcp", "10.96.0.10", "80", "--count", "20")
    assert counts["errors"] == 0 and counts.get("ep1", 0) + counts.get("ep2", 0) == 20, counts
    listener = env.spawn(env.node, [sys.executable, PROBE, "bind", NODE_IP, "30080", "--hold"])
    assert listener.stdout is not None
    try:
        assert json.loads(listener.stdout.readline()) == {"result": "ok"}  # the port is free now
        counts = env.probe(env.client, "tcp", NODE_IP, "30080", "--count", "10")
        assert counts["errors"] == 0 and counts.get("ep1", 0) + counts.get("ep2", 0) == 10, counts
    finally:
        os.kill(listener.pid, signal.SIGKILL)
        rest = listener.stdout.read()
        listener.wait(5)
    assert "accepted" not in rest  # NodePort traffic went to the endpoints, never to the local listener
    assert CLIENT_IP  # the client is the only sender in these tests
