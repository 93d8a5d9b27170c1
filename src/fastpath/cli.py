"""The `fastpath` command: one entry point, a subcommand per job.

Each subcommand lives in its own module exposing `add_arguments(parser)` and
`run(args) -> int`; modules are imported only when their command runs, so
`fastpath --help` stays fast and a missing optional dependency only affects
the command that needs it.
"""
from __future__ import annotations

import argparse
import importlib
import sys

from fastpath import logfmt

COMMANDS: dict[str, tuple[str, str]] = {
    "up": ("fastpath.up", "start the default fleet, controller and proxy; run until interrupted"),
    "demo": ("fastpath.demo", "run the fleet, proxy and controller, drive a mixed workload, print where it went"),
    "proxy": ("fastpath.dataplane.server", "run the fast-path proxy (routed and pinned modes)"),
    "controller": ("fastpath.control.controller", "run the slow-path controller and the control API"),
    "sim": ("fastpath.sim.fleet", "run the simulated GPU fleet of a config"),
    "flows": ("fastpath.control.flows_cli", "list sessions and their data path"),
    "bpf": ("fastpath.offload.bpf_cli", "load, unload and inspect fastpath's BPF programs and maps"),
    "reload": ("fastpath.control.reload_cli", "make the controller re-read its config file and push it to the proxies"),
    "top": ("fastpath.control.top", "live view of backends, routing decisions and flows (from the controller)"),
    "dpu": ("fastpath.offload.dpu_cli", "the emulated BlueField DPU: status and installed rules (DOCA Flow JSON)"),
    "bench": ("fastpath.bench.harness", "benchmark fastpath against direct, nginx, HAProxy and Envoy"),
}


class _Version(argparse.Action):
    """`fastpath --version`: the version and which fast path runs (compiled or pure Python), computed only when asked."""

    def __call__(self, parser, namespace, values, option_string=None):  # type: ignore[no-untyped-def]
        from fastpath import __version__, _build

        print(f"fastpath {__version__}\nfast path: {_build.describe()}")
        parser.exit()


def build_parser(argv: list[str]) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastpath", description=__doc__.splitlines()[0])
    parser.add_argument("--version", action=_Version, nargs=0, help="print the version and whether the fast path "
                        "runs compiled (mypyc) or pure Python, and exit")
    parser.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING or ERROR")
    parser.add_argument("--log-format", choices=logfmt.FORMATS, default=logfmt.default_format(),
                        help="text (default) or json: one JSON object per log line, also for child processes")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.set_defaults(_module=module)
        if name in argv:  # only the chosen command's module is imported
            try:
                importlib.import_module(module).add_arguments(p)
            except ModuleNotFoundError as e:
                p.set_defaults(_missing=str(e))
                p.add_argument("rest", nargs=argparse.REMAINDER)  # so the message below is what the user sees
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 2
    logfmt.configure(args.log_level, args.log_format)
    if getattr(args, "_missing", None):
        print(f"fastpath {args.command}: not available in this install ({args._missing})", file=sys.stderr)
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
