"""`podnet lab ui`: a live web page of a lab's network, and the same picture as an SVG file.

    facts.py   what only the lab knows: its topology, flannel's net-conf and subnet leases (store informer)
    feed.py    what the API knows: Nodes, Pods, Services, EndpointSlices, listed and watched over HTTPS
    model.py   both joined into one view of the lab (pure): nodes, pods, Services with kube-proxy's chains
    layout.py  that view placed on a canvas (pure): shapes, and the path a trace takes across them
    svg.py     shapes as SVG text (the --snapshot file; the page draws the same shapes in static/app.js)
    server.py  the aiohttp app: the page, its assets, the scene over server-sent events, traces on request

The layout is computed once, in Python, and sent to the page as JSON: the page and the snapshot draw the
same shapes, so what a bug report shows is what the page showed.
"""
