"""The slow path: the controller process, its control API, and the proxy-side client.

The controller scrapes backends' metrics, probes their health, folds in what
proxies observe, learns sessions, and serves `fastpath.v1.Control`; proxies
follow it with `FleetWatcher` and keep routing on their last snapshot when it
is gone.
"""
