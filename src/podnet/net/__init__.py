"""The one place that talks netlink (pyroute2) and enters namespaces. One module per kernel object kind."""
