"""Settings every test process (and the processes tests start) shares."""
import os

import fastpath  # noqa: F401  (first: sets gRPC's fork behaviour before anything imports grpc)

# Calls that change routing need the control token; tests share one through the environment.
os.environ.setdefault("FASTPATH_CONTROL_TOKEN", "fastpath-test-token")
