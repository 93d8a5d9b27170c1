"""Whose fault a call's outcome is: only the backend's faults count against it.

A backend's health (failure count, cool-down, the error rate the controller
sees) must move only on what the backend did wrong, never on what a client
asked for. Statuses that describe the request (RFC-style "4xx": the method
does not exist, the argument is bad, the caller may not) or a client's own
cancel are the client's; transport failures, UNAVAILABLE, RESOURCE_EXHAUSTED
(overload), INTERNAL from the server and timeouts are the backend's. Other
statuses (UNKNOWN, ABORTED, ALREADY_EXISTS, DATA_LOSS) are application
answers and do not count either way.
"""
from __future__ import annotations

from typing import Final

# grpc-status values, as the bytes they travel as.
BACKEND_FAULTS: Final = frozenset({
    b"4",   # DEADLINE_EXCEEDED: the backend did not answer in time
    b"8",   # RESOURCE_EXHAUSTED: overloaded
    b"13",  # INTERNAL
    b"14",  # UNAVAILABLE
})
CLIENT_CAUSED: Final = frozenset({
    b"1",   # CANCELLED
    b"3",   # INVALID_ARGUMENT
    b"5",   # NOT_FOUND
    b"7",   # PERMISSION_DENIED
    b"9",   # FAILED_PRECONDITION
    b"11",  # OUT_OF_RANGE
    b"12",  # UNIMPLEMENTED
    b"16",  # UNAUTHENTICATED
})


def backend_at_fault(status: bytes | None) -> bool:
    """True when a response with grpc-status `status` counts against the backend that sent it."""
    return status in BACKEND_FAULTS


def status_ok(status: bytes | None) -> bool:
    return status == b"0" or status is None
