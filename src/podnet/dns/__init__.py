"""Cluster DNS: the records of the Kubernetes DNS specification, answered as CoreDNS's kubernetes plugin does.

    store --watch--> cache.py (one informer; records.py reduces each object, builds an indexed View)
                        |
    UDP/TCP --server.py--> wire.py (header checks, EDNS, truncation, answer cache) --> answer.py (the
                                                                                       plugin's logic)

records.py and answer.py are pure (a View in, records out), so the CoreDNS behaviour is tested table by
table without sockets; wire.py owns every byte; server.py owns the sockets; publish.py writes the
server's own EndpointSlice (its readiness) for the kube-dns Service of a lab.
"""
