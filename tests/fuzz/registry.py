"""The fuzz targets by name: each a one-input function that raises AssertionError when a parser breaks its contract."""
from __future__ import annotations

from collections.abc import Callable

from . import (target_bpf_header, target_call_class, target_connection, target_features, target_frames, target_hpack, target_hpack_encoder,
               target_huffman,
               target_model_name, target_model_rewrite, target_prompt, target_promtext, target_pushed, target_worker_metrics)

TARGETS: dict[str, Callable[[bytes], None]] = {
    "frames": target_frames.one_input,
    "connection": target_connection.one_input,
    "hpack": target_hpack.one_input,
    "hpack_encoder": target_hpack_encoder.one_input,
    "huffman": target_huffman.one_input,
    "features": target_features.one_input,
    "model_name": target_model_name.one_input,
    "promtext": target_promtext.one_input,
    "worker_metrics": target_worker_metrics.one_input,
    "pushed": target_pushed.one_input,
    "prompt": target_prompt.one_input,
    "bpf_header": target_bpf_header.one_input,
    "model_rewrite": target_model_rewrite.one_input,
    "call_class": target_call_class.one_input,
}

# Longest input libFuzzer tries per target: long enough for a real exposition
# page or a few requests' frames, short enough to keep thousands of runs a second.
MAX_LEN: dict[str, int] = {"frames": 4096, "connection": 4096, "hpack": 2048, "hpack_encoder": 2048, "features": 1024, "model_name": 1024,
           "promtext": 1024, "worker_metrics": 1024, "pushed": 4096, "prompt": 2048, "bpf_header": 2048,
           "huffman": 256, "model_rewrite": 4096, "call_class": 512}
