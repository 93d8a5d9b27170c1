"""`fastpath controller` as a process: starts, says where it listens, stops on SIGTERM, explains bad input."""
from __future__ import annotations

import signal

from control_support import free_port, make_config, spawn_controller, stop_process


def test_controller_process_prints_its_address_and_exits_cleanly_on_sigterm(tmp_path, capsys) -> None:
    from fastpath.cli import main

    cfg = make_config([{"name": "a", "address": f"127.0.0.1:{free_port()}"}])
    path = cfg.write(tmp_path / "c.toml")
    proc = spawn_controller(path, tmp_path / "log")
    try:
        # A second controller on the same address is refused with a reason and what to do.
        assert main(["controller", "--config", str(path)]) == 1
        err = capsys.readouterr().err
        assert f"cannot listen on {cfg.control.listen}" in err and "[control] listen" in err
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    finally:
        stop_process(proc)
    log = (tmp_path / "log").read_text()
    assert "a is unhealthy: connection refused" in log  # each backend's state logged once
    assert log.count("a is unhealthy") == 1


def test_bad_config_and_listen_address_are_explained(tmp_path, capsys) -> None:
    from fastpath.cli import main

    bad = tmp_path / "bad.toml"
    bad.write_text("[control]\nlisten = 'nowhere'\n")
    assert main(["controller", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert "control.listen" in err and "host:port" in err
    assert main(["controller", "--listen", "1.2.3"]) == 2
    assert "--listen" in capsys.readouterr().err
    assert main(["controller", "--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read config" in capsys.readouterr().err
