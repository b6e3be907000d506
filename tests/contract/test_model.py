"""Contract: random sequences of writes agree with a tiny reference model of etcd's key space.

The model is a dict plus a revision counter and an event list; hypothesis drives puts, deletes and
commits with every kind of condition, and after each step the backend's list and revision must match
the model; at the end a watch from the start must replay exactly the model's events.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass, field
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, rule, run_state_machine_as_test

from podnet.store import ConflictError, Delete, Event, Put, Store, open_store

KEYS = st.sampled_from(["a", "b", "c/d", "c/e"])
VALUES = st.binary(max_size=8)
CONDS = st.sampled_from(["none", "absent", "current", "stale", "zero"])


@dataclass
class Model:
    rev: int
    data: dict[str, tuple[bytes, int, int]] = field(default_factory=dict)  # key -> value, create, mod
    events: list[tuple[str, str, bytes | None, bytes | None, int]] = field(default_factory=list)

    def mod(self, key: str) -> int:
        return self.data[key][2] if key in self.data else 0


def _condition(model: Model, key: str, cond: str) -> tuple[bool, int | None, bool]:
    """(if_absent, if_revision, holds) for a named condition on key."""
    if cond == "absent":
        return True, None, key not in model.data
    if cond == "current":
        return False, model.mod(key), True
    if cond == "stale":
        return False, model.mod(key) + 1000, False
    if cond == "zero":
        return False, 0, key not in model.data
    return False, None, True


def _apply(model: Model, ops: list[tuple[str, str, bytes]]) -> None:
    """Apply (kind, key, value) ops at one new revision if anything changes (etcd: no-op deletes don't)."""
    new = model.rev + 1
    changed = False
    for kind, key, value in ops:
        if kind == "put":
            prev = model.data.get(key)
            model.data[key] = (value, prev[1] if prev else new, new)
            model.events.append(("put", key, value, prev[0] if prev else None, new))
            changed = True
        elif key in model.data:
            prev_value = model.data.pop(key)[0]
            model.events.append(("delete", key, None, prev_value, new))
            changed = True
    if changed:
        model.rev = new


class StoreMachine(RuleBasedStateMachine):
    store: Store

    def __init__(self) -> None:
        super().__init__()
        self.ns = f"/model/{secrets.token_hex(4)}/"
        self.start = self.store.revision()
        self.model = Model(rev=self.start)

    @initialize()
    def noop(self) -> None:
        pass

    @rule(key=KEYS, value=VALUES, cond=CONDS)
    def put(self, key: str, value: bytes, cond: str) -> None:
        if_absent, if_revision, holds = _condition(self.model, key, cond)
        try:
            rev = self.store.put(self.ns + key, value, if_absent=if_absent, if_revision=if_revision)
        except ConflictError:
            assert not holds, f"put {key} {cond}: unexpected conflict"
            return
        assert holds, f"put {key} {cond}: should have conflicted"
        _apply(self.model, [("put", key, value)])
        assert rev == self.model.rev

    @rule(key=KEYS, cond=st.sampled_from(["none", "current", "stale"]))
    def delete(self, key: str, cond: str) -> None:
        _, if_revision, holds = _condition(self.model, key, cond)
        existed = key in self.model.data
        try:
            deleted = self.store.delete(self.ns + key, if_revision=if_revision)
        except ConflictError:
            assert not holds, f"delete {key} {cond}: unexpected conflict"
            return
        assert holds, f"delete {key} {cond}: should have conflicted"
        assert deleted == existed
        _apply(self.model, [("delete", key, b"")])

    @rule(ops=st.lists(st.tuples(st.sampled_from(["put", "delete"]), KEYS, VALUES, CONDS), min_size=1, max_size=3,
                       unique_by=lambda op: op[1]))
    def commit(self, ops: list[tuple[str, str, bytes, str]]) -> None:
        store_ops: list[Put | Delete] = []
        all_hold = True
        for kind, key, value, cond in ops:
            if kind == "put":
                if_absent, if_revision, holds = _condition(self.model, key, cond)
                store_ops.append(Put(self.ns + key, value, if_absent=if_absent, if_revision=if_revision))
            else:
                _, if_revision, holds = _condition(self.model, key, "none" if cond == "absent" else cond)
                store_ops.append(Delete(self.ns + key, if_revision=if_revision))
            all_hold = all_hold and holds
        try:
            rev = self.store.commit(store_ops)
        except ConflictError:
            assert not all_hold, f"commit {ops}: unexpected conflict"
            return
        assert all_hold, f"commit {ops}: should have conflicted"
        _apply(self.model, [(kind, key, value) for kind, key, value, _ in ops])
        assert rev == self.model.rev

    @invariant()
    def same_state(self) -> None:
        res = self.store.list(self.ns)
        got = {kv.key[len(self.ns):]: (kv.value, kv.create_revision, kv.mod_revision) for kv in res.items}
        assert got == self.model.data
        assert res.revision == self.model.rev

    def teardown(self) -> None:
        watch = self.store.watch(self.ns, self.start + 1)
        events: list[Event] = []
        try:
            if self.model.events:
                for ev in watch:
                    events.append(ev)
                    if ev.revision == self.model.rev and len(events) >= len(self.model.events):
                        break
        finally:
            watch.close()
        got = [(e.type, e.key[len(self.ns):], e.value, e.prev_value, e.revision) for e in events]
        assert got == self.model.events


def test_random_writes_match_the_reference_model(store_url: str) -> None:
    store = open_store(store_url)
    try:
        machine: Any = type("Bound", (StoreMachine,), {"store": store})
        run_state_machine_as_test(
            machine,
            settings=settings(max_examples=25, stateful_step_count=12, deadline=None,
                              suppress_health_check=list(HealthCheck)),
        )
    finally:
        store.close()
