"""The fuzz targets by name: each a one-input function that raises AssertionError when a parser breaks its contract."""
from __future__ import annotations

from collections.abc import Callable

from . import target_connection, target_features, target_frames, target_hpack, target_hpack_encoder, target_model_name, target_promtext

TARGETS: dict[str, Callable[[bytes], None]] = {
    "frames": target_frames.one_input,
    "connection": target_connection.one_input,
    "hpack": target_hpack.one_input,
    "hpack_encoder": target_hpack_encoder.one_input,
    "features": target_features.one_input,
    "model_name": target_model_name.one_input,
    "promtext": target_promtext.one_input,
}

# Longest input libFuzzer tries per target: long enough for a real exposition
# page or a few requests' frames, short enough to keep thousands of runs a second.
MAX_LEN: dict[str, int] = {"frames": 4096, "connection": 4096, "hpack": 2048, "hpack_encoder": 2048, "features": 1024, "model_name": 1024, "promtext": 1024}
