"""Write src/podnet/apiserver/pbschema.py: the protobuf field table of the kinds the API server serves.

client-go's typed clients (kubectl create configmap, kubectl run, ...) send Kubernetes' protobuf encoding and
do not fall back to JSON on a 415. The table says, for every message reachable from those kinds, which field
number is which JSON field, its wire type, whether it repeats, and whether Go's JSON encoder would omit its
zero value (a non-pointer field tagged omitempty): the decoder then gives exactly the JSON object the client
meant. It is derived from a checkout of k8s.io/api and k8s.io/apimachinery (their generated.proto for numbers
and types, their Go struct tags for pointer-ness and omitempty):

    python tools/gen_pbschema.py /path/to/kubernetes/api /path/to/kubernetes/apimachinery
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

ROOTS = [
    "core.v1.Namespace", "core.v1.ConfigMap", "core.v1.Pod", "core.v1.Service", "core.v1.Node", "core.v1.Event",
    "core.v1.Endpoints", "apps.v1.Deployment", "apps.v1.StatefulSet", "discovery.v1.EndpointSlice",
    "apis.meta.v1.DeleteOptions",
]
# Messages the decoder turns into JSON scalars itself (their JSON form is not their protobuf form).
SPECIAL = {"apis.meta.v1.Time", "apis.meta.v1.MicroTime", "apis.meta.v1.Duration", "api.resource.Quantity",
           "util.intstr.IntOrString", "runtime.RawExtension", "apis.meta.v1.FieldsV1"}
PROTOS = {  # proto package dir -> (repo index, proto path, Go package dir)
    "core.v1": (0, "core/v1"), "apps.v1": (0, "apps/v1"), "discovery.v1": (0, "discovery/v1"),
    "apis.meta.v1": (1, "pkg/apis/meta/v1"), "api.resource": (1, "pkg/api/resource"),
    "util.intstr": (1, "pkg/util/intstr"), "runtime": (1, "pkg/runtime"),
}
SCALARS = {"string", "bytes", "bool", "int32", "int64", "uint32", "uint64", "double", "float", "fixed64"}
FIELD = re.compile(r"^\s*(optional|repeated)?\s*(map<\s*([\w.]+)\s*,\s*([\w.]+)\s*>|[\w.]+)\s+(\w+)\s*=\s*(\d+)\s*;")
GOFIELD = re.compile(r'^\s*(\w+)\s+(\S+)\s+`json:"([^"]*)".*protobuf:"[^"]*name=(\w+)')


def short(name: str, pkg: str) -> str:
    if name in SCALARS:
        return name
    if not name.startswith("."):
        return f"{pkg}.{name}" if "." not in name else name
    for prefix in (".k8s.io.api.", ".k8s.io.apimachinery.pkg."):
        if name.startswith(prefix):
            return name[len(prefix):]
    raise SystemExit(f"unknown package of {name}")


def parse_protos(repos: list[Path]) -> dict[str, list[tuple[int, str, str, str, bool]]]:
    msgs: dict[str, list[tuple[int, str, str, str, bool]]] = {}
    for pkg, (ri, d) in PROTOS.items():
        cur = None
        depth = 0
        for line in (repos[ri] / d / "generated.proto").read_text().splitlines():
            s = line.split("//")[0]
            if depth == 0 and (m := re.match(r"^message (\w+) \{", s)):
                cur, depth = f"{pkg}.{m.group(1)}", 1
                msgs[cur] = []
                continue
            if cur is None:
                continue
            if (m := FIELD.match(s)) and depth == 1:
                label, typ, mk, mv, fname, num = m.groups()
                if mk:
                    msgs[cur].append((int(num), fname, "map", f"{short(mk, pkg)},{short(mv, pkg)}", False))
                else:
                    msgs[cur].append((int(num), fname, "t", short(typ, pkg), label == "repeated"))
            depth += s.count("{") - s.count("}")
            if depth == 0:
                cur = None
    return msgs


def parse_go(repos: list[Path]) -> dict[tuple[str, str], tuple[bool, bool]]:
    """(message, json field) -> (Go pointer, omitempty)."""
    out: dict[tuple[str, str], tuple[bool, bool]] = {}
    for pkg, (ri, d) in PROTOS.items():
        for f in sorted((repos[ri] / d).glob("*.go")):
            if f.name.endswith("_test.go") or f.name.startswith("zz_") or f.name.startswith("generated"):
                continue
            struct = None
            for line in f.read_text().splitlines():
                if m := re.match(r"^type (\w+) struct \{", line):
                    struct = m.group(1)
                elif line.startswith("}"):
                    struct = None
                elif struct and (m := GOFIELD.match(line)):
                    _, gotype, jtag, pname = m.groups()
                    out[(f"{pkg}.{struct}", pname)] = (gotype.startswith("*"), "omitempty" in jtag.split(",")[1:])
    return out


def main() -> None:
    repos = [Path(a) for a in sys.argv[1:3]]
    msgs, go = parse_protos(repos), parse_go(repos)
    want, todo = set(), list(ROOTS)
    while todo:
        m = todo.pop()
        if m in want:
            continue
        want.add(m)
        if m in SPECIAL:
            continue
        for _, _, kind, typ, _ in msgs[m]:
            for t in typ.split(",") if kind == "map" else [typ]:
                if t not in SCALARS:
                    todo.append(t)
    lines = [
        '"""Protobuf field table of the kinds the API server decodes, generated by tools/gen_pbschema.py from',
        'k8s.io/api and k8s.io/apimachinery; do not edit by hand.',
        "",
        "message -> {field number: (JSON name, type, repeated, omit zero)}; type is a scalar name, another",
        'message, or "map:K,V"; "omit zero" marks a non-pointer omitempty field (Go\'s JSON drops its zero value).',
        '"""',
        "",
        "# ruff: noqa: E501",
        "SCHEMA: dict[str, dict[int, tuple[str, str, bool, bool]]] = {",
    ]
    for m in sorted(want - SPECIAL):
        fields = []
        for num, name, kind, typ, rep in sorted(msgs[m]):
            ptr, omit = go.get((m, name), (False, False))
            t = f"map:{typ}" if kind == "map" else typ
            fields.append(f"{num}: ({name!r}, {t!r}, {rep}, {omit and not ptr})")
        lines.append(f"    {m!r}: {{{', '.join(fields)}}},")
    lines.append("}")
    lines.append(f"ROOTS = {sorted(r for r in ROOTS if r != 'apis.meta.v1.DeleteOptions')!r}")
    Path("src/podnet/apiserver/pbschema.py").write_text("\n".join(lines) + "\n")
    print(f"{len(want - SPECIAL)} messages")


if __name__ == "__main__":
    main()
