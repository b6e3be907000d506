"""Dual-stack Services through the planner: ipFamilyPolicy, ipFamilies and clusterIPs as the API server sets
them (pkg/registry/core/service/storage alloc.go and its tests' cases), one allocator per family, and
EndpointSlices per address type. Every case runs on a real SQLite store; a refusal must store nothing."""

from __future__ import annotations

import ipaddress
import json
import random
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from podnet.api import EndpointSlice, Service, load_objects
from podnet.api.loader import from_json
from podnet.controllers.allocators import AllocatorConfig
from podnet.controllers.apply import apply_objects, delete_objects
from podnet.errors import ValidationError
from podnet.store import Store, keys, open_store

V4 = AllocatorConfig("10.96.0.0/24")
V6 = AllocatorConfig("fd00:10:96::/112")
DUAL = AllocatorConfig("10.96.0.0/24,fd00:10:96::/112")
DUAL6 = AllocatorConfig("fd00:10:96::/112,10.96.0.0/24")  # IPv6 the cluster's default


def svc(name: str = "web", **spec: Any) -> Service:
    body = {"type": "ClusterIP", "selector": {"app": name}, "ports": [{"port": 80}]} | spec
    body = {k: v for k, v in body.items() if v is not None}
    (s,) = load_objects(json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                                    "spec": body}))
    assert isinstance(s, Service)
    return s


def stored(store: Store, name: str = "web") -> Service:
    kv = store.get(keys.resource("Service", "default", name))
    assert kv is not None
    s = from_json(kv.value)
    assert isinstance(s, Service)
    return s


def ip_records(store: Store) -> dict[str, str]:
    return {kv.key[len(keys.ALLOC_CLUSTER_IP_PREFIX):]: kv.value.decode()
            for kv in store.list(keys.ALLOC_CLUSTER_IP_PREFIX).items}


def families(ips: list[str]) -> list[str]:
    return ["IPv6" if ipaddress.ip_address(ip).version == 6 else "IPv4" for ip in ips]


def refused(store: Store, obj: Service, config: AllocatorConfig, field: str, reason: str) -> None:
    before = store.revision()
    with pytest.raises(ValidationError) as e:
        apply_objects(store, [obj], config=config)
    assert any(p.field == field and reason in p.reason for p in e.value.problems), e.value.problems
    assert store.revision() == before  # nothing stored, no address taken


# ---- creating ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("config", "spec", "fams", "policy"), [
    (V4, {}, ["IPv4"], "SingleStack"),
    (V6, {}, ["IPv6"], "SingleStack"),
    (DUAL, {}, ["IPv4"], "SingleStack"),
    (DUAL6, {}, ["IPv6"], "SingleStack"),
    (V4, {"ipFamilyPolicy": "PreferDualStack"}, ["IPv4"], "PreferDualStack"),  # prefers, gets what there is
    (DUAL, {"ipFamilyPolicy": "PreferDualStack"}, ["IPv4", "IPv6"], "PreferDualStack"),
    (DUAL, {"ipFamilyPolicy": "RequireDualStack"}, ["IPv4", "IPv6"], "RequireDualStack"),
    (DUAL6, {"ipFamilyPolicy": "RequireDualStack"}, ["IPv6", "IPv4"], "RequireDualStack"),
    (DUAL, {"ipFamilyPolicy": "RequireDualStack", "ipFamilies": ["IPv6"]}, ["IPv6", "IPv4"], "RequireDualStack"),
    (DUAL, {"ipFamilies": ["IPv6"]}, ["IPv6"], "SingleStack"),
    (DUAL, {"clusterIP": "fd00:10:96::77"}, ["IPv6"], "SingleStack"),  # the family from the address
    (DUAL, {"clusterIP": "10.96.0.77", "clusterIPs": ["10.96.0.77", "fd00:10:96::77"],
            "ipFamilyPolicy": "PreferDualStack"}, ["IPv4", "IPv6"], "PreferDualStack"),
])
def test_families_and_addresses_on_create(store: Store, config: AllocatorConfig, spec: dict[str, Any],
                                          fams: list[str], policy: str) -> None:
    apply_objects(store, [svc(**spec)], config=config)
    s = stored(store).spec
    assert (s.ip_families, s.ip_family_policy) == (fams, policy)
    assert families(s.cluster_ips) == fams and s.cluster_ip == s.cluster_ips[0]
    for ip, fam in zip(s.cluster_ips, fams, strict=True):
        net = config.cidr_of(fam)
        assert net is not None and ipaddress.ip_address(ip) in net
    for asked in spec.get("clusterIPs", [spec["clusterIP"]] if "clusterIP" in spec else []):
        assert asked in s.cluster_ips
    assert ip_records(store) == {ip: "Service/default/web" for ip in s.cluster_ips}


@pytest.mark.parametrize(("config", "spec", "field", "reason"), [
    (V4, {"ipFamilyPolicy": "RequireDualStack"}, "spec.ipFamilyPolicy", "not configured for dual-stack"),
    (V4, {"ipFamilies": ["IPv6"]}, "spec.ipFamilies[0]", "not configured on this cluster"),
    (V6, {"ipFamilies": ["IPv4"]}, "spec.ipFamilies[0]", "not configured on this cluster"),
    (V4, {"clusterIP": "fd00:10:96::5"}, "spec.clusterIPs[0]", "IPv6 is not configured on this cluster"),
    (DUAL, {"ipFamilies": ["IPv4", "IPv6"]}, "spec.ipFamilyPolicy", "when multiple IP families are specified"),
    (DUAL, {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7", "fd00:10:96::7"]}, "spec.ipFamilyPolicy",
     "when multiple cluster IPs are specified"),
    (DUAL, {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7", "10.96.0.8"], "ipFamilyPolicy": "RequireDualStack"},
     "spec.clusterIPs", "no more than one IP for each IP family"),
    (DUAL, {"clusterIPs": ["10.96.0.7"]}, "spec.clusterIPs", "must be empty when `clusterIP` is not specified"),
    (DUAL, {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.8"]}, "spec.clusterIPs", "first value must match"),
    (DUAL, {"clusterIP": "10.96.0.7", "ipFamilies": ["IPv6"]}, "spec.clusterIPs[0]", "expected an IPv6 value"),
    (DUAL, {"ipFamilies": ["IPv4", "IPv4"], "ipFamilyPolicy": "RequireDualStack"}, "spec.ipFamilies[1]",
     "Duplicate value"),
    (DUAL, {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7", "fd00:10:97::1"], "ipFamilyPolicy":
            "RequireDualStack"}, "spec.clusterIPs[1]", "not in the valid range"),
    (DUAL, {"clusterIP": "10.96.0.7", "clusterIPs": ["10.96.0.7", "fd00::1", "fd00::2"],
            "ipFamilyPolicy": "RequireDualStack"}, "spec.clusterIPs", "may only hold up to 2 values"),
])
def test_refusals_name_the_field_and_store_nothing(store: Store, config: AllocatorConfig, spec: dict[str, Any],
                                                   field: str, reason: str) -> None:
    refused(store, svc(**spec), config, field, reason)


def test_headless_without_selector_defaults_to_both_families_even_on_a_single_stack_cluster(store: Store) -> None:
    apply_objects(store, [svc(clusterIP="None", selector=None)], config=V4)
    s = stored(store).spec
    assert (s.ip_family_policy, s.ip_families, s.cluster_ips) == ("RequireDualStack", ["IPv4", "IPv6"], ["None"])
    apply_objects(store, [svc("sel", clusterIP="None")], config=V4)  # with a selector: the cluster's family
    s = stored(store, "sel").spec
    assert (s.ip_family_policy, s.ip_families) == ("SingleStack", ["IPv4"])
    assert ip_records(store) == {}


def test_external_name_has_no_families(store: Store) -> None:
    apply_objects(store, [svc(type="ExternalName", externalName="example.com", selector=None, ports=None)],
                  config=DUAL)
    s = stored(store).spec
    assert (s.ip_families, s.ip_family_policy, s.cluster_ips) == ([], None, [])


# ---- updating ------------------------------------------------------------------------------------------


def test_upgrade_keeps_the_primary_and_adds_the_secondary_and_downgrade_releases_it(store: Store) -> None:
    apply_objects(store, [svc()], config=DUAL)
    (primary,) = stored(store).spec.cluster_ips
    # a manifest without any address field: the stored ones carry over, the policy asks for more
    apply_objects(store, [svc(ipFamilyPolicy="PreferDualStack")], config=DUAL)
    s = stored(store).spec
    assert s.cluster_ips[0] == primary and families(s.cluster_ips) == ["IPv4", "IPv6"]
    assert s.ip_families == ["IPv4", "IPv6"] and set(ip_records(store)) == set(s.cluster_ips)
    secondary = s.cluster_ips[1]
    apply_objects(store, [svc(ipFamilyPolicy="PreferDualStack")], config=DUAL)  # again: nothing moves
    assert stored(store).spec.cluster_ips == [primary, secondary]
    # leaving the policy out keeps it (the stored one): still dual
    apply_objects(store, [svc()], config=DUAL)
    assert stored(store).spec.cluster_ips == [primary, secondary]
    # SingleStack releases the secondary address and its record
    apply_objects(store, [svc(ipFamilyPolicy="SingleStack")], config=DUAL)
    s = stored(store).spec
    assert (s.cluster_ips, s.ip_families) == ([primary], ["IPv4"])
    assert ip_records(store) == {primary: "Service/default/web"}


def test_asking_for_a_given_secondary_on_upgrade(store: Store) -> None:
    apply_objects(store, [svc(clusterIP="10.96.0.20")], config=DUAL)
    apply_objects(store, [svc(clusterIP="10.96.0.20", clusterIPs=["10.96.0.20", "fd00:10:96::20"],
                              ipFamilyPolicy="RequireDualStack")], config=DUAL)
    assert stored(store).spec.cluster_ips == ["10.96.0.20", "fd00:10:96::20"]


def test_update_refusals(store: Store) -> None:
    apply_objects(store, [svc(clusterIP="10.96.0.20", clusterIPs=["10.96.0.20", "fd00:10:96::20"],
                              ipFamilyPolicy="RequireDualStack")], config=DUAL)
    # dropping the secondary without saying SingleStack
    refused(store, svc(clusterIP="10.96.0.20", clusterIPs=["10.96.0.20"], ipFamilies=["IPv4"]), DUAL,
            "spec.ipFamilyPolicy", "must be 'SingleStack' to release the secondary")
    # changing either address
    refused(store, svc(clusterIP="10.96.0.21", clusterIPs=["10.96.0.21", "fd00:10:96::20"]), DUAL,
            "spec.clusterIP", "immutable")
    refused(store, svc(clusterIP="10.96.0.20", clusterIPs=["10.96.0.20", "fd00:10:96::21"]), DUAL,
            "spec.clusterIPs[1]", "may not change once set")
    # swapping the families
    refused(store, svc(ipFamilies=["IPv6", "IPv4"]), DUAL, "spec.clusterIPs[0]", "expected an IPv6 value")
    assert stored(store).spec.cluster_ips == ["10.96.0.20", "fd00:10:96::20"]


def test_a_prefer_dual_stack_service_is_not_upgraded_when_the_cluster_becomes_dual_stack(store: Store) -> None:
    apply_objects(store, [svc(ipFamilyPolicy="PreferDualStack")], config=V4)
    before = stored(store).spec
    assert before.ip_families == ["IPv4"]
    apply_objects(store, [svc(ipFamilyPolicy="PreferDualStack")], config=DUAL)  # the same manifest again
    after = stored(store).spec
    assert (after.cluster_ips, after.ip_families) == (before.cluster_ips, ["IPv4"])
    # asking explicitly does upgrade it
    apply_objects(store, [svc(ipFamilyPolicy="RequireDualStack")], config=DUAL)
    assert families(stored(store).spec.cluster_ips) == ["IPv4", "IPv6"]


def test_becoming_external_name_gives_both_addresses_back(store: Store) -> None:
    apply_objects(store, [svc(ipFamilyPolicy="RequireDualStack")], config=DUAL)
    assert len(ip_records(store)) == 2
    apply_objects(store, [svc(type="ExternalName", externalName="example.com", ports=None)], config=DUAL)
    assert ip_records(store) == {}
    assert stored(store).spec.cluster_ips == []


def test_delete_frees_both_families(store: Store) -> None:
    apply_objects(store, [svc(ipFamilyPolicy="RequireDualStack")], config=DUAL)
    delete_objects(store, [("Service", "default", "web")], config=DUAL)
    assert ip_records(store) == {}


# ---- EndpointSlices per address type ------------------------------------------------------------------


def pod(name: str, *ips: str, app: str = "web") -> Any:
    (p,) = load_objects(json.dumps({
        "apiVersion": "v1", "kind": "Pod", "metadata": {"name": name, "labels": {"app": app}},
        "spec": {"nodeName": "n1", "containers": [{"name": "c", "image": "x"}]},
        "status": {"phase": "Running", "podIP": ips[0], "podIPs": [{"ip": ip} for ip in ips],
                   "conditions": [{"type": "Ready", "status": "True"}]},
    }))
    return p


def slices(store: Store) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for kv in store.list(keys.kind_prefix("EndpointSlice")).items:
        es = from_json(kv.value)
        assert isinstance(es, EndpointSlice)
        out.setdefault(es.address_type, []).extend(a for ep in es.endpoints for a in ep.addresses)
    return {k: sorted(v) for k, v in out.items()}


def test_a_dual_stack_service_gets_slices_of_both_families_and_loses_one_on_downgrade(store: Store) -> None:
    apply_objects(store, [pod("a", "10.244.1.5", "fd00:10:244:1::5"), pod("b", "10.244.2.6")], config=DUAL)
    apply_objects(store, [svc(ipFamilyPolicy="RequireDualStack", ipFamilies=["IPv6", "IPv4"])], config=DUAL)
    assert slices(store) == {"IPv4": ["10.244.1.5", "10.244.2.6"], "IPv6": ["fd00:10:244:1::5"]}
    apply_objects(store, [svc(ipFamilyPolicy="SingleStack")], config=DUAL)  # keeps the primary: IPv6
    assert slices(store) == {"IPv6": ["fd00:10:244:1::5"]}
    delete_objects(store, [("Pod", "default", "a")], config=DUAL)
    assert slices(store) == {"IPv6": []}  # the placeholder of its one family


# ---- a property over random sequences ------------------------------------------------------------------

POLICIES = st.sampled_from([None, "SingleStack", "PreferDualStack", "RequireDualStack"])
FAMILIES = st.sampled_from([None, ["IPv4"], ["IPv6"], ["IPv4", "IPv6"], ["IPv6", "IPv4"]])
STEP = st.tuples(st.sampled_from(["a", "b", "c"]), st.sampled_from(["apply", "delete"]), POLICIES, FAMILIES,
                 st.sampled_from(["ClusterIP", "NodePort", "ExternalName"]))


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(steps=st.lists(STEP, min_size=1, max_size=12), seed=st.integers(0, 2**16))
def test_any_sequence_keeps_addresses_families_and_records_in_agreement(tmp_path_factory: Any, steps: list[Any],
                                                                        seed: int) -> None:
    store = open_store(f"sqlite:///{tmp_path_factory.mktemp('ds')}/s.db")
    try:
        for name, verb, policy, fams, type_ in steps:
            try:
                if verb == "delete":
                    delete_objects(store, [("Service", "default", name)], ignore_not_found=True, config=DUAL)
                elif type_ == "ExternalName":
                    apply_objects(store, [svc(name, type="ExternalName", externalName="x.example", ports=None)],
                                  config=DUAL, rng=random.Random(seed))
                else:
                    apply_objects(store, [svc(name, type=type_, ipFamilyPolicy=policy, ipFamilies=fams)],
                                  config=DUAL, rng=random.Random(seed))
            except ValidationError:
                pass  # refusals are checked above; a refused write must leave the invariants intact
        owners: dict[str, str] = {}
        for kv in store.list(keys.kind_prefix("Service")).items:
            s = from_json(kv.value)
            assert isinstance(s, Service)
            if s.spec.type == "ExternalName":
                assert s.spec.cluster_ips == [] and s.spec.ip_families == []
                continue
            assert families(s.spec.cluster_ips) == s.spec.ip_families
            assert len(s.spec.ip_families) == (1 if s.spec.ip_family_policy == "SingleStack" else 2)
            assert s.spec.cluster_ip == s.spec.cluster_ips[0]
            for ip in s.spec.cluster_ips:
                assert ip not in owners
                owners[ip] = s.ref
        assert ip_records(store) == owners
    finally:
        store.close()
