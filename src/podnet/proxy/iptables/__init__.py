"""The iptables proxy mode (kube-proxy's iptables layout), behind the contract in proxy/backend.py.

- names.py: chain names, hashes and fixed data (constants, jumps from built-in chains)
- services.py: the rules of one service port (pure)
- render.py: the pure renderer, desired state -> restore input (RenderResult), and its RenderCache
- ruleset.py: restore input as data (Ruleset) and the plans of full and partial syncs (pure)
- restore.py: the Restorer, which loads a plan into the kernel and remembers what it applied
- backend.py: IptablesBackend, which owns the state between syncs
"""
