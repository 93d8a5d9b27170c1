"""HTTP/2 stream states (RFC 9113 §5.1) as one explicit transition table.

As python-hyper/h2's `H2StreamStateMachine`: (state, event) -> next state,
where the next state may be an error the connection answers. Server push is
disabled everywhere in fastpath, so the reserved states never occur.
Anything not in the table is a protocol error. Lookups on the hot path go
through `NEXT[event][state]`, a list built from the table.
"""
from __future__ import annotations

from typing import Final

# States.
IDLE: Final = 0
OPEN: Final = 1
HALF_CLOSED_LOCAL: Final = 2
HALF_CLOSED_REMOTE: Final = 3
CLOSED: Final = 4
STATE_NAMES: Final = ("idle", "open", "half-closed (local)", "half-closed (remote)", "closed")

# Events: a frame (or flag) sent or received.
SEND_HEADERS: Final = 0
SEND_DATA: Final = 1
SEND_END_STREAM: Final = 2
SEND_RST_STREAM: Final = 3
RECV_HEADERS: Final = 4
RECV_DATA: Final = 5
RECV_END_STREAM: Final = 6
RECV_RST_STREAM: Final = 7
RECV_WINDOW_UPDATE: Final = 8
RECV_PRIORITY: Final = 9
EVENT_NAMES: Final = ("send HEADERS", "send DATA", "send END_STREAM", "send RST_STREAM", "receive HEADERS",
               "receive DATA", "receive END_STREAM", "receive RST_STREAM", "receive WINDOW_UPDATE",
               "receive PRIORITY")

# Outcomes that are not states: how the connection must answer.
STREAM_CLOSED_ERROR: Final = -1   # stream error STREAM_CLOSED (§5.1 half-closed (remote), closed)
PROTOCOL_ERROR_CONN: Final = -2   # connection error PROTOCOL_ERROR (§5.1 idle)

TRANSITIONS: Final[dict[tuple[int, int], int]] = {
    # idle (§5.1): HEADERS opens; PRIORITY is allowed; anything else is a connection error.
    (IDLE, SEND_HEADERS): OPEN,
    (IDLE, RECV_HEADERS): OPEN,
    (IDLE, RECV_PRIORITY): IDLE,
    (IDLE, RECV_DATA): PROTOCOL_ERROR_CONN,
    (IDLE, RECV_RST_STREAM): PROTOCOL_ERROR_CONN,
    (IDLE, RECV_WINDOW_UPDATE): PROTOCOL_ERROR_CONN,
    # open: either side may send anything; END_STREAM half-closes that side.
    (OPEN, SEND_HEADERS): OPEN,
    (OPEN, SEND_DATA): OPEN,
    (OPEN, SEND_END_STREAM): HALF_CLOSED_LOCAL,
    (OPEN, SEND_RST_STREAM): CLOSED,
    (OPEN, RECV_HEADERS): OPEN,
    (OPEN, RECV_DATA): OPEN,
    (OPEN, RECV_END_STREAM): HALF_CLOSED_REMOTE,
    (OPEN, RECV_RST_STREAM): CLOSED,
    (OPEN, RECV_WINDOW_UPDATE): OPEN,
    (OPEN, RECV_PRIORITY): OPEN,
    # half-closed (local): we are done sending; the peer still is.
    (HALF_CLOSED_LOCAL, SEND_RST_STREAM): CLOSED,
    (HALF_CLOSED_LOCAL, RECV_HEADERS): HALF_CLOSED_LOCAL,
    (HALF_CLOSED_LOCAL, RECV_DATA): HALF_CLOSED_LOCAL,
    (HALF_CLOSED_LOCAL, RECV_END_STREAM): CLOSED,
    (HALF_CLOSED_LOCAL, RECV_RST_STREAM): CLOSED,
    (HALF_CLOSED_LOCAL, RECV_WINDOW_UPDATE): HALF_CLOSED_LOCAL,
    (HALF_CLOSED_LOCAL, RECV_PRIORITY): HALF_CLOSED_LOCAL,
    # half-closed (remote): the peer is done sending; DATA or HEADERS from it is STREAM_CLOSED.
    (HALF_CLOSED_REMOTE, SEND_HEADERS): HALF_CLOSED_REMOTE,
    (HALF_CLOSED_REMOTE, SEND_DATA): HALF_CLOSED_REMOTE,
    (HALF_CLOSED_REMOTE, SEND_END_STREAM): CLOSED,
    (HALF_CLOSED_REMOTE, SEND_RST_STREAM): CLOSED,
    (HALF_CLOSED_REMOTE, RECV_HEADERS): STREAM_CLOSED_ERROR,
    (HALF_CLOSED_REMOTE, RECV_DATA): STREAM_CLOSED_ERROR,
    (HALF_CLOSED_REMOTE, RECV_END_STREAM): STREAM_CLOSED_ERROR,
    (HALF_CLOSED_REMOTE, RECV_RST_STREAM): CLOSED,
    (HALF_CLOSED_REMOTE, RECV_WINDOW_UPDATE): HALF_CLOSED_REMOTE,
    (HALF_CLOSED_REMOTE, RECV_PRIORITY): HALF_CLOSED_REMOTE,
    # closed: PRIORITY, and WINDOW_UPDATE/RST_STREAM that crossed our END_STREAM, are fine.
    (CLOSED, RECV_PRIORITY): CLOSED,
    (CLOSED, RECV_WINDOW_UPDATE): CLOSED,
    (CLOSED, RECV_RST_STREAM): CLOSED,
    (CLOSED, RECV_HEADERS): STREAM_CLOSED_ERROR,
    (CLOSED, RECV_DATA): STREAM_CLOSED_ERROR,
    (CLOSED, RECV_END_STREAM): STREAM_CLOSED_ERROR,
    (CLOSED, SEND_RST_STREAM): CLOSED,
}

_UNLISTED: Final = PROTOCOL_ERROR_CONN
NEXT: Final[tuple[tuple[int, ...], ...]] = tuple(
    tuple(TRANSITIONS.get((state, event), _UNLISTED) for state in range(5)) for event in range(10))


def transition(state: int, event: int) -> int:
    """The next state (or an error outcome < 0) for `event` in `state`."""
    return NEXT[event][state]
