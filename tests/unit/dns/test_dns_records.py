"""Stored objects reduced to DNS records (CoreDNS's object.ToService / EndpointSliceToEndpoints / ToPod)."""

from __future__ import annotations

from podnet.api import load_objects
from podnet.dns.records import Address, Port, View, reduce

OBJECTS = """
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {clusterIP: 10.96.0.11, clusterIPs: [10.96.0.11], ports: [{name: http, port: 80}]}
---
apiVersion: v1
kind: Service
metadata: {name: bare, namespace: shop}
spec: {clusterIP: None}
---
apiVersion: v1
kind: Service
metadata: {name: db, namespace: shop}
spec: {type: ExternalName, externalName: db.example.com}
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: web-1, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: IPv4
endpoints:
- {addresses: [10.244.1.5], hostname: web-0, targetRef: {kind: Pod, name: web-0}}
- {addresses: [10.244.1.6], conditions: {ready: false}}
- {addresses: [10.244.1.7], conditions: {}}
ports: [{name: http, port: 8080, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata: {name: names, namespace: shop, labels: {kubernetes.io/service-name: web}}
addressType: FQDN
endpoints: [{addresses: [a.example.com]}]
---
apiVersion: v1
kind: Pod
metadata: {name: p, namespace: shop}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.1.5}
---
apiVersion: v1
kind: Pod
metadata: {name: gone, namespace: shop, deletionTimestamp: "2026-01-01T00:00:00Z"}
spec: {containers: [{name: c}]}
status: {podIP: 10.244.1.9}
---
apiVersion: v1
kind: Namespace
metadata: {name: empty}
"""


def _records():  # type: ignore[no-untyped-def]
    return [r for r in (reduce(o) for o in load_objects(OBJECTS)) if r is not None]


def test_services_keep_what_dns_answers_from() -> None:
    web, bare, db = _records()[:3]
    assert web.cluster_ips == ("10.96.0.11",) and web.ports == (Port("http", "TCP", 80),) and not web.headless
    assert bare.headless and bare.ports == (Port("", "", -1),)  # no ports: A records only, no SRV
    assert db.type == "ExternalName" and db.external_name == "db.example.com" and db.cluster_ips == ("",)


def test_slices_keep_ready_endpoints_only_and_skip_fqdn_slices() -> None:
    slices = [r for r in _records() if type(r).__name__ == "EndpointsRecord"]
    assert len(slices) == 1  # the FQDN slice holds names, not addresses
    (es,) = slices
    assert es.service == "web" and es.ports == (Port("http", "TCP", 8080),)
    # unset readiness counts as ready; ready=false is left out
    assert es.addresses == (Address("10.244.1.5", "web-0", "web-0"), Address("10.244.1.7", "", ""))


def test_terminating_pods_are_not_indexed_and_namespaces_with_objects_exist() -> None:
    view = View.build(_records())
    assert [p.name for p in view.pods_by_ip["10.244.1.5"]] == ["p"] and "10.244.1.9" not in view.pods_by_ip
    assert view.namespace_exists("shop") and view.namespace_exists("empty") and view.namespace_exists("default")
    assert not view.namespace_exists("nowhere")
    assert [s.name for s in view.services_by_ip["10.96.0.11"]] == ["web"]
    assert [e.service for e in view.endpoints_by_ip["10.244.1.5"]] == ["web"]
