"""The slow path: the controller process, its control API, and the proxy-side client.

The controller scrapes backends' metrics, probes their health, folds in what
proxies observe, learns sessions, and serves `fastpath.v1.Control`; proxies
subscribe to its pushed configuration with `FleetWatcher` (push.py on the
controller's side, pushed_state.py on theirs) and keep routing on what they
have when it is gone.
"""
