"""Field ownership, as kube-apiserver's field manager keeps it in metadata.managedFields (FieldsV1).

Every write records which fields its manager set: server-side apply as operation Apply (the fields of the
applied configuration), any other write as operation Update (the fields it changed). An apply then:
- conflicts (409, one cause per field) where it sets a field another manager owns to a different value,
  unless forced, which moves the field to the applier;
- removes the fields the same manager applied last time and no longer applies, if no one else owns them;
- merges the configuration into the live object (lists with keys merge element by element).

A field is a path of FieldsV1 steps: `f:<name>` for a map key, `k:<json of key fields>` for an element of a
keyed list (Service ports by port and protocol, containers by name, ...), with `.` marking the element itself.
Lists without keys are atomic: the list is one field. status is not tracked (it belongs to its subresource).
"""

from __future__ import annotations

import copy
import json
import time
from typing import Any

from podnet.apiserver import patch
from podnet.errors import PodnetError

Path = tuple[str, ...]
# list-map keys where they differ from the strategic-merge key (structured-merge-diff uses all of them)
LIST_MAP_KEYS: dict[tuple[str, str], tuple[str, ...]] = {
    ("Service", "spec.ports"): ("port", "protocol"),
    ("*", "spec.containers[].ports"): ("containerPort", "protocol"),
    ("*", "spec.template.spec.containers[].ports"): ("containerPort", "protocol"),
}
KEY_DEFAULTS = {"protocol": "TCP"}
_UNTRACKED_META = {"name", "namespace", "uid", "resourceVersion", "generation", "creationTimestamp",
                   "managedFields", "selfLink", "deletionTimestamp", "generateName"}


class ApplyConflict(PodnetError):
    def __init__(self, conflicts: list[tuple[str, str]]) -> None:
        self.conflicts = conflicts  # (manager, field as kubectl prints it)
        n = len(conflicts)
        lines = "\n".join(f'conflict with "{m}": {f}' for m, f in conflicts)
        super().__init__(f"Apply failed with {n} conflict{'s' if n != 1 else ''}: {lines}")


def _keys(kind: str, dotted: str) -> tuple[str, ...] | None:
    k = LIST_MAP_KEYS.get((kind, dotted)) or LIST_MAP_KEYS.get(("*", dotted))
    if k:
        return k
    mk = patch.merge_key(kind, dotted)
    return (mk,) if mk else None


def _key_step(item: dict[str, Any], names: tuple[str, ...]) -> str:
    return "k:" + json.dumps({n: item.get(n, KEY_DEFAULTS.get(n)) for n in names}, separators=(",", ":"))


def fields(obj: dict[str, Any], kind: str) -> set[Path]:
    """The set of fields an object (or an applied configuration) sets."""
    out: set[Path] = set()
    for k, v in obj.items():
        if k in ("apiVersion", "kind", "status"):
            continue
        if k == "metadata" and isinstance(v, dict):
            meta = {mk: mv for mk, mv in v.items() if mk not in _UNTRACKED_META}
            _walk(meta, kind, ("f:metadata",), "metadata", out)
        else:
            _walk_value(v, kind, (f"f:{k}",), k, out)
    return out


def _walk(d: dict[str, Any], kind: str, path: Path, dotted: str, out: set[Path]) -> None:
    for k, v in d.items():
        _walk_value(v, kind, (*path, f"f:{k}"), f"{dotted}.{k}" if dotted else k, out)


def _walk_value(v: Any, kind: str, path: Path, dotted: str, out: set[Path]) -> None:
    if isinstance(v, dict) and v:
        _walk(v, kind, path, dotted, out)
    elif isinstance(v, list) and v and all(isinstance(x, dict) for x in v) and (names := _keys(kind, dotted)):
        for item in v:
            kp = (*path, _key_step(item, names))
            out.add((*kp, "."))
            _walk(item, kind, kp, f"{dotted}[]", out)
    else:
        out.add(path)


def to_fieldsv1(paths: set[Path]) -> dict[str, Any]:
    root: dict[str, Any] = {}
    for p in sorted(paths):
        node = root
        for step in p:
            node = node.setdefault(step, {})
    return root


def from_fieldsv1(tree: Any, prefix: Path = ()) -> set[Path]:
    out: set[Path] = set()
    if not isinstance(tree, dict):
        return out
    for step, sub in tree.items():
        p = (*prefix, step)
        if step == "." or not sub:
            out.add(p)
        else:
            out |= from_fieldsv1(sub, p)
    return out


def _find(obj: Any, step: str) -> tuple[Any, Any]:
    """(container, locator) of one step in obj, or (None, None)."""
    if step.startswith("f:") and isinstance(obj, dict):
        return obj, step[2:]
    if step.startswith("k:") and isinstance(obj, list):
        want = json.loads(step[2:])
        for i, item in enumerate(obj):
            if isinstance(item, dict) and all(item.get(k, KEY_DEFAULTS.get(k)) == v for k, v in want.items()):
                return obj, i
    return None, None


def value_at(obj: Any, path: Path) -> tuple[bool, Any]:
    cur = obj
    for step in path:
        if step == ".":
            return True, cur
        container, loc = _find(cur, step)
        if container is None or (isinstance(container, dict) and loc not in container):
            return False, None
        cur = container[loc]
    return True, cur


def remove_at(obj: Any, path: Path) -> None:
    if path and path[-1] == ".":
        path = path[:-1]
    cur = obj
    for step in path[:-1]:
        container, loc = _find(cur, step)
        if container is None or (isinstance(container, dict) and loc not in container):
            return
        cur = container[loc]
    container, loc = _find(cur, path[-1])
    if container is not None and (not isinstance(container, dict) or loc in container):
        del container[loc]


def display(path: Path) -> str:
    """A field as kube-apiserver names it in a conflict: .spec.ports[port=80,protocol="TCP"].targetPort"""
    out = ""
    for step in path:
        if step == ".":
            continue
        if step.startswith("f:"):
            out += "." + step[2:]
        else:
            want = json.loads(step[2:])
            out += "[" + ",".join(f"{k}={json.dumps(v)}" for k, v in want.items()) + "]"
    return out


def _entries(obj: dict[str, Any] | None) -> list[dict[str, Any]]:
    if not obj:
        return []
    return [e for e in (obj.get("metadata", {}).get("managedFields") or []) if isinstance(e, dict)]


def _entry(manager: str, operation: str, api_version: str, paths: set[Path]) -> dict[str, Any]:
    return {"manager": manager, "operation": operation, "apiVersion": api_version,
            "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "fieldsType": "FieldsV1",
            "fieldsV1": to_fieldsv1(paths)}


def _set_entries(obj: dict[str, Any], entries: list[dict[str, Any]], old: list[dict[str, Any]]) -> None:
    """Store entries, keeping an unchanged entry's time (so an apply that changes nothing changes nothing)."""
    prev = {(e.get("manager"), e.get("operation")): e for e in old}
    out = []
    for e in entries:
        if not from_fieldsv1(e.get("fieldsV1")):
            continue
        p = prev.get((e["manager"], e["operation"]))
        if p is not None and p.get("fieldsV1") == e["fieldsV1"]:
            e = {**e, "time": p.get("time", e["time"])}
        out.append(e)
    obj.setdefault("metadata", {})["managedFields"] = out


def apply(live: dict[str, Any] | None, config: dict[str, Any], *, manager: str, force: bool,
          kind: str) -> dict[str, Any]:
    """The object after `manager` applies config to live (None: it does not exist yet)."""
    applied = fields(config, kind)
    entries = _entries(live)
    conflicts: list[tuple[str, str]] = []
    others: list[dict[str, Any]] = []
    mine_before: set[Path] = set()
    for e in entries:
        owned = from_fieldsv1(e.get("fieldsV1"))
        if e.get("manager") == manager and e.get("operation") == "Apply":
            mine_before = owned
            continue
        clash = owned & applied
        for p in sorted(clash):
            if p[-1] == ".":
                continue  # owning an element is not a value; its fields are compared one by one
            present, live_value = value_at(live, p)
            _, want = value_at(config, p)
            if present and live_value != want:
                if force:
                    owned.discard(p)
                else:
                    conflicts.append((str(e.get("manager")), display(p)))
        others.append({**e, "fieldsV1": to_fieldsv1(owned)})
    if conflicts:
        raise ApplyConflict(conflicts)
    new = copy.deepcopy(live) if live is not None else {}
    owned_by_others = set().union(*(from_fieldsv1(e["fieldsV1"]) for e in others)) if others else set()
    for p in sorted(mine_before - applied - owned_by_others, key=len, reverse=True):
        remove_at(new, p)
    body = {k: v for k, v in config.items() if k != "status"}
    new = patch.strategic_merge_patch(new, body, kind)
    api_version = str(config.get("apiVersion") or new.get("apiVersion") or "")
    _set_entries(new, [*others, _entry(manager, "Apply", api_version, applied)], entries)
    return new


def track_update(old: dict[str, Any] | None, new: dict[str, Any], *, manager: str, kind: str) -> None:
    """Record an ordinary write: manager now owns the fields it changed (taken from whoever had them)."""
    new_fields = fields(new, kind)
    changed = {p for p in new_fields if value_at(new, p) != value_at(old, p)} if old else set(new_fields)
    entries = _entries(old)
    out = []
    mine: set[Path] = set()
    for e in entries:
        owned = from_fieldsv1(e.get("fieldsV1")) & new_fields  # fields removed from the object go
        if e.get("manager") == manager and e.get("operation") == "Update":
            mine = owned
            continue
        out.append({**e, "fieldsV1": to_fieldsv1(owned - changed)})
    if changed or mine:
        out.append(_entry(manager, "Update", str(new.get("apiVersion") or ""), mine | changed))
    _set_entries(new, out, entries)
