"""Contract: every backend refuses a value over MAX_VALUE_BYTES (etcd's 1.5 MiB request limit) before it
writes anything, naming the key and the size; a value at the limit is stored."""

from __future__ import annotations

import pytest

from podnet.store import Put, Store, ValueTooLarge
from podnet.store.base import MAX_VALUE_BYTES


@pytest.mark.parametrize("how", ["put", "put_if_absent", "commit"])
def test_value_over_the_limit_is_refused_whole(store: Store, ns: str, how: str) -> None:
    big = b"x" * (MAX_VALUE_BYTES + 1)
    rev = store.revision()
    with pytest.raises(ValueTooLarge) as e:
        if how == "put":
            store.put(ns + "big", big)
        elif how == "put_if_absent":
            store.put(ns + "big", big, if_absent=True)
        else:
            store.commit([Put(ns + "small", b"ok"), Put(ns + "big", big)])
    assert ns + "big" in str(e.value) and str(MAX_VALUE_BYTES + 1) in str(e.value)
    assert store.get(ns + "big") is None and store.get(ns + "small") is None and store.revision() == rev


def test_value_at_the_limit_is_stored(store: Store, ns: str) -> None:
    store.put(ns + "edge", b"y" * MAX_VALUE_BYTES)
    kv = store.get(ns + "edge")
    assert kv is not None and len(kv.value) == MAX_VALUE_BYTES
