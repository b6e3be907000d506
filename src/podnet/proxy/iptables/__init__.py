"""The iptables proxy mode, kube-proxy's layout rule for rule, behind the contract in proxy/backend.py.

- names.py: the chains kube-proxy owns, the jumps into them, its hashed chain names;
- service.py: one service port's plan, capture rules and own SVC/SVL/EXT/FW/SEP chains;
- render.py: the pure renderer: desired state -> iptables-restore input (RenderResult), with a
  RenderCache its caller may keep;
- ruleset.py: restore input as data and the sync plans (full, partial, delta);
- restore.py: Restorer: loads a plan with iptables-restore and remembers what the kernel holds;
- backend.py: IptablesBackend, the proxier's backend for this mode.
"""
