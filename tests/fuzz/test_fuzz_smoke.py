"""Every fuzz target keeps working in the normal suite: seeds plus a few thousand seeded mutations each.

The fuzzer (python -m tests.fuzz.run) explores for minutes; this runs the
same one-input functions quickly and deterministically, so a parser change
that breaks a contract, or a target that rots, fails here first. The last
tests break a parser on purpose and check the targets notice.
"""
from __future__ import annotations

import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.requirements import missing

from fastpath.h2 import hpack_codec
from fastpath.router import features

from .registry import MAX_LEN, TARGETS
from .seeds import load

ROOT = Path(__file__).resolve().parents[2]
RANDOM_INPUTS = {"frames": 3000, "connection": 1500, "hpack": 2000, "hpack_encoder": 1500, "features": 3000, "model_name": 3000,
                 "promtext": 1500, "worker_metrics": 1500, "pushed": 1500, "prompt": 3000, "bpf_header": 400,
                 "huffman": 3000, "model_rewrite": 2000, "call_class": 3000}


def mutate(rng: random.Random, seeds: list[bytes], max_len: int) -> bytes:
    """A libFuzzer-style mutation of a seed: flips, inserts, deletions, splices, truncation, or fresh bytes."""
    if rng.random() < 0.2 or not seeds:
        return rng.randbytes(rng.randrange(max_len // 4))
    data = bytearray(rng.choice(seeds))
    for _ in range(rng.randrange(1, 6)):
        op = rng.randrange(6)
        pos = rng.randrange(len(data) + 1)
        if op == 0 and data:
            data[min(pos, len(data) - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            data[pos:pos] = rng.randbytes(rng.randrange(1, 8))
        elif op == 2:
            del data[pos : pos + rng.randrange(1, 16)]
        elif op == 3:
            other = rng.choice(seeds)
            cut = rng.randrange(len(other) + 1)
            data[pos:] = other[cut:]
        elif op == 4:
            del data[pos:]
        elif data:
            data[min(pos, len(data) - 1)] = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0x0A, 0x22, 0x5C))
    return bytes(data[:max_len])


def inputs(name: str, n: int, seed: int = 1234) -> list[bytes]:
    rng = random.Random(f"{name}:{seed}")
    seeds = load(name)
    return [mutate(rng, seeds, MAX_LEN[name]) for _ in range(n)]


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_seed_corpus_holds(name):
    seeds = load(name)
    assert len(seeds) >= 4, f"tests/fuzz/corpus/{name} has {len(seeds)} seeds; rebuild with python -m tests.fuzz.seeds"
    for s in seeds:
        TARGETS[name](s)


@pytest.mark.parametrize("name", sorted(TARGETS))
def test_mutated_inputs_hold(name):
    one_input = TARGETS[name]
    for data in inputs(name, RANDOM_INPUTS[name]):
        try:
            one_input(data)
        except AssertionError as e:
            raise AssertionError(f"{name} contract broken by input {data.hex()}: {e}") from None


def _caught(name: str, n: int = 400) -> bool:
    for data in load(name) + inputs(name, n, seed=99):
        try:
            TARGETS[name](data)
        except AssertionError:
            return True
    return False


def test_hpack_target_notices_a_stale_block_cache(monkeypatch):
    def decode_ignoring_table_changes(self, block):
        hit = self._blocks.get(block)
        if hit is not None:
            return hit[1]
        headers = self._decode(block)
        self._blocks[block] = (self.generation, headers)
        return headers

    monkeypatch.setattr(hpack_codec.HpackDecoder, "decode", decode_ignoring_table_changes)
    assert _caught("hpack")


def test_features_target_notices_an_unchecked_region(monkeypatch):
    monkeypatch.setitem(features._HANDLERS, features.REGION,
                        lambda f, name, value: setattr(f, "region", value.strip().decode("latin-1")))
    assert _caught("features")


def test_pushed_target_notices_a_full_state_that_keeps_old_sessions(monkeypatch):
    from fastpath.control.pushed_state import PushedState

    real = PushedState.apply

    def apply_keeping_sessions(self, msg):
        kept = dict(self.sessions)
        ch = real(self, msg)
        if msg.full_state:
            for s, b in kept.items():
                self.sessions.setdefault(s, b)
        return ch

    monkeypatch.setattr(PushedState, "apply", apply_keeping_sessions)
    assert _caught("pushed")


def test_model_name_target_notices_first_instead_of_last(monkeypatch):
    from . import target_model_name

    real = features.model_from_infer_request

    def first_name(message: bytes):
        if len(message) > 7 and message[0] == 0 and message[5] == 0x0A and message[6] < 0x80:
            name = message[7 : 7 + message[6]]
            if len(name) == message[6] and name:
                return name.decode("utf-8", "replace")
        return real(message)

    monkeypatch.setattr(target_model_name, "model_from_infer_request", first_name)
    assert _caught("model_name")


def test_frames_target_notices_a_frame_left_in_the_buffer(monkeypatch):
    from fastpath.h2 import frames as fr

    real_feed = fr.FrameReader.feed

    def feed_holding_back(self, data):
        out = real_feed(self, data)
        if len(out) > 1 and len(data) > 200:  # "forget" the last frame of a big read
            self.frames_seen -= 1
            return out[:-1]
        return out

    monkeypatch.setattr(fr.FrameReader, "feed", feed_holding_back)
    assert _caught("frames")


def test_runner_fuzzes_a_target_and_reports_it(tmp_path):
    try:
        import atheris  # noqa: F401
    except ImportError:
        missing("atheris is not installed (pip install -e '.[fuzz]')")
    proc = subprocess.run([sys.executable, "-m", "tests.fuzz.run", "--seconds", "2", "--targets", "model_name",
                           "--work-dir", str(tmp_path)], cwd=ROOT, capture_output=True, text=True, timeout=90,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    line = next(l for l in proc.stdout.splitlines() if l.startswith("model_name"))
    executions = int(line.split()[1])
    assert executions > 100, line
    assert "crashes 0" in line and line.rstrip().endswith("ok"), line
    assert (tmp_path / "model_name.log").exists()


def test_runner_refuses_an_unknown_target():
    proc = subprocess.run([sys.executable, "-m", "tests.fuzz.run", "--targets", "nope"], cwd=ROOT,
                          capture_output=True, text=True, timeout=60, env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 2
    assert "unknown target" in proc.stderr and "frames" in proc.stderr


def test_prompt_target_notices_a_prompt_from_the_wrong_input(monkeypatch):
    from . import target_prompt

    def any_bytes_input(message, name=b"text_input", max_bytes=features.MAX_PROMPT_BYTES):
        import fastpath.gen.grpc_service_pb2 as pb

        try:
            req = pb.ModelInferRequest.FromString(message[5:])
        except Exception:  # noqa: BLE001
            return None
        for t in req.inputs:  # the first input with contents, whatever its name
            if len(t.contents.bytes_contents):
                return t.contents.bytes_contents[0][:max_bytes]
        return None

    monkeypatch.setattr(target_prompt, "prompt_from_infer_request", any_bytes_input)
    assert _caught("prompt")
