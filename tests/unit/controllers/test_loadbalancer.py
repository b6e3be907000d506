"""LoadBalancer address decisions (controllers/loadbalancer.py): MetalLB's controller rules, case by case."""

from __future__ import annotations

import pytest

from podnet.api import Service, load_objects
from podnet.controllers.loadbalancer import decide, requested

POOL = ["192.168.77.192", "192.168.77.193", "192.168.77.194"]


def lb(name: str = "web", *, type_: str = "LoadBalancer", ip: str | None = None, ann: str | None = None,
       cls: str | None = None, status_ip: str | None = None) -> Service:
    spec = f"type: {type_}, selector: {{app: web}}, ports: [{{port: 80}}]"
    if ip:
        spec += f", loadBalancerIP: {ip}"
    if cls:
        spec += f", loadBalancerClass: {cls}"
    meta = f"name: {name}" + (f", annotations: {{metallb.io/loadBalancerIPs: '{ann}'}}" if ann else "")
    status = f"\nstatus: {{loadBalancer: {{ingress: [{{ip: {status_ip}}}]}}}}" if status_ip else ""
    (svc,) = load_objects(f"apiVersion: v1\nkind: Service\nmetadata: {{{meta}}}\nspec: {{{spec}}}{status}\n")
    assert isinstance(svc, Service)
    return svc


def test_a_new_service_gets_the_lowest_free_address() -> None:
    assert decide(lb(), [], {}, POOL).ips == ("192.168.77.192",)
    taken = {"192.168.77.192": "Service/default/other"}
    assert decide(lb(), [], taken, POOL).ips == ("192.168.77.193",)


def test_what_it_holds_is_kept_even_if_a_lower_one_is_free() -> None:
    taken = {"192.168.77.194": "Service/default/web"}
    assert decide(lb(), ["192.168.77.194"], taken, POOL).ips == ("192.168.77.194",)


def test_a_status_address_is_adopted_when_its_record_is_lost_but_not_from_another_owner() -> None:
    assert decide(lb(status_ip="192.168.77.193"), [], {}, POOL).ips == ("192.168.77.193",)
    other = {"192.168.77.193": "Service/default/other"}
    assert decide(lb(status_ip="192.168.77.193"), [], other, POOL).ips == ("192.168.77.192",)
    assert decide(lb(status_ip="10.0.0.1"), [], {}, POOL).ips == ("192.168.77.192",)  # not from the pool


@pytest.mark.parametrize("svc", [lb(ip="192.168.77.194"), lb(ann="192.168.77.194")],
                         ids=["spec.loadBalancerIP", "annotation"])
def test_a_requested_address_is_honoured(svc: Service) -> None:
    assert decide(svc, [], {}, POOL).ips == ("192.168.77.194",)
    # moving it: the old one is given up for the requested one
    assert decide(svc, ["192.168.77.192"], {"192.168.77.192": "Service/default/web"}, POOL).ips == ("192.168.77.194",)


@pytest.mark.parametrize(("svc", "taken", "problem"), [
    (lb(ip="10.1.2.3"), {}, "'10.1.2.3' is not allowed in config"),
    (lb(ip="192.168.77.193"), {"192.168.77.193": "Service/ns/db"}, "'192.168.77.193' is already in use by ns/db"),
    (lb(ip="192.168.77.193", ann="192.168.77.194"), {},
     "service can not have both loadBalancerIP and metallb.io/loadBalancerIPs"),
    (lb(ann="nope"), {}, "invalid IP 'nope' requested"),
    (lb(), {ip: "Service/default/x" for ip in POOL}, "no available IPs"),
])
def test_an_address_that_cannot_be_had_leaves_it_pending_with_a_reason(svc: Service, taken: dict[str, str],
                                                                      problem: str) -> None:
    d = decide(svc, [], taken, POOL)
    assert d.ips == () and d.problem == problem


def test_not_a_load_balancer_or_another_class_holds_nothing() -> None:
    held = ["192.168.77.192"]
    taken = {"192.168.77.192": "Service/default/web"}
    for svc in (lb(type_="NodePort"), lb(type_="ClusterIP"), lb(cls="example.com/other"), None):
        assert decide(svc, held, taken, POOL).ips == ()


def test_annotation_lists_are_comma_separated() -> None:
    assert requested(lb(ann="192.168.77.192, 192.168.77.193")) == (["192.168.77.192", "192.168.77.193"], "")
