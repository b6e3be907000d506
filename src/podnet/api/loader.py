"""Read resources the way `kubectl apply -f` does, and write them the way `kubectl get -o yaml|json` does.

Input: multi-document YAML, JSON, `kind: List`, a file or a directory of .yaml/.yml/.json files. Every
problem in every document is collected (malformed YAML, unknown kind, wrong apiVersion, wrong types,
Kubernetes' validation rules) and raised once as a ValidationError: a user fixes a file in one round.
Nothing here raises anything else, whatever the input: the hypothesis tests hold it to that.
"""

from __future__ import annotations

import copy
import gc
import json
import os
import re
import sys
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pydantic
import yaml

from podnet.api.cluster import ConfigMap, Event, Namespace
from podnet.api.daemonset import DaemonSet
from podnet.api.deployment import Deployment
from podnet.api.endpointslice import EndpointSlice
from podnet.api.meta import Resource, UnknownFieldProbe, unknown_fields
from podnet.api.node import Node
from podnet.api.pod import Pod
from podnet.api.rbac import ClusterRole, ClusterRoleBinding, ServiceAccount
from podnet.api.service import Service
from podnet.api.statefulset import StatefulSet
from podnet.api.validation import validate
from podnet.errors import Problem, ValidationError

KINDS: dict[str, type[Resource]] = {
    cls.KIND: cls for cls in (Service, EndpointSlice, Pod, Node, Deployment, StatefulSet, Namespace, ConfigMap, Event)
}
# Stored for deploy/'s manifests, shapes only (api/rbac.py, api/daemonset.py).
KINDS.update({cls.KIND: cls for cls in (ServiceAccount, ClusterRole, ClusterRoleBinding, DaemonSet)})

# Resource limits on input, checked before any object is built.
# - MAX_OBJECT_BYTES: kube-apiserver refuses a request body over 3 MiB; kubectl sends one object per
#   request, so each object (as compact JSON, what would be sent) is held to it.
# - MAX_NODES: the nodes a document has once every alias is expanded. PyYAML builds an alias as a shared
#   reference, so a "billion laughs" document loads small and blows up only in whatever walks it as a tree
#   (pydantic, deepcopy, json): 1.5 GB and 30 s before this cap. 3 MiB of JSON holds at most ~1.5M nodes
#   (a node is at least 2 bytes), so no legitimate object gets near 1M.
MAX_OBJECT_BYTES = 3 * 1024 * 1024
MAX_NODES = 1_000_000
# The loader that parses (for the alias cap) and builds the documents: one name, so both use the same
# parser. libyaml's CSafeLoader reads a 10 MB manifest about 15x faster than the pure-Python SafeLoader;
# PyYAML falls back to the latter where it was built without libyaml.
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
FILE_SUFFIXES = (".yaml", ".yml", ".json")
_UNION_TAGS = {"int", "str", "bool", "float", "list", "dict", "none", "constrained-int"}


@dataclass
class Loaded:
    objects: list[Resource] = field(default_factory=list)
    problems: list[Problem] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def raise_for_problems(self) -> list[Resource]:
        if self.problems:
            raise ValidationError(self.problems)
        return self.objects


def load_objects(source: str | Path | bytes, *, check: bool = True) -> list[Resource]:
    """Objects from YAML/JSON text, a file or a directory. Raises ValidationError listing every problem.

    check=False only checks shapes (types, kinds), not Kubernetes' rules: for inputs such as
    kube-proxy's test fixtures that were never meant to pass the API server.
    """
    return load(source, check=check).raise_for_problems()


def load(source: str | Path | bytes, *, check: bool = True, name: str = "<input>") -> Loaded:
    """Like load_objects, but returns problems and unknown-field warnings instead of raising.

    name: what problems call text or bytes given as such (the file's path, when the caller read it).
    """
    out = Loaded()
    with paused_gc():
        if isinstance(source, bytes):
            _load_text(_decode(source, name, out), name, check, out)
        elif isinstance(source, Path) or ("\n" not in source and source != "" and os.path.exists(source)):
            _load_path(Path(source), check, out)
        else:
            _load_text(source, name, check, out)
    return out


def load_paths(paths: Iterable[str], *, check: bool = True) -> Loaded:
    """Several -f arguments: each a file, a directory or "-" (stdin)."""
    out = Loaded()
    with paused_gc():
        for p in paths:
            if p == "-":
                _load_text(_decode(sys.stdin.buffer.read(), "<stdin>", out), "<stdin>", check, out)
            else:
                _load_path(Path(p), check, out)
    return out


@contextmanager
def paused_gc() -> Iterator[None]:
    """The cyclic garbage collector off while a bulk of objects is built, back on (if it was) afterwards.

    Parsed documents and models hold no reference cycles, so reference counting frees them; but each of
    the collector's full passes walks the whole heap, and building 10k Services x 10 endpoints triggers
    several: they took 2.7 s of the 3.2 s of building the models (benchmarks/load.py). Nests, and
    restores the collector on errors too.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


@dataclass(frozen=True)
class ObjectRef:
    """Which object a document names: what `delete -f` needs, read without building the object."""

    kind: str
    namespace: str | None  # as written; None when not given (or a cluster-scoped kind)
    name: str
    where: str  # the file (and document) it came from


def load_refs(paths: Iterable[str]) -> tuple[list[ObjectRef], list[Problem]]:
    """The objects the documents of several -f arguments name, and a problem for each document that names
    none podnet knows (an unknown kind or apiVersion, no name, unreadable YAML).

    As `kubectl delete -f`: a document is identified by apiVersion, kind, namespace and name only; the rest
    of it is neither validated nor decoded, so a manifest podnet would refuse to apply (an unsupported
    field, a wrong value) can still be deleted, and one bad document does not block the others.
    """
    out = Loaded()
    refs: list[ObjectRef] = []
    for p in paths:
        if p == "-":
            texts = [("<stdin>", _decode(sys.stdin.buffer.read(), "<stdin>", out))]
        else:
            texts = [(str(f), _decode(data, str(f), out)) for f, data in _read_path(Path(p), out)]
        for source, text in texts:
            for where, doc in _documents(text, source, out):
                _ref_of(doc, where, refs, out.problems)
    return refs, out.problems


def _read_path(path: Path, out: Loaded) -> list[tuple[Path, bytes]]:
    """(file, bytes) of a -f argument: the file, or a directory's .yaml/.yml/.json files."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in FILE_SUFFIXES)
        if not files:
            out.problems.append(Problem(field="-f", value=str(path), reason="no .yaml, .yml or .json files in directory"))
        return [item for f in files for item in _read_path(f, out)]
    try:
        return [(path, path.read_bytes())]
    except OSError as e:
        out.problems.append(Problem(field="-f", value=str(path), reason=e.strerror or str(e)))
        return []


def _ref_of(doc: Any, where: str, refs: list[ObjectRef], problems: list[Problem]) -> None:
    if not isinstance(doc, dict):
        problems.append(Problem(field="(document)", value=_short(doc),
                                reason="must be an object with apiVersion, kind and metadata", obj=where))
        return
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if kind == "List" or (isinstance(kind, str) and kind.endswith("List") and isinstance(doc.get("items"), list)):
        for j, item in enumerate(doc.get("items") or []):
            _ref_of(item, f"{where} items[{j}]", refs, problems)
        return
    obj_name = _describe(doc)
    cls = KINDS.get(kind) if isinstance(kind, str) else None
    if cls is None:
        problems.append(Problem(field="kind", value=_short(kind), obj=obj_name,
                                reason=f"no kind {kind!r} is known to podnet (known: {', '.join(sorted(KINDS))})"
                                if isinstance(kind, str) and kind else "Required value"))
        return
    if api_version != cls.API_VERSION:
        problems.append(Problem(field="apiVersion", value=_short(api_version), obj=obj_name,
                                reason=f"no kind {kind!r} is registered for version {api_version!r} "
                                       f"(use {cls.API_VERSION!r})"))
        return
    raw_meta = doc.get("metadata")
    meta = raw_meta if isinstance(raw_meta, dict) else {}
    name, ns = meta.get("name"), meta.get("namespace")
    if not isinstance(name, str) or not name:
        problems.append(Problem(field="metadata.name", value=_short(name) if name else None,
                                reason="Required value" if not name else "must be a string", obj=obj_name))
        return
    namespace = ns if cls.NAMESPACED and isinstance(ns, str) and ns else None
    refs.append(ObjectRef(cls.KIND, namespace, name, where))  # KINDS is keyed by KIND: this is kind


def _decode(data: bytes, source: str, out: Loaded) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        out.problems.append(Problem(field="(file)", value=None, reason=f"not UTF-8 text: {e}", obj=source))
        return ""


def _load_path(path: Path, check: bool, out: Loaded) -> None:
    for f, data in _read_path(path, out):
        _load_text(_decode(data, str(f), out), str(f), check, out)


class _TooBig(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# Where an alias can start: a '*' followed by a character of an anchor name, at the start of the text or
# after whitespace (a line break too), a flow indicator, ':' or '?'. A wildcard in quotes (`verbs: ["*"]`)
# or in a word is none. Matching more than aliases only costs a scan; a test holds it to the parsers.
_STAR_ANCHOR = re.compile(r"\*[\w-]")  # a literal first: found at memchr speed, unlike a leading class
_BEFORE_ALIAS = "\ufeff[]{},:?"


def _may_hold_alias(text: str) -> bool:
    for m in _STAR_ANCHOR.finditer(text):
        i = m.start()
        if i == 0 or text[i - 1].isspace() or text[i - 1] in _BEFORE_ALIAS:
            return True
    return False


def _check_expansion(text: str) -> None:
    """Refuse a YAML stream whose documents expand past MAX_NODES through aliases, before it is built.

    Works on the parser's event stream (yaml.parse), not on the composer or constructor, so the same
    check holds whichever loader builds the objects afterwards: the pure-Python SafeLoader, or
    CSafeLoader (whose composer is C and cannot be hooked): both use _YAML_LOADER.
    Each anchor's expanded size is remembered; an alias adds it (merge keys `<<: *a` are aliases too,
    so merge bombs are counted the same way). Stops at the first event over the cap: a bomb costs the
    events up to the cap, not its expansion. Text where no alias can start is not scanned (scanning
    a 10k-Service manifest costs 2.5 s, as much again as loading it): see _may_hold_alias.
    """
    if not _may_hold_alias(text):
        return
    sizes: dict[str, int] = {}  # anchor -> nodes it stands for, expanded
    stack: list[list[Any]] = []  # open collections: [anchor, expanded size so far]
    total = 0  # nodes of the current document, expanded

    def count(n: int) -> None:
        nonlocal total
        total += n
        if stack:
            stack[-1][1] += n
        if total > MAX_NODES:
            raise _TooBig(f"document contains excessive aliasing: it expands to more than {MAX_NODES} nodes")

    for ev in yaml.parse(text, Loader=_YAML_LOADER):
        if isinstance(ev, yaml.DocumentStartEvent):
            total = 0
        elif isinstance(ev, yaml.AliasEvent):
            if ev.anchor in sizes:
                count(sizes[ev.anchor])
            elif any(a == ev.anchor for a, _ in stack):
                raise _TooBig(f"alias *{ev.anchor} refers to a node that contains it (a recursive document)")
            # else undefined: the loader reports it, with its position
        elif isinstance(ev, yaml.ScalarEvent):
            if ev.anchor is not None:
                sizes[ev.anchor] = 1
            count(1)
        elif isinstance(ev, yaml.CollectionStartEvent):
            count(1)
            stack.append([ev.anchor, 1])
        elif isinstance(ev, yaml.CollectionEndEvent):
            anchor, n = stack.pop()
            if anchor is not None:
                sizes[anchor] = n
            if stack:
                stack[-1][1] += n - 1  # its own node was counted into the parent at its start


def _json_size(doc: Any) -> int:
    return len(json.dumps(doc, separators=(",", ":"), default=str, ensure_ascii=False).encode())


def _load_text(text: str, source: str, check: bool, out: Loaded) -> None:
    for where, doc in _documents(text, source, out):
        _load_doc(doc, where, check, out)


def _documents(text: str, source: str, out: Loaded) -> list[tuple[str, Any]]:
    """The documents of one YAML/JSON text with where each came from, within the input limits; what
    cannot be read goes to out.problems."""
    docs: list[Any]
    try:
        stripped = text.lstrip()
        if stripped.startswith(("{", "[")):
            try:
                docs = [json.loads(text)]
            except ValueError:
                _check_expansion(text)
                docs = list(yaml.load_all(text, Loader=_YAML_LOADER))
        else:
            _check_expansion(text)
            docs = list(yaml.load_all(text, Loader=_YAML_LOADER))
    except _TooBig as e:
        out.problems.append(Problem(field="(yaml)", value=None, reason=e.reason, obj=source))
        return []
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        out.problems.append(Problem(field="(yaml)", value=None, reason=f"{where}{problem}", obj=source))
        return []
    except (RecursionError, ValueError, TypeError) as e:
        out.problems.append(Problem(field="(yaml)", value=None, reason=f"cannot parse: {e}", obj=source))
        return []
    found: list[tuple[str, Any]] = []
    for i, doc in enumerate(docs):
        if doc is None:
            continue  # empty document, as between two `---`
        where = source if len(docs) == 1 else f"{source} (document {i + 1})"
        items = doc.get("items") if _is_list(doc) else None
        if isinstance(items, list):  # kubectl sends a List's items one by one: each is held to the limit
            kept = [item for j, item in enumerate(items) if _fits(item, f"{where} items[{j}]", out)]
            found.append((where, {**doc, "items": kept}))
        elif _fits(doc, where, out):
            found.append((where, doc))
    return found


def _is_list(doc: Any) -> bool:
    """A List document (`kind: List`, or a typed list such as ServiceList, with items)."""
    if not isinstance(doc, dict):
        return False
    kind = doc.get("kind")
    return kind == "List" or (isinstance(kind, str) and kind.endswith("List") and "items" in doc)


def _surely_fits(doc: Any) -> bool:
    """A quick yes for an object far below the request limit: orjson's compact encoding is ~10x faster
    than the json module's, and never less than half as long (only NaN and infinities shrink: -Infinity
    to null), so a third of the limit leaves room. Whatever orjson refuses (integers over 64 bits, lone
    surrogates, deep nesting) gets no quick answer and is measured exactly."""
    try:
        return len(orjson.dumps(doc, default=str, option=orjson.OPT_NON_STR_KEYS)) <= MAX_OBJECT_BYTES // 3
    except TypeError:  # orjson.JSONEncodeError is a TypeError
        return False


def _fits(doc: Any, where: str, out: Loaded) -> bool:
    """Is one object within the request limit (as compact JSON, what would be sent)? Else a problem."""
    if _surely_fits(doc):
        return True
    try:
        size = _json_size(doc)
    except (RecursionError, ValueError) as e:  # a recursive document, or nesting too deep to encode
        out.problems.append(Problem(field="(document)", value=None, reason=f"cannot read: {e}", obj=where))
        return False
    if size > MAX_OBJECT_BYTES:
        out.problems.append(Problem(
            field="(document)", value=None,
            reason=f"object is {size} bytes, over the request limit of {MAX_OBJECT_BYTES} bytes (3 MiB)",
            obj=_describe(doc) if isinstance(doc, dict) else where))
        return False
    return True


def _describe(doc: dict[str, Any]) -> str:
    """`Kind/namespace/name` from a raw document, as far as it can be read."""
    raw_kind, raw_meta = doc.get("kind"), doc.get("metadata")
    kind = raw_kind if isinstance(raw_kind, str) else "?"
    meta = raw_meta if isinstance(raw_meta, dict) else {}
    raw_name, raw_ns = meta.get("name"), meta.get("namespace")
    name = raw_name if isinstance(raw_name, str) else "?"
    cls = KINDS.get(kind)
    if cls is not None and not cls.NAMESPACED:
        return f"{kind}/{name}"
    ns = raw_ns if isinstance(raw_ns, str) and raw_ns else "default"
    return f"{kind}/{ns}/{name}"


def _load_doc(doc: Any, where: str, check: bool, out: Loaded) -> None:
    if not isinstance(doc, dict):
        out.problems.append(Problem(
            field="(document)", value=_short(doc),
            reason="must be an object with apiVersion, kind and metadata", obj=where))
        return
    kind, api_version = doc.get("kind"), doc.get("apiVersion")
    if _is_list(doc):
        items = doc.get("items")
        if items is None:
            return
        if not isinstance(items, list):
            out.problems.append(Problem(field="items", value=_short(items), reason="must be a list", obj=where))
            return
        for j, item in enumerate(items):
            _load_doc(item, f"{where} items[{j}]", check, out)
        return
    obj_name = _describe(doc)
    if not isinstance(api_version, str) or not api_version:
        out.problems.append(Problem(field="apiVersion", value=_short(api_version), reason="Required value", obj=obj_name))
    if not isinstance(kind, str) or not kind:
        out.problems.append(Problem(field="kind", value=_short(kind), reason="Required value", obj=obj_name))
        return
    cls = KINDS.get(kind)
    if cls is None:
        out.problems.append(Problem(
            field="kind", value=kind,
            reason=f"no kind {kind!r} is known to podnet (known: {', '.join(sorted(KINDS))})", obj=obj_name))
        return
    if isinstance(api_version, str) and api_version and api_version != cls.API_VERSION:
        out.problems.append(Problem(
            field="apiVersion", value=api_version,
            reason=f"no kind {kind!r} is registered for version {api_version!r} (use {cls.API_VERSION!r})",
            obj=obj_name))
        return
    probe = UnknownFieldProbe()
    obj, type_problems = _build(cls, doc, obj_name, probe)
    out.problems.extend(type_problems)
    if obj is None:
        return
    if probe.found:
        out.warnings.extend(f"{obj.ref}: unknown field {f!r}" for f in unknown_fields(obj))
    if check:
        # A field with a type error was dropped to build the object; its default must not add a
        # second, misleading problem on the same path.
        bad = [p.field for p in type_problems]
        out.problems.extend(
            p for p in validate(obj) if not any(p.field == b or p.field.startswith((b + ".", b + "[")) for b in bad)
        )
    if not type_problems:
        out.objects.append(obj)


def _build(
    cls: type[Resource], doc: dict[str, Any], obj_name: str, probe: UnknownFieldProbe
) -> tuple[Resource | None, list[Problem]]:
    """The object, plus a problem per wrongly typed field; probe notes whether it has unknown fields.

    pydantic stops at type errors; to still report Kubernetes' rules for the rest of the object (every
    problem in one round), the offending fields are dropped from a copy and the object built again.
    """
    problems: list[Problem] = []
    try:
        return cls.model_validate(doc, context=probe), problems  # the common case: no copy needed
    except pydantic.ValidationError:
        pass
    except (RecursionError, ValueError, TypeError) as e:
        return None, [Problem(field="(document)", value=None, reason=f"cannot read: {e}", obj=obj_name)]
    try:
        work = copy.deepcopy(doc)
    except (RecursionError, TypeError, ValueError) as e:
        return None, [Problem(field="(document)", value=None, reason=f"cannot read: {e}", obj=obj_name)]
    for _ in range(8):
        probe.found = False  # what an attempt that failed saw is not in the object
        try:
            return cls.model_validate(work, context=probe), problems
        except pydantic.ValidationError as e:
            problems.extend(p for p in _from_pydantic(e, obj_name) if p not in problems)
            if not all(_drop(work, tuple(err["loc"])) for err in e.errors(include_url=False)):
                return None, problems
        except (RecursionError, ValueError, TypeError) as e:
            problems.append(Problem(field="(document)", value=None, reason=f"cannot read: {e}", obj=obj_name))
            return None, problems
    return None, problems


def _drop(doc: Any, loc: tuple[int | str, ...]) -> bool:
    """Remove the dict entry holding the value at loc (a whole list if the bad value is an element)."""
    parts = [p for p in loc if not (isinstance(p, str) and (p in _UNION_TAGS or "[" in p))]
    node, holder, key = doc, None, None
    for part in parts:
        if isinstance(node, dict) and isinstance(part, str) and part in node:
            holder, key, node = node, part, node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            node = node[part]
        else:
            break  # a missing required field, or a path we cannot follow: drop what we reached
    if holder is None or key is None:
        return False
    del holder[key]
    return True


def _field_path(loc: tuple[int | str, ...]) -> str:
    path = ""
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        elif part in _UNION_TAGS or "[" in part:
            continue  # pydantic names the union member it tried; Kubernetes paths don't
        else:
            path += f".{part}" if path else part
    return path or "(document)"


def _short(value: Any) -> Any:
    """Scalars as they are; containers by type, so one problem stays one readable line."""
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, str):
        return value if len(value) <= 80 else value[:77] + "..."
    return f"<{type(value).__name__}>"


def _from_pydantic(err: pydantic.ValidationError, obj_name: str) -> list[Problem]:
    problems: dict[str, Problem] = {}
    for e in err.errors(include_url=False):
        path = _field_path(tuple(e["loc"]))
        if e["type"] == "missing":
            reason = "Required value"
        else:
            reason = e["msg"]
        if path in problems:  # a union (int or string) fails once per member: one problem per field
            prev = problems[path]
            if reason not in prev.reason:
                problems[path] = Problem(field=path, value=prev.value, reason=f"{prev.reason}; or {reason}", obj=obj_name)
            continue
        value = None if e["type"] == "missing" else _short(e.get("input"))
        problems[path] = Problem(field=path, value=value, reason=reason, obj=obj_name)
    return list(problems.values())


def parse_object(data: dict[str, Any]) -> Resource:
    """One object from a dict (as stored): shapes only, no Kubernetes rules. Raises ValidationError."""
    out = Loaded()
    _load_doc(data, "<object>", False, out)
    objs = out.raise_for_problems()
    if len(objs) != 1:  # a List document holds any number, none included: a stored value is one object
        raise ValidationError([Problem(field="kind", value=_short(data.get("kind")),
                                       reason=f"must be one object, not a list of {len(objs)}", obj="<object>")])
    return objs[0]


def from_json(value: bytes | str) -> Resource:
    """An object as the store holds it (JSON). Raises ValidationError for anything else."""
    try:
        data = json.loads(value)
    except ValueError as e:
        raise ValidationError([Problem(field="(document)", value=None, reason=f"not JSON: {e}")]) from None
    # Fast path for what podnet itself stored: a known kind that validates as it is. Anything else
    # goes through the full loader for a problem that names the field.
    if isinstance(data, dict):
        kind = data.get("kind")
        cls = KINDS.get(kind) if isinstance(kind, str) else None  # (an unhashable kind raised TypeError)
        if cls is not None and data.get("apiVersion") == cls.API_VERSION:
            try:
                return cls.model_validate(data)
            except (pydantic.ValidationError, RecursionError, ValueError, TypeError):
                pass
    return parse_object(data)


def to_json(obj: Resource) -> bytes:
    """The stored form: compact JSON, keys in kubectl's order."""
    return json.dumps(obj.to_dict(), separators=(",", ":")).encode()


def _list_doc(objs: list[Resource]) -> dict[str, Any]:
    return {"apiVersion": "v1", "items": [o.to_dict() for o in objs], "kind": "List",
            "metadata": {"resourceVersion": ""}}


def dump_yaml(objs: Resource | list[Resource]) -> str:
    """`kubectl get -o yaml`: one object as itself, several as a v1 List; keys sorted as kubectl prints."""
    data = objs.to_dict() if isinstance(objs, Resource) else _list_doc(objs)
    return yaml.safe_dump(data, sort_keys=True, default_flow_style=False)


def dump_json(objs: Resource | list[Resource]) -> str:
    """`kubectl get -o json`: 4-space indent, fields in API order."""
    data = objs.to_dict() if isinstance(objs, Resource) else _list_doc(objs)
    return json.dumps(data, indent=4) + "\n"
