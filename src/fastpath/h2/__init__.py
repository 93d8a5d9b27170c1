"""HTTP/2 protocol logic without I/O: frames, HPACK, flow-control constants.

Kept apart from the transports in `fastpath.dataplane` so each is tested on
its own, as python-hyper/h2 and grpclib do.
"""
