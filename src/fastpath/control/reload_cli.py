"""`fastpath reload`: the controller reads its config file again and pushes it to every proxy.

The same as sending SIGHUP to the controller, but it answers: what changed,
or why the file was refused (the running config stays). Needs the control token.
"""
from __future__ import annotations

import argparse
import sys

import grpc

from fastpath.config import Config, ConfigError, default_config_text, load_config
from fastpath.control import auth
from fastpath.gen import control_pb2, control_pb2_grpc


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", metavar="FILE", help="fastpath TOML config naming the controller and token file "
                        "(default: the embedded one)")
    parser.add_argument("--control", metavar="ADDR", help="controller address (default: [control] listen of the config)")
    parser.add_argument("--path", metavar="FILE", default="",
                        help="make the controller switch to this config file (default: the one it runs on)")
    parser.add_argument("--timeout", type=float, default=10.0, metavar="S", help="give up after S seconds (default 10)")


def _control_only(path: str | None) -> "Config":
    import tomllib

    from fastpath.config import parse_config

    data = tomllib.loads(default_config_text())
    try:
        with open(path or "", "rb") as f:
            control = tomllib.load(f).get("control", {})
        if isinstance(control, dict):
            data["control"] = {k: v for k, v in control.items() if k in ("listen", "token_file")}
        return parse_config(data, str(path))
    except (OSError, ValueError):
        return parse_config(tomllib.loads(default_config_text()), "<embedded default>")


def run(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config)
    except ConfigError:
        # The file being reloaded may be the broken one: the controller will say why. Find the
        # controller and the token from what still reads ([control] of the file, else the defaults).
        config = _control_only(args.config)
    target = args.control or config.control.listen
    with grpc.insecure_channel(target) as ch:
        try:
            reply = control_pb2_grpc.ControlStub(ch).Reload(
                control_pb2.ReloadRequest(path=args.path), timeout=args.timeout,
                metadata=auth.metadata(auth.read_token(config)))
        except grpc.RpcError as e:
            print(f"fastpath reload: controller at {target}: {e.code().name}: {e.details()}", file=sys.stderr)
            return 1
    if not reply.applied:
        print(f"fastpath reload: {reply.message}", file=sys.stderr)
        return 1
    print(f"reloaded: {reply.message} (version {reply.version})")
    return 0
