"""A DNS server's own endpoint in its Service's EndpointSlice, for as long as it serves.

In Kubernetes the EndpointSlice controller lists a CoreDNS pod under the kube-dns Service once the pod
is Ready, and drops it when the pod goes. A podnet DNS server that runs as a node daemon (the lab's)
plays both parts for itself: once it answers, it writes the slice `<service>-<node>` with its address
and the Service's ports, attached to a store lease that it keeps alive. When it stops it revokes the
lease; when it is killed the lease expires after TTL seconds. Either way the slice disappears and the
proxies stop sending queries to an address where nobody answers.
"""

from __future__ import annotations

import logging
import threading

from podnet.api.endpointslice import (
    MANAGED_BY_LABEL,
    SERVICE_NAME_LABEL,
    Endpoint,
    EndpointConditions,
    EndpointPort,
    EndpointSlice,
)
from podnet.api.loader import to_json
from podnet.api.meta import ObjectMeta
from podnet.api.validation import validate
from podnet.errors import ValidationError
from podnet.store import Store, StoreError, keys

log = logging.getLogger("podnet.dns")
MANAGER = "podnet-dns"
TTL = 3.0  # seconds a killed server's endpoint outlives it
KEEPALIVE = 1.0


def endpoint_slice(namespace: str, service: str, node: str, ip: str,
                   ports: list[tuple[str, int, str]]) -> EndpointSlice:
    import uuid
    from datetime import UTC, datetime

    family = "IPv6" if ":" in ip else "IPv4"
    es = EndpointSlice(
        metadata=ObjectMeta(name=f"{service}-{node}", namespace=namespace, uid=str(uuid.uuid4()),
                            creation_timestamp=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
                            labels={SERVICE_NAME_LABEL: service, MANAGED_BY_LABEL: MANAGER}),
        address_type=family,
        endpoints=[Endpoint(addresses=[ip], node_name=node,
                            conditions=EndpointConditions(ready=True, serving=True, terminating=False))],
        ports=[EndpointPort(name=n, port=p, protocol=proto) for n, p, proto in ports],
    )
    problems = validate(es)
    if problems:
        raise ValidationError(problems)
    return es


class Publisher:
    """publish() writes the slice under a fresh lease and keeps it alive; withdraw() removes it."""

    def __init__(self, store: Store, es: EndpointSlice, ttl: float = TTL) -> None:
        self.store = store
        self.es = es
        self.ttl = ttl
        self.key = keys.resource("EndpointSlice", es.namespace, es.name)
        self._lease = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def publish(self) -> None:
        self._write()
        self._thread = threading.Thread(target=self._keep, name="podnet-dns-publish", daemon=True)
        self._thread.start()

    def _write(self) -> None:
        self._lease = self.store.grant(self.ttl)
        self.store.put(self.key, to_json(self.es), lease=self._lease)
        log.info("published %s (lease %x, ttl %.0fs)", self.key, self._lease, self.ttl)

    def _keep(self) -> None:
        while not self._stop.wait(KEEPALIVE):
            try:
                self.store.keepalive(self._lease)
            except StoreError as e:  # lease lost (store restarted, expired while we stalled): write anew
                log.warning("keeping %s alive: %s; publishing again", self.key, e)
                try:
                    self._write()
                except StoreError as e2:
                    log.warning("publishing %s: %s", self.key, e2)

    def withdraw(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
        if self._lease:
            try:
                self.store.revoke(self._lease)
            except StoreError as e:
                log.warning("withdrawing %s: %s (it expires in %.0fs)", self.key, e, self.ttl)
