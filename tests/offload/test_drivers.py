"""Choosing a driver from the config, and falling back to Python with one clear line."""
from __future__ import annotations

import logging
import socket

import pytest
from fastpath.offload.drivers import open_driver
from fastpath.offload.none import NoneDriver

from fastpath.config import load_config, parse_config


def connected_pair() -> tuple[socket.socket, socket.socket, socket.socket]:
    lst = socket.socket()
    lst.bind(("127.0.0.1", 0))
    lst.listen()
    c = socket.create_connection(lst.getsockname())
    s, _ = lst.accept()
    return lst, c, s


def test_default_config_keeps_flows_in_python():
    driver = open_driver(load_config())
    assert isinstance(driver, NoneDriver)
    lst, c, s = connected_pair()
    try:
        result = driver.install("sess-1", c, s)
        assert result.path == "python" and not result.offloaded and "Python" in result.reason
        (flow,) = driver.list()
        assert flow.session == "sess-1" and flow.path == "python" and flow.client == s.getsockname()
        assert driver.counters()["sess-1"].offload_bytes == 0
        assert driver.remove("sess-1") and not driver.remove("sess-1")
        c.sendall(b"still mine")  # the sockets were not taken
        assert s.recv(10) == b"still mine"
    finally:
        for x in (lst, c, s):
            x.close()


def test_unknown_driver_name_is_refused_with_the_choices():
    with pytest.raises(ValueError, match="none, ebpf, dpu"):
        open_driver("xdp")


def test_ebpf_without_built_objects_falls_back_with_one_line(tmp_path, monkeypatch, caplog):
    (tmp_path / "fastpath_maps.h").write_text((__import__("fastpath.offload.maps", fromlist=["bpf_dir"]).bpf_dir() / "fastpath_maps.h").read_text())
    monkeypatch.setenv("FASTPATH_BPF_DIR", str(tmp_path))  # header present, objects not built
    raw = dict(load_config().raw)
    raw["offload"] = {"driver": "ebpf"}
    config = parse_config(raw)
    with caplog.at_level(logging.WARNING, logger="fastpath.offload"):
        driver = open_driver(config, pin_dir=None)
    assert isinstance(driver, NoneDriver)
    lines = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(lines) == 1, lines
    assert "ebpf unavailable" in lines[0] and "make bpf" in lines[0] and "Python relay" in lines[0]
    assert "ebpf unavailable" in driver.reason


@pytest.mark.bpf
def test_ebpf_config_gives_the_kernel_driver(bpf_ready):
    raw = dict(load_config().raw)
    raw["offload"] = {"driver": "ebpf"}
    driver = open_driver(parse_config(raw), pin_dir=None)
    try:
        assert driver.name == "ebpf" and driver.path == "kernel"
    finally:
        driver.close()
