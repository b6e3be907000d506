"""The labels the lab puts on objects, in one place (the controller, registry, speaker and teardown read them)."""

LAB_LABEL = "podnet.io/lab"  # on Nodes, node IPAM blocks and Services of one lab: its name
OWNER_LABEL = "podnet.io/deployment"  # on Pods the lab's Deployment controller made: the Deployment's name
