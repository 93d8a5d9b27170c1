"""What the call services remember per request shape never outlives what it was computed from.

Driven without sockets through the proxy's objects (the in-process cost harness).
"""
from __future__ import annotations

import asyncio

from fastpath.bench import fastpath_python_cost as harness


def test_features_of_one_off_header_lists_never_come_from_another_call() -> None:
    """A header list decoded once is not remembered, so its features object dies with its call; the
    model-from-path step must not hand a later call, whose features reuse that memory, the dead one's."""
    async def run() -> None:
        proxy, *_ = harness._setup(False)
        svc = proxy.call_services
        for i in range(300):
            headers = [(b":path", b"/fastpath.bench.v1.Bench/Unary"), (b"x-fastpath-region", b"r%d" % i)]
            f = svc.features(headers, recurs=False)
            out = svc.features_from_path(f, b"/fastpath.bench.v1.Bench/Unary")
            assert out.region == "r%d" % i, (i, out.region)
            del f, out  # the next call's features may take this memory (and id)

    asyncio.run(run())
