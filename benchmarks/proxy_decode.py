"""What decoding a cluster costs the proxy: N Services + N EndpointSlices (10 endpoints each) -> desired state.

The proxy decodes every object of the cluster at each start (its informers' first list) and each object again
on every change. Rows, all over the same Kubernetes-shaped dicts (what the informers hand over):
  fast path   api/decode.py straight from the dicts (what the proxy runs)
  pydantic    the api/ models (Service / EndpointSlice .model_validate): the baseline, shapes only, nothing
              reduced yet; what going "through the models" would cost at least
  + join      the fast path's results joined into a DesiredState (proxy/tracker.py), for scale
The ratio column is pydantic / fast path: how much the fast path saves.

Run: .venv/bin/python benchmarks/proxy_decode.py [--sizes 1000,10000] [--reps 3]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

from podnet.api.decode import decode_endpoint_slice, decode_service
from podnet.api.endpointslice import EndpointSlice
from podnet.api.service import Service
from podnet.proxy.tracker import build_desired_state, service_ports

ENDPOINTS = 10


def objects(n: int) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    services, slices = [], []
    for i in range(n):
        services.append({
            "apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc{i}", "namespace": f"ns{i % 50}", "resourceVersion": str(i)},
            "spec": {"type": "ClusterIP", "clusterIP": f"10.96.{(i >> 8) & 255}.{i & 255}",
                     "clusterIPs": [f"10.96.{(i >> 8) & 255}.{i & 255}"], "ipFamilies": ["IPv4"],
                     "selector": {"app": f"svc{i}"},
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
        })
        eps = []
        for j in range(ENDPOINTS):
            k = i * ENDPOINTS + j
            eps.append({"addresses": [f"10.{128 + (k >> 16)}.{(k >> 8) & 255}.{k & 255}"],
                        "conditions": {"ready": True, "serving": True, "terminating": False},
                        "nodeName": f"node{j % 3}"})
        slices.append({
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": f"svc{i}-abcde", "namespace": f"ns{i % 50}",
                         "labels": {"kubernetes.io/service-name": f"svc{i}"}},
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}], "endpoints": eps,
        })
    return services, slices


def best(reps: int, fn: Callable[[], object]) -> float:
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def measure(n: int, reps: int) -> tuple[float, float, float]:
    svcs, sls = objects(n)

    def fast() -> object:
        return [decode_service(s) for s in svcs], [decode_endpoint_slice(s) for s in sls]

    def models() -> object:
        return [Service.model_validate(s) for s in svcs], [EndpointSlice.model_validate(s) for s in sls]

    def joined() -> object:
        parsed = [service_ports(decode_service(s)) for s in svcs]
        return build_desired_state(parsed, [decode_endpoint_slice(s) for s in sls], "node0")

    return best(reps, fast), best(reps, models), best(reps, joined)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sizes", default="1000,10000")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    print(f"decoding N Services + N EndpointSlices x {ENDPOINTS} endpoints; best of {args.reps}")
    print("services | fast path | pydantic models (baseline) | pydantic / fast | fast path + join")
    print("--- | --- | --- | --- | ---")
    for n in (int(s) for s in args.sizes.split(",")):
        t_fast, t_models, t_join = measure(n, args.reps)
        print(f"{n} | {t_fast * 1000:.0f} ms | {t_models * 1000:.0f} ms | {t_models / t_fast:.1f}x | "
              f"{t_join * 1000:.0f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
