"""fastpath: a data-plane proxy for AI-inference gRPC traffic."""

import os as _os

# fastpath processes start children (sites, controller, proxy) that exec at once. gRPC's fork
# handlers would restart its poller thread in the child between fork and exec, where
# subprocess has closed the poller's epoll fd: the child then aborts (SIGABRT) before exec.
# Set before gRPC is first imported; an explicit setting in the environment wins.
_os.environ.setdefault("GRPC_ENABLE_FORK_SUPPORT", "false")

__version__ = "0.1.0"

# FASTPATH_PURE=1 runs the pure-Python hot modules even where compiled ones are built (fastpath._build).
from fastpath import _build as _fastpath_build  # noqa: E402

_fastpath_build.install()


def compiled_modules() -> list[str]:
    """fastpath's hot modules that run compiled (mypyc) in this process; [] = pure Python."""
    return _fastpath_build.compiled_modules()
