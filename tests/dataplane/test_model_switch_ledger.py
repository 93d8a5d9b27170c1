"""Flow-control accounting of model switching, without sockets: whatever the split of the client's DATA,
the size change of the rewrite, the pace at which the backend takes bytes and the failovers, the client is
given back exactly the bytes it sent, never more than it sent, and the backend gets the rewritten stream."""
from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from fastpath.dataplane.model_switch import ModelSwitch
from fastpath.gen import grpc_service_pb2 as pb
from fastpath.h2.connection import Half
from fastpath.router.model_rewrite import rewrite_grpc_messages

PATH = b"/inference.GRPCInferenceService/ModelStreamInfer"


class CallState:
    """The parts of a Call a ModelSwitch uses: its request sender, the client credit, the error path."""

    def __init__(self) -> None:
        self.credited = 0
        self.req = Half(self._credit_client)
        self.path = PATH
        self.errors: list[tuple[int, str]] = []
        self.sent = bytearray()  # what the backend got, over all attempts (reset on failover)
        self.resp_ended = False

    def _credit_client(self, n: int) -> None:
        assert n > 0
        self.credited += n

    def respond_error(self, code: int, message: str) -> None:
        self.errors.append((code, message))
        self.resp_ended = True

    def drain(self, sizes: list[int]) -> None:
        """The backend takes what is pending, in steps of `sizes` (as Half.pump reports to on_sent)."""
        req = self.req
        data = b"".join(req.pending)
        req.pending.clear()
        req.pending_bytes = 0
        self.sent += data
        k = 0
        pos = 0
        while pos < len(data):
            step = min(len(data) - pos, sizes[k % len(sizes)] if sizes else len(data))
            k += 1
            req.on_sent(step)
            pos += step

    def failover(self, replay: list[bytes]) -> None:
        """What Call._failover does: a fresh sender holding the replay (credited before by the old one)."""
        self.req.on_sent = lambda n: None
        new = Half(self._credit_client)
        for chunk in replay:
            new.pending.append(chunk)
            new.pending_bytes += len(chunk)
        new.skip_credit = sum(map(len, replay))
        self.req = new
        self.sent = bytearray()


def framed(model: str, k: int, size: int) -> bytes:
    req = pb.ModelInferRequest(model_name=model, id=f"r{k}", raw_input_contents=[bytes([k % 256]) * size])
    body = req.SerializeToString()
    return b"\x00" + len(body).to_bytes(4, "big") + body


@given(sizes=st.lists(st.integers(0, 3000), min_size=1, max_size=5),
       cuts=st.lists(st.integers(1, 4000), max_size=12),
       served=st.sampled_from(["", "s", "a-substitute-with-a-much-longer-name"]),
       requested=st.sampled_from(["big", "a-requested-model-with-a-long-name"]),
       steps=st.lists(st.integers(1, 5000), max_size=4),
       held_first=st.integers(0, 2),
       fail_at=st.one_of(st.none(), st.integers(0, 12)),
       served_after=st.sampled_from(["", "s"]))
@settings(max_examples=300, deadline=None)
def test_the_client_gets_back_exactly_what_it_sent(sizes, cuts, served, requested, steps, held_first, fail_at,
                                                   served_after):
    stream = b"".join(framed(requested, k, n) for k, n in enumerate(sizes))
    pieces, pos = [], 0
    for c in cuts:
        if pos >= len(stream):
            break
        pieces.append(stream[pos:pos + c])
        pos += c
    if pos < len(stream):
        pieces.append(stream[pos:])
    call = CallState()
    replay: list[bytes] = []
    # The first pieces arrive before routing (the call holds them), the rest through the switch.
    for p in pieces[:held_first]:
        replay.append(p)
        call.req.push(p, False)
    sw = ModelSwitch(call, requested, 1 << 20)
    assert sw.begin(served)
    for k, p in enumerate(pieces[held_first:]):
        last = held_first + k == len(pieces) - 1
        replay.append(p)
        sw.push(p, last)
        assert call.credited <= sum(map(len, replay)), "credited bytes the client has not sent"
        call.drain(steps)
        if fail_at is not None and k == fail_at and not last:
            call.failover(replay)
            assert sw.begin(served_after)
            served = served_after
            call.drain(steps)
    if len(pieces) <= held_first:
        call.req.end = True
    call.drain(steps)
    assert not call.errors
    assert call.credited == len(stream), f"credited {call.credited} of {len(stream)} bytes"
    assert bytes(call.sent) == (rewrite_grpc_messages(stream, served) if served else stream)


def test_a_message_larger_than_the_window_is_credited_while_it_is_held():
    """The client can only send a window's worth before it is given window back: the bytes of an
    incomplete message held for rewriting are credited as they arrive, the rest once sent."""
    call = CallState()
    sw = ModelSwitch(call, "big", 4 << 20)
    assert sw.begin("s")
    msg = framed("big", 1, 3 << 20)
    for k in range(0, len(msg) - 16384, 16384):
        sw.push(msg[k:k + 16384], False)
    assert call.credited >= len(msg) - 2 * 16384 and call.req.pending_bytes == 0  # held, credited, not sent
    sw.push(msg[k + 16384:], True)
    call.drain([65535])
    assert call.credited == len(msg) and bytes(call.sent) == rewrite_grpc_messages(msg, "s")


def test_a_message_that_cannot_be_rewritten_mid_stream_ends_the_call():
    call = CallState()
    sw = ModelSwitch(call, "big", 1 << 20)
    assert sw.begin("s")
    sw.push(framed("big", 0, 10), False)
    sw.push(b"\x01\x00\x00\x00\x03abc", False)
    assert call.errors and call.errors[0][0] == 9 and "message 2" in call.errors[0][1]
    sw.push(framed("big", 2, 10), True)  # what the client still sends is dropped: one answer only
    assert len(call.errors) == 1
    big = ModelSwitch(CallState(), "big", 100)
    big.call.req.push(framed("big", 0, 200), False)
    assert not big.begin("s") and "over the 100 bytes" in big.refused
    assert big.begin("")  # the requested model takes it unchanged
