"""A Kubernetes API server over podnet's store, so the real kubectl and Kubernetes clients work against a lab.

registry.py  which resources exist (groups, versions, scopes, short names, verbs)
objects.py   reads and writes through the store, with the same validation/allocation as `podnet apply`
tables.py    `as=Table` rows with kube-apiserver's columns
patch.py     JSON patch, merge patch, strategic-merge patch
status.py    podnet's errors as Kubernetes Status objects
certs.py     the lab's CA, serving and client certificates, the bearer token and the kubeconfig
app.py       the aiohttp application: discovery, verbs, watch streams, authentication
"""
