"""LoadBalancer address allocation from a pool, as MetalLB's controller does it (controller/service.go).

A pure decision per Service: which pool addresses its status.loadBalancer.ingress should hold, or why it
stays pending. The lab's control plane (lab/controller.py) carries it out against the store, recording
each address under keys.lb_ip (only-if-absent, in the same commit as the status), so two writers can
never hand out one address twice and a restarted controller knows what is taken.

The rules, MetalLB's:
- only type LoadBalancer without a spec.loadBalancerClass (a class names another implementation);
- requested addresses: the metallb.io/loadBalancerIPs annotation (or its older metallb.universe.tf
  spelling; comma-separated), else the deprecated spec.loadBalancerIP; asking both ways is an error; each
  must be in the pool and not held by another Service, or the Service stays pending with a Warning
  AllocationFailed event;
- otherwise an address it holds already (its record, else its status) is kept while still in the pool,
  and a new one is the lowest free address of the pool;
- a Service that stops being a LoadBalancer (type change, deletion, a class) releases its addresses.
IPv4 only: the lab's underlay is IPv4.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from podnet.api.service import Service

IPS_ANNOTATION = "metallb.io/loadBalancerIPs"
IPS_ANNOTATION_OLD = "metallb.universe.tf/loadBalancerIPs"


@dataclass(frozen=True)
class Decision:
    ips: tuple[str, ...]  # what the Service should hold (and its status show); () = none
    problem: str = ""  # why it stays pending (the AllocationFailed event's message), "" if none


def manages(svc: Service | None) -> bool:
    """Whether this controller is the Service's load-balancer implementation."""
    if svc is None or svc.spec.type != "LoadBalancer":
        return False
    return not svc.spec.load_balancer_class


def requested(svc: Service) -> tuple[list[str], str]:
    """(addresses asked for, problem). No addresses and no problem: any address will do."""
    ann = svc.metadata.annotations
    text = ann.get(IPS_ANNOTATION) or ann.get(IPS_ANNOTATION_OLD) or ""
    spec_ip = svc.spec.load_balancer_ip or ""
    if text and spec_ip:
        return [], f"service can not have both loadBalancerIP and {IPS_ANNOTATION}"
    wanted = [t.strip() for t in text.split(",") if t.strip()] if text else ([spec_ip] if spec_ip else [])
    out = []
    for ip in wanted:
        try:
            out.append(str(ipaddress.ip_address(ip)))
        except ValueError:
            return [], f"invalid IP {ip!r} requested"
    return out, ""


def decide(svc: Service | None, held: Iterable[str], taken: Mapping[str, str], pool: list[str]) -> Decision:
    """The addresses svc should hold.

    held: the addresses recorded for it now; taken: every recorded address -> its owner (`Service/ns/name`);
    pool: the usable pool addresses, lowest first.
    """
    if not manages(svc):
        return Decision(())
    assert svc is not None
    owner = svc.ref
    in_pool = set(pool)

    def free(ip: str) -> bool:
        return taken.get(ip, owner) == owner

    wanted, problem = requested(svc)
    if problem:
        return Decision((), problem)
    if wanted:
        for ip in wanted:
            if ip not in in_pool:
                return Decision((), f"{ip!r} is not allowed in config")
            if not free(ip):
                return Decision((), f"{ip!r} is already in use by {taken[ip].removeprefix('Service/')}")
        return Decision(tuple(wanted))
    # Keep what it has while that is still valid: its record first, else the address its status shows
    # (a record lost with a store restored from backup).
    for ip in [*sorted(held), *svc.load_balancer_ips]:
        if ip in in_pool and free(ip):
            return Decision((ip,))
    for ip in pool:
        if ip not in taken:
            return Decision((ip,))
    return Decision((), "no available IPs")
