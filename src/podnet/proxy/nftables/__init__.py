"""The nftables proxy mode, behind the contract in proxy/backend.py.

- vocab.py: the nft words both layouts share (families, container and chain names, hashed names,
  Element, ServiceObjects);
- kpchains.py: kube-proxy's per-service-port chains and base table, which both layouts build;
- kubeproxy.py: kube-proxy's own layout (`ip kube-proxy`), rule for rule, for `--layout kube-proxy`
  and as the benchmark's baseline;
- layout.py: podnet's O(1) layout (`ip podnet`): shared chains per endpoint count, hash maps of slots;
- ledger.py: partial syncs of podnet's layout as element operations from the last sync's objects;
- nft.py: runs each script as one transaction (libnftables, or `nft -f -` through net/exec.py);
- backend.py: NftablesBackend, the proxier's backend for this mode.
"""
