"""libbpf through ctypes against real maps: batch reads agree with single lookups, refusals read well."""
from __future__ import annotations

import ctypes
import errno
import random
from pathlib import Path

import pytest

pytestmark = pytest.mark.bpf


def test_batch_reads_match_single_lookups(bpf_ready):
    from fastpath.offload.ebpf import EbpfDriver, flow_bytes

    with EbpfDriver(pin_dir=None, max_flows=600) as driver:
        flows, Stats = driver.maps.flows, driver._Stats
        rng = random.Random(7)
        want = {}
        for _ in range(517):  # more than one batch chunk below
            key = rng.getrandbits(63)
            st = Stats()
            st.bytes[0], st.bytes[1] = rng.getrandbits(40), rng.getrandbits(40)
            st.packets[0] = rng.getrandbits(20)
            flows.update(ctypes.c_uint64(key), st)
            want[key] = (st.bytes[0], st.bytes[1], st.packets[0])
        chunks = list(flows.lookup_batches(chunk=100))
        assert len(chunks) >= 6 and sum(n for _, _, n in chunks) == len(want)
        got = {k: (v.bytes[0], v.bytes[1], v.packets[0]) for k, v in flows.lookup_all().items()}
        assert got == want
        assert flow_bytes(flows) == {k: (b0, b1) for k, (b0, b1, _) in want.items()}
        assert sorted(flows.keys()) == sorted(want)
        for k in list(want)[:50]:
            assert flows.delete(ctypes.c_uint64(k)) is True
            assert flows.delete(ctypes.c_uint64(k)) is False
            assert flows.lookup(ctypes.c_uint64(k)) is None


def test_refusals_say_what_happened_and_what_to_do(bpf_ready, tmp_path):
    from fastpath.offload import libbpf
    from fastpath.offload.ebpf import EbpfDriver

    with pytest.raises(libbpf.BpfError) as e:
        libbpf.get_pinned(Path("/sys/fs/bpf/fastpath-no-such-pin"))
    assert e.value.errno == errno.ENOENT and "fastpath bpf load" in str(e.value)

    with pytest.raises(libbpf.BpfError) as e:
        libbpf.BpfObject(tmp_path / "missing.bpf.o")
    assert "make bpf" in str(e.value)

    with EbpfDriver(pin_dir=None, max_flows=1) as driver:
        driver.maps.flows.update(ctypes.c_uint64(1), driver._Stats())
        with pytest.raises(libbpf.BpfError) as e:
            driver.maps.flows.update(ctypes.c_uint64(2), driver._Stats())
        assert e.value.errno == errno.E2BIG and "map is full" in str(e.value) and "fp_flows" in str(e.value)
