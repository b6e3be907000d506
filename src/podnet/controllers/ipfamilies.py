"""A Service's IP families and cluster IPs before allocation: the API server's dual-stack rules, pure.

What the registry does on every Service write, in its order (pkg/registry/core/service/storage: the
update's patchAllocatedValues and normalizeClusterIPs, then the allocator's initIPFamilyFields; the
field rules of pkg/apis/core/validation ValidateServiceClusterIPsRelatedFields and the upgrade/downgrade
checks):

- `prepare(spec, old)`: a write that leaves clusterIP / clusterIPs out keeps the stored ones (a client
  that patches some other field, or `podnet apply` of a manifest without them), and clusterIP alone
  stands for clusterIPs = [clusterIP]. clusterIPs without clusterIP is refused, as upstream.
- `init_families(svc, old, configured)`: ipFamilyPolicy defaults to the stored one, else SingleStack
  (RequireDualStack for a headless Service without a selector); ipFamilies is inferred from clusterIPs
  and completed with the cluster's other family for PreferDualStack / RequireDualStack on a dual-stack
  cluster; SingleStack on an update drops the secondary IP and family; a PreferDualStack Service that
  did not change is left as it is when the cluster changed (never upgraded or downgraded behind the
  user's back). Every problem is returned, named by field, as the API server's 422 causes.

`configured` is the cluster's families, its default first (AllocatorConfig.families). Allocation itself
(which addresses, their records) stays in controllers/apply.py.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from podnet.api.service import Service, ServiceSpec
from podnet.errors import Problem

IPV4, IPV6 = "IPv4", "IPv6"
SINGLE, PREFER, REQUIRE = "SingleStack", "PreferDualStack", "RequireDualStack"
NONE = "None"


def family_of(ip: str) -> str | None:
    try:
        return IPV6 if ipaddress.ip_address(ip).version == 6 else IPV4
    except ValueError:
        return None


def _other(family: str) -> str:
    return IPV6 if family == IPV4 else IPV4


def prepare(s: ServiceSpec, old: ServiceSpec | None) -> None:
    """Carry the stored cluster IPs into a write that left them out (patchAllocatedValues), and make
    clusterIP and clusterIPs agree where the writer plainly meant one of them (normalizeClusterIPs)."""
    if old is None or s.type == "ExternalName" or old.type == "ExternalName":
        if s.cluster_ip and not s.cluster_ips:  # a client that knows only the singular field
            s.cluster_ips = [s.cluster_ip]
        return
    old_ip, old_ips = old.cluster_ip or "", list(old.cluster_ips)
    if not s.cluster_ip:
        s.cluster_ip = old.cluster_ip
    if not s.cluster_ips and old_ips:
        s.cluster_ips = old_ips
    if (s.cluster_ip or "") != old_ip and s.cluster_ip and s.cluster_ips == old_ips:
        s.cluster_ips = [s.cluster_ip]  # the singular field changed, the plural came along untouched
    if s.cluster_ip and not s.cluster_ips:
        s.cluster_ips = [s.cluster_ip]


def _is_headless(s: ServiceSpec) -> bool:
    return s.cluster_ips == [NONE] or s.cluster_ip == NONE


def _field_checks(svc: Service) -> list[Problem]:
    """ValidateServiceClusterIPsRelatedFields: the fields as written (after prepare), before anything is
    inferred."""
    s, ref, out = svc.spec, svc.ref, []
    seen: set[str] = set()
    # (each family's and the policy's value were checked with the object: api/validation.py)
    for i, fam in enumerate(s.ip_families):
        if fam in seen:
            out.append(Problem(f"spec.ipFamilies[{i}]", fam, "Duplicate value", ref))
        seen.add(fam)
    if s.cluster_ip and s.cluster_ips and s.cluster_ips[0] != s.cluster_ip:
        out.append(Problem("spec.clusterIPs", s.cluster_ips, "first value must match `clusterIP`", ref))
    elif not s.cluster_ip and s.cluster_ips:
        out.append(Problem("spec.clusterIPs", s.cluster_ips, "must be empty when `clusterIP` is not specified", ref))
    bad_ip = False
    for i, ip in enumerate(s.cluster_ips):
        if i == 0 and ip == NONE:
            if len(s.cluster_ips) > 1:
                bad_ip = True
                out.append(Problem("spec.clusterIPs", s.cluster_ips, "'None' must be the first and only value", ref))
            continue
        if family_of(ip) is None:
            bad_ip = True
            out.append(Problem(f"spec.clusterIPs[{i}]", ip, "must be a valid IP address", ref))
    if len(s.cluster_ips) > 2:
        out.append(Problem("spec.clusterIPs", s.cluster_ips, "may only hold up to 2 values", ref))
    if bad_ip or out:
        return out
    if len(s.cluster_ips) == 2 and family_of(s.cluster_ips[0]) == family_of(s.cluster_ips[1]):
        out.append(Problem("spec.clusterIPs", s.cluster_ips, "may specify no more than one IP for each IP family", ref))
    if not _is_headless(s):
        for i, (ip, fam) in enumerate(zip(s.cluster_ips, s.ip_families, strict=False)):
            if fam in (IPV4, IPV6) and family_of(ip) != fam:
                out.append(Problem(f"spec.clusterIPs[{i}]", ip, f"expected an {fam} value as indicated by "
                                   f"`ipFamilies[{i}]`", ref))
    return out


def _unchanged_prefer(s: ServiceSpec, o: ServiceSpec) -> bool:
    """isMatchingPreferDualStackClusterIPFields: a PreferDualStack Service written back as it was."""
    return (o.ip_family_policy == PREFER and s.ip_family_policy == PREFER and s.type == o.type
            and s.cluster_ips == o.cluster_ips and s.ip_families == o.ip_families)


def _upgrade_downgrade(s: ServiceSpec, o: ServiceSpec, ref: str) -> list[Problem]:
    """validateUpgradeDowngradeClusterIPs / ...IPFamilies: the primary never changes; the secondary goes
    only with ipFamilyPolicy SingleStack."""
    out: list[Problem] = []
    if _is_headless(o) and _is_headless(s):
        return out
    old_ips, ips = o.cluster_ips, s.cluster_ips
    if old_ips and not _is_headless(o):
        if not ips:
            out.append(Problem("spec.clusterIPs[0]", ips, "primary clusterIP can not be unset", ref))
        elif ips[0] != old_ips[0]:
            # podnet has always named the singular field for a changed primary address
            out.append(Problem("spec.clusterIP", ips[0], f"field is immutable (is {old_ips[0]})", ref))
        elif len(ips) == len(old_ips) == 2 and ips[1] != old_ips[1]:
            out.append(Problem("spec.clusterIPs[1]", ips[1], f"may not change once set (is {old_ips[1]})", ref))
    if _is_headless(o) != _is_headless(s) or _is_headless(s):
        return out
    old_fams, fams = o.ip_families, s.ip_families
    if old_fams and fams and fams[0] != old_fams[0]:
        out.append(Problem("spec.ipFamilies[0]", fams[0], f"may not change once set (is {old_fams[0]})", ref))
    elif len(old_fams) == len(fams) == 2 and fams[1] != old_fams[1]:
        out.append(Problem("spec.ipFamilies[1]", fams[1], f"may not change once set (is {old_fams[1]})", ref))
    return out


def init_families(svc: Service, old: Service | None, configured: Sequence[str]) -> list[Problem]:
    """Set ipFamilyPolicy and ipFamilies of a ClusterIP / NodePort / LoadBalancer Service (after
    prepare); trim clusterIPs on a downgrade. Returns the problems; nothing else is changed then."""
    s, ref = svc.spec, svc.ref
    o = old.spec if old is not None and old.spec.type != "ExternalName" else None
    if s.ip_family_policy is None:
        if o is not None and o.ip_family_policy:
            s.ip_family_policy = o.ip_family_policy
        elif _is_headless(s) and not s.selector:
            s.ip_family_policy = REQUIRE  # headless without a selector: its slices are the user's, any family
        else:
            s.ip_family_policy = SINGLE
    if o is not None and not s.ip_families:
        s.ip_families = list(o.ip_families)  # a write that left the families out keeps them
    if o is not None and _unchanged_prefer(s, o):
        return []
    problems = _field_checks(svc)
    if problems:
        return problems
    if o is not None:
        if s.ip_family_policy == SINGLE:
            # the clear intent to release the secondary, as long as nothing else about the fields changed
            if s.cluster_ips == o.cluster_ips and len(s.cluster_ips) > 1:
                s.cluster_ips = s.cluster_ips[:1]
            if s.ip_families == o.ip_families and len(s.ip_families) > 1:
                s.ip_families = s.ip_families[:1]
        else:
            if len(s.cluster_ips) < len(o.cluster_ips) and not _is_headless(o):
                problems.append(Problem("spec.ipFamilyPolicy", s.ip_family_policy,
                                        "must be 'SingleStack' to release the secondary cluster IP", ref))
            if len(s.ip_families) < len(o.ip_families):
                problems.append(Problem("spec.ipFamilyPolicy", s.ip_family_policy,
                                        "must be 'SingleStack' to release the secondary IP family", ref))
    if s.ip_family_policy == SINGLE:
        if len(s.cluster_ips) == 2:
            problems.append(Problem("spec.ipFamilyPolicy", s.ip_family_policy, "must be 'RequireDualStack' or "
                                    "'PreferDualStack' when multiple cluster IPs are specified", ref))
        if len(s.ip_families) == 2:
            problems.append(Problem("spec.ipFamilyPolicy", s.ip_family_policy, "must be 'RequireDualStack' or "
                                    "'PreferDualStack' when multiple IP families are specified", ref))
    for i, ip in enumerate(s.cluster_ips):
        if ip == NONE:
            break
        fam = family_of(ip)
        assert fam is not None  # _field_checks
        if i >= len(s.ip_families):
            if fam not in configured:
                problems.append(Problem(f"spec.clusterIPs[{i}]", ip, f"{fam} is not configured on this cluster", ref))
            else:
                s.ip_families.append(fam)
    if problems:
        return problems
    if _is_headless(s) and not s.selector:
        # a headless Service without a selector may name families the cluster does not have
        if not s.ip_families:
            s.ip_families = [configured[0]]
        if len(s.ip_families) < 2 and s.ip_family_policy != SINGLE:
            s.ip_families.append(_other(s.ip_families[0]))
        return _upgrade_downgrade(s, o, ref) if o is not None else []
    if s.ip_family_policy == REQUIRE and len(configured) < 2:
        problems.append(Problem("spec.ipFamilyPolicy", s.ip_family_policy,
                                "this cluster is not configured for dual-stack services (give --service-cidr an "
                                "IPv4 and an IPv6 CIDR)", ref))
    for i, fam in enumerate(s.ip_families):
        if fam not in configured:
            problems.append(Problem(f"spec.ipFamilies[{i}]", fam, "not configured on this cluster", ref))
    if problems:
        return problems
    if not s.ip_families:
        s.ip_families = [configured[0]]
    if s.ip_family_policy != SINGLE and len(s.ip_families) == 1 and len(configured) == 2:
        s.ip_families.append(_other(s.ip_families[0]))
    return _upgrade_downgrade(s, o, ref) if o is not None else []


__all__ = ["IPV4", "IPV6", "PREFER", "REQUIRE", "SINGLE", "family_of", "init_families", "prepare"]
