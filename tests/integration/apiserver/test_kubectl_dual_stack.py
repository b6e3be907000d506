"""Dual-stack Services through the real kubectl: a dual-stack API server (two service CIDRs) and a
single-stack one. What kubectl shows and what it is refused are the API server's words (Status 422 with the
field named); a refused write stores nothing."""

from __future__ import annotations

import ipaddress
import json
import subprocess

import pytest

from tests.integration.apiserver.conftest import PODNET, Api

pytestmark = pytest.mark.integration


def manifest(name: str, **spec: object) -> str:
    body = {"selector": {"app": name}, "ports": [{"name": "http", "port": 80}]} | spec
    return json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name}, "spec": body})


def spec_of(api: Api, name: str) -> dict[str, object]:
    doc = json.loads(api.kubectl("get", "svc", name, "-o", "json").stdout)
    return doc["spec"]  # type: ignore[no-any-return]


def versions(ips: object) -> list[int]:
    assert isinstance(ips, list)
    return [ipaddress.ip_address(ip).version for ip in ips]


def test_require_dual_stack_gets_an_address_of_each_family(api_dual: Api) -> None:
    api_dual.kubectl("apply", "-f", "-", input=manifest("both", type="NodePort", ipFamilyPolicy="RequireDualStack"))
    spec = spec_of(api_dual, "both")
    assert spec["ipFamilies"] == ["IPv4", "IPv6"] and spec["ipFamilyPolicy"] == "RequireDualStack"
    assert versions(spec["clusterIPs"]) == [4, 6] and spec["clusterIP"] == spec["clusterIPs"][0]  # type: ignore[index]
    assert ipaddress.ip_address(spec["clusterIPs"][1]) in ipaddress.ip_network("fd00:10:96::/112")  # type: ignore[index]
    out = api_dual.kubectl("describe", "svc", "both").stdout
    ips = ",".join(spec["clusterIPs"])  # type: ignore[arg-type]
    assert "IP Families:" in out and "IPv4,IPv6" in out and ips in out, out
    # applying the same manifest again moves nothing
    api_dual.kubectl("apply", "-f", "-", input=manifest("both", type="NodePort", ipFamilyPolicy="RequireDualStack"))
    assert spec_of(api_dual, "both")["clusterIPs"] == spec["clusterIPs"]


def test_ipv6_first_and_an_upgrade_and_downgrade_by_patch(api_dual: Api) -> None:
    api_dual.kubectl("apply", "-f", "-", input=manifest("six", ipFamilies=["IPv6"]))
    spec = spec_of(api_dual, "six")
    assert (spec["ipFamilies"], spec["ipFamilyPolicy"], versions(spec["clusterIPs"])) == (["IPv6"], "SingleStack", [6])
    primary = spec["clusterIPs"][0]  # type: ignore[index]
    api_dual.kubectl("patch", "svc", "six", "-p", '{"spec": {"ipFamilyPolicy": "PreferDualStack"}}')
    spec = spec_of(api_dual, "six")
    assert spec["ipFamilies"] == ["IPv6", "IPv4"] and versions(spec["clusterIPs"]) == [6, 4]
    assert spec["clusterIPs"][0] == primary  # type: ignore[index]
    # releasing the secondary needs SingleStack: the API server's own message, nothing changed
    r = api_dual.kubectl("patch", "svc", "six", "--type", "json", "-p",
                         '[{"op": "remove", "path": "/spec/clusterIPs/1"}, {"op": "remove", "path": "/spec/ipFamilies/1"}]',
                         check=False)
    assert r.returncode != 0 and "spec.ipFamilyPolicy" in r.stderr and "SingleStack" in r.stderr, r.stderr
    assert versions(spec_of(api_dual, "six")["clusterIPs"]) == [6, 4]
    api_dual.kubectl("patch", "svc", "six", "-p", '{"spec": {"ipFamilyPolicy": "SingleStack"}}')
    spec = spec_of(api_dual, "six")
    assert (spec["clusterIPs"], spec["ipFamilies"]) == ([primary], ["IPv6"])


def test_changing_the_primary_address_is_refused(api_dual: Api) -> None:
    api_dual.kubectl("apply", "-f", "-", input=manifest("fixed", clusterIP="10.96.0.50",
                                                         clusterIPs=["10.96.0.50", "fd00:10:96::50"],
                                                         ipFamilyPolicy="RequireDualStack"))
    r = api_dual.kubectl("patch", "svc", "fixed", "--type", "json", "-p",
                         '[{"op": "replace", "path": "/spec/clusterIPs/1", "value": "fd00:10:96::51"}]', check=False)
    assert r.returncode != 0 and "spec.clusterIPs[1]" in r.stderr and "may not change once set" in r.stderr, r.stderr
    assert spec_of(api_dual, "fixed")["clusterIPs"] == ["10.96.0.50", "fd00:10:96::50"]


def test_a_single_stack_cluster_refuses_require_dual_stack_and_ipv6(api: Api) -> None:
    before = api.revision()
    r = api.kubectl("apply", "-f", "-", input=manifest("nope", ipFamilyPolicy="RequireDualStack"), check=False)
    assert r.returncode != 0, r.stdout
    assert 'The Service "nope" is invalid' in r.stderr and "spec.ipFamilyPolicy" in r.stderr, r.stderr
    assert "not configured for dual-stack" in r.stderr, r.stderr
    r = api.kubectl("apply", "-f", "-", input=manifest("nope6", ipFamilies=["IPv6"]), check=False)
    assert r.returncode != 0 and "spec.ipFamilies[0]" in r.stderr and "not configured" in r.stderr, r.stderr
    assert api.revision() == before
    # PreferDualStack is what it says: the one family there is
    api.kubectl("apply", "-f", "-", input=manifest("prefer", ipFamilyPolicy="PreferDualStack"))
    spec = spec_of(api, "prefer")
    assert (spec["ipFamilies"], versions(spec["clusterIPs"])) == (["IPv4"], [4])


POD = """\
apiVersion: v1
kind: Pod
metadata: {name: NAME, labels: {app: both-ends}}
spec: {containers: [{name: c, ports: [{containerPort: 80}]}]}
status:
  phase: Running
  podIP: V4
  podIPs: [{ip: V4}, {ip: V6}]
  conditions: [{type: Ready, status: "True"}]
"""


def test_slices_per_family_and_v1_endpoints_of_the_first_family(api_dual: Api) -> None:
    pods = [("p1", "10.244.1.5", "fd00:10:244:1::5"), ("p2", "10.244.2.5", "fd00:10:244:2::5")]
    text = "---\n".join(POD.replace("NAME", n).replace("V4", a).replace("V6", b) for n, a, b in pods)
    # the pods' addresses as a node agent reports them (podnet apply keeps the status given on create)
    r = subprocess.run([PODNET, "--store", api_dual.store_url, "apply", "-f", "-"], input=text,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    api_dual.kubectl("apply", "-f", "-", input=manifest("both-ends", ipFamilies=["IPv6", "IPv4"],
                                                       ipFamilyPolicy="PreferDualStack"))
    slices = json.loads(api_dual.kubectl("get", "endpointslices", "-l", "kubernetes.io/service-name=both-ends",
                                         "-o", "json").stdout)["items"]
    by_type = {s["addressType"]: sorted(a for e in s["endpoints"] for a in e["addresses"]) for s in slices}
    assert by_type == {"IPv4": ["10.244.1.5", "10.244.2.5"], "IPv6": ["fd00:10:244:1::5", "fd00:10:244:2::5"]}
    # v1 Endpoints predate dual-stack: they hold the Service's first family only (here IPv6)
    ep = json.loads(api_dual.kubectl("get", "endpoints", "both-ends", "-o", "json").stdout)
    assert [a["ip"] for s in ep["subsets"] for a in s["addresses"]] == ["fd00:10:244:1::5", "fd00:10:244:2::5"]
