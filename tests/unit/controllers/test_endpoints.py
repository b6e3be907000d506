"""EndpointSlices derived from a service and pods, as Kubernetes' EndpointSlice controller derives them."""

from __future__ import annotations

from typing import Any

from podnet.api import (
    CONTROLLER_NAME,
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    Pod,
    Service,
    from_json,
    parse_object,
)
from podnet.controllers.endpoints import endpoint_slices_for, ready_addresses, slice_ops
from podnet.store import Delete, Put, keys


def svc(ports: list[dict[str, Any]] | None = None, selector: dict[str, str] | None = None, **spec: Any) -> Service:
    return parse_object({
        "apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "labels": {"tier": "front"}},
        "spec": {"selector": {"app": "web"} if selector is None else selector,
                 "ports": ports or [{"name": "http", "port": 80, "targetPort": 8080}], **spec},
    })  # type: ignore[return-value]


def pod(name: str, ip: str | None, *, ready: bool = True, labels: dict[str, str] | None = None,
        ns: str = "default", phase: str = "Running", ports: list[dict[str, Any]] | None = None,
        node: str = "node-1", deleting: bool = False) -> Pod:
    return parse_object({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": "web"} if labels is None else labels,
                     **({"deletionTimestamp": "2026-01-01T00:00:00Z"} if deleting else {})},
        "spec": {"nodeName": node, "containers": [{"name": "c", "ports": ports or []}]},
        "status": {"phase": phase, **({"podIP": ip} if ip else {}),
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    })  # type: ignore[return-value]


def conditions(slices: list[Any]) -> dict[str, tuple[bool, bool, bool]]:
    return {e.addresses[0]: (e.conditions.ready, e.conditions.serving, e.conditions.terminating)
            for s in slices for e in s.endpoints}


def test_selected_pods_with_ip_become_endpoints_sorted_by_address() -> None:
    pods = [
        pod("b", "10.32.0.10"),
        pod("a", "10.32.0.9"),
        pod("no-ip", None),
        pod("other-app", "10.32.0.20", labels={"app": "db"}),
        pod("other-ns", "10.32.0.21", ns="team"),
        pod("done", "10.32.0.22", phase="Succeeded"),
    ]
    (s,) = endpoint_slices_for(svc(), pods)
    assert [e.addresses for e in s.endpoints] == [["10.32.0.9"], ["10.32.0.10"]]  # numeric, not string order
    assert [(p.name, p.port, p.protocol) for p in s.ports] == [("http", 8080, "TCP")]
    assert s.metadata.labels == {"tier": "front", SERVICE_NAME_LABEL: "web", MANAGED_BY_LABEL: CONTROLLER_NAME}
    assert s.namespace == "default" and s.name.startswith("web-") and s.address_type == "IPv4"
    assert s.endpoints[0].node_name == "node-1" and s.endpoints[0].target_ref.name == "a"


def test_readiness_and_terminating_conditions() -> None:
    pods = [pod("ok", "10.0.0.1"), pod("starting", "10.0.0.2", ready=False),
            pod("leaving", "10.0.0.3", deleting=True), pod("leaving-unready", "10.0.0.4", ready=False, deleting=True)]
    slices = endpoint_slices_for(svc(), pods)
    assert conditions(slices) == {
        "10.0.0.1": (True, True, False),
        "10.0.0.2": (False, False, False),
        "10.0.0.3": (False, True, True),
        "10.0.0.4": (False, False, True),
    }
    assert ready_addresses(slices, "http") == ["10.0.0.1:8080"]
    published = endpoint_slices_for(svc(publishNotReadyAddresses=True), pods)
    assert conditions(published)["10.0.0.2"] == (True, True, False)


def test_named_target_port_resolved_per_pod_and_grouped_by_port_set() -> None:
    service = svc([{"name": "web", "port": 80, "targetPort": "http"}])
    pods = [
        pod("old", "10.0.0.1", ports=[{"name": "http", "containerPort": 8080}]),
        pod("new", "10.0.0.2", ports=[{"name": "http", "containerPort": 9090}]),
        pod("new2", "10.0.0.3", ports=[{"name": "http", "containerPort": 9090}]),
        pod("udp-only", "10.0.0.4", ports=[{"name": "http", "containerPort": 7070, "protocol": "UDP"}]),
    ]
    slices = endpoint_slices_for(service, pods)
    by_port = {tuple(p.port for p in s.ports): [e.addresses[0] for e in s.endpoints] for s in slices}
    assert by_port == {(8080,): ["10.0.0.1"], (9090,): ["10.0.0.2", "10.0.0.3"], (): ["10.0.0.4"]}
    assert len({s.name for s in slices}) == 3
    assert sorted(ready_addresses(slices, "web")) == ["10.0.0.1:8080", "10.0.0.2:9090", "10.0.0.3:9090"]


def test_multiple_ports_keep_service_port_names_and_protocols() -> None:
    service = svc([{"name": "http", "port": 80, "targetPort": "web"},
                   {"name": "dns", "port": 53, "protocol": "UDP", "targetPort": 5353},
                   {"name": "metrics", "port": 9100}])
    (s,) = endpoint_slices_for(service, [pod("p", "10.0.0.1", ports=[{"name": "web", "containerPort": 8000}])])
    assert [(p.name, p.port, p.protocol) for p in s.ports] == [("http", 8000, "TCP"), ("dns", 5353, "UDP"),
                                                               ("metrics", 9100, "TCP")]
    assert ready_addresses([s], "dns") == ["10.0.0.1:5353"]


def test_selector_less_service_has_no_derived_slices_and_no_match_gives_placeholder() -> None:
    assert endpoint_slices_for(svc(selector={}), [pod("p", "10.0.0.1")]) == []
    (placeholder,) = endpoint_slices_for(svc(), [pod("p", "10.0.0.1", labels={"app": "x"})])
    assert placeholder.endpoints == [] and placeholder.ports == []


def test_slices_are_chunked_and_deterministic() -> None:
    pods = [pod(f"p{i}", f"10.0.{i // 250}.{i % 250 + 1}") for i in range(250)]
    slices = endpoint_slices_for(svc(), pods)
    assert [len(s.endpoints) for s in slices] == [100, 100, 50]
    assert endpoint_slices_for(svc(), list(reversed(pods))) == slices  # input order does not matter


def test_slice_ops_create_update_delete_only_managed_slices() -> None:
    service = svc()
    first = endpoint_slices_for(service, [pod("a", "10.0.0.1")])
    key = keys.resource("EndpointSlice", "default", first[0].name)
    (created,) = slice_ops([service], [pod("a", "10.0.0.1")], {})
    assert isinstance(created, Put) and created.key == key and created.if_absent
    stored = from_json(created.value)
    assert stored.metadata.uid and stored.metadata.creation_timestamp
    assert stored.model_copy(update={"metadata": first[0].metadata}) == first[0]
    # unchanged: nothing to write
    assert slice_ops([service], [pod("a", "10.0.0.1")], {key: (stored, 7)}) == []
    # a pod more: the same slice is rewritten, conditional on the revision read
    (op,) = slice_ops([service], [pod("a", "10.0.0.1"), pod("b", "10.0.0.2")], {key: (first[0], 7)})
    assert isinstance(op, Put) and op.key == key and op.if_revision == 7
    # the user's slice of a selector-less service survives; the service's gone, its slice goes
    user = parse_object({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                         "metadata": {"name": "ext-1", "labels": {SERVICE_NAME_LABEL: "ext"}},
                         "endpoints": [{"addresses": ["192.0.2.1"]}]})
    user_key = keys.resource("EndpointSlice", "default", "ext-1")
    ops = slice_ops([], [], {key: (first[0], 7), user_key: (user, 3)})  # type: ignore[dict-item]
    assert ops == [Delete(key, if_revision=7)]
