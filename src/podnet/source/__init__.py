"""Sources: where the node daemons read their objects (base.py has the contract).

- store.StoreSource: podnet's own store (sqlite or etcd), the default.
- kube.KubeSource: a Kubernetes API server (kubeconfig, --master or in-cluster), so the proxy and the
  overlay can stand in for kube-proxy and flanneld on a real cluster.
"""

from podnet.source.base import KINDS, Selector, Source
from podnet.source.kubeconfig import KubeOptions

__all__ = ["KINDS", "KubeOptions", "Selector", "Source"]
