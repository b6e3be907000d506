"""Test scaffolding that ships with podnet because the benchmarks use it too: the overlay test bed
(namespaces, nodes, pods) and the backend runner it starts in each node. Never imported by podnet itself."""
