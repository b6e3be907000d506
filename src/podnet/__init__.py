"""podnet: Kubernetes-style cluster networking on the real Linux kernel."""

__version__ = "0.1.0"
