"""Pure formatting of the kubectl-like commands: ages, tables, the describe block."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from podnet.api import EndpointSlice, Service, load_objects
from podnet.cli.resources import age, describe_service_lines, format_table
from podnet.controllers import ipfamilies
from podnet.controllers.apply import default_service
from podnet.controllers.endpoints import endpoint_slices_for


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5s"), (119, "119s"), (150, "2m30s"), (600, "10m"), (3 * 3600 + 60, "3h1m"), (9 * 3600, "9h"),
     (3 * 86400 + 3600, "3d1h"), (30 * 86400, "30d"), (800 * 86400, "2y")],
)
def test_age_like_kubectl(seconds: int, text: str) -> None:
    now = datetime(2026, 1, 10, tzinfo=UTC)
    (svc,) = load_objects("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 1}]}\n")
    svc.metadata.creation_timestamp = (now - timedelta(seconds=seconds)).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert age(svc, now) == text
    svc.metadata.creation_timestamp = None
    assert age(svc, now) == "<unknown>"


def test_table_columns_are_padded_by_three_spaces() -> None:
    assert format_table([["NAME", "TYPE"], ["a-long-name", "ClusterIP"]]) == (
        "NAME          TYPE\n"
        "a-long-name   ClusterIP\n"
    )


def test_describe_multiport_load_balancer_with_many_endpoints() -> None:
    text = """
apiVersion: v1
kind: Service
metadata: {name: lb, namespace: team, labels: {b: "2", a: "1"}, annotations: {note: hi}}
spec:
  type: LoadBalancer
  clusterIP: 10.96.0.50
  externalTrafficPolicy: Local
  healthCheckNodePort: 32000
  selector: {app: lb}
  sessionAffinity: ClientIP
  loadBalancerSourceRanges: [203.0.113.0/24]
  ports:
  - {name: http, port: 80, targetPort: web, nodePort: 30001}
  - {name: dns, port: 53, protocol: UDP, nodePort: 30002}
status: {loadBalancer: {ingress: [{ip: 192.0.2.1}]}}
"""
    (svc,) = load_objects(text)
    assert isinstance(svc, Service)
    default_service(svc)
    assert ipfamilies.init_families(svc, None, ("IPv4",)) == []  # what the planner adds: family and policy
    pods = load_objects("\n---\n".join(f"""
apiVersion: v1
kind: Pod
metadata: {{name: p{i}, namespace: team, labels: {{app: lb}}}}
spec: {{containers: [{{name: c, ports: [{{name: web, containerPort: 8080}}]}}]}}
status: {{podIP: 10.0.0.{i}, conditions: [{{type: Ready, status: "True"}}]}}
""" for i in range(1, 6)))
    slices: list[EndpointSlice] = endpoint_slices_for(svc, pods)  # type: ignore[arg-type]
    assert describe_service_lines(svc, slices).splitlines() == [
        "Name:                        lb",
        "Namespace:                   team",
        "Labels:                      a=1",
        "                             b=2",
        "Annotations:                 note: hi",
        "Selector:                    app=lb",
        "Type:                        LoadBalancer",
        "IP Family Policy:            SingleStack",
        "IP Families:                 IPv4",
        "IP:                          10.96.0.50",
        "IPs:                         10.96.0.50",
        "LoadBalancer Ingress:        192.0.2.1",
        "Port:                        http  80/TCP",
        "TargetPort:                  web/TCP",
        "NodePort:                    http  30001/TCP",
        "Endpoints:                   10.0.0.1:8080,10.0.0.2:8080,10.0.0.3:8080 + 2 more...",
        "Port:                        dns  53/UDP",
        "TargetPort:                  53/UDP",
        "NodePort:                    dns  30002/UDP",
        "Endpoints:                   10.0.0.1:53,10.0.0.2:53,10.0.0.3:53 + 2 more...",
        "Session Affinity:            ClientIP",
        "Session Affinity Timeout:    10800s",
        "External Traffic Policy:     Local",
        "Internal Traffic Policy:     Cluster",
        "HealthCheck NodePort:        32000",
        "LoadBalancer Source Ranges:  203.0.113.0/24",
        "Events:                      <none>",
    ]


def test_describe_without_endpoints() -> None:
    (svc,) = load_objects("apiVersion: v1\nkind: Service\nmetadata: {name: a}\nspec: {ports: [{port: 80}]}\n")
    lines = describe_service_lines(svc, []).splitlines()  # type: ignore[arg-type]
    assert "Endpoints:         <none>" in lines  # widest key "Session Affinity:" + 2
    assert "Selector:          <none>" in lines
