"""``robis-edge``: the one console script. Each command's arguments are defined by the package
that owns it; heavy dependencies load only when a command runs."""

from __future__ import annotations

import argparse
import importlib
import os
import sys

from edge_runtime import commands as runtime_cli
from sdk import __version__
from sdk import cli as sdk_cli
from sdk.bundle import cli as bundle_cli
from sdk.engines import cli as engines_cli
from sdk.options import OneLineParser, print_error
from sdk.tools.evaluation import cli as evaluation_cli


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="robis-edge", description="RoBiS Edge: anomaly detection "
                                     "on industrial camera frames (see README.md and docs/).")
    parser.add_argument("--version", action="version", version=f"robis-edge {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sdk_cli.register(sub)
    evaluation_cli.register(sub)
    engines_cli.register(sub)  # build, selftest: on-device, never torch
    bundle_cli.register(sub)  # bundle new (needs onnx, lazily), show, verify
    # The export toolchain's commands (export, fit) are offered when the `export` package is there.
    # Its modules named here hold argument definitions only (torch loads when a command runs); a
    # runtime-only device without it still gets every on-device command.
    for module in ("export.cli", "export.cli_fit"):
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name not in ("export", module):
                raise  # a real bug inside the package: do not hide it
            continue
        mod.register(sub)
    runtime_cli.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    return dispatch(build_parser(), argv)


def dispatch(parser: argparse.ArgumentParser, argv: list[str] | None = None) -> int:
    """Parse, run the chosen command, and turn its errors into one line and exit status 2.

    Every ``RobisError`` is one line; so is a file-system failure (``OSError``: permissions, a full
    disk), which names the path. Argument errors are one line too (``OneLineParser``). Anything
    else is a bug: one line and exit status 70, the traceback with ``ROBIS_EDGE_DEBUG=1``."""
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help and --version exit 0 as usual; a bad argument returns 2
        if exc.code in (0, None):
            raise
        return exc.code if isinstance(exc.code, int) else 2
    from sdk.errors import RobisError

    try:
        return int(args.func(args) or 0)
    except RobisError as exc:
        print_error(args.command, str(exc))
        return 2
    except OSError as exc:
        where = f" ({exc.filename})" if getattr(exc, "filename", None) and str(exc.filename) not in str(exc) \
            else ""
        print_error(args.command, f"{exc}{where}")
        return 2
    except KeyboardInterrupt:
        print_error(args.command, "interrupted")
        return 130
    except Exception as exc:  # a bug: one line still, the traceback on demand
        if os.environ.get("ROBIS_EDGE_DEBUG"):
            raise
        print_error(args.command, f"internal error ({type(exc).__name__}: {exc}); this is a bug in "
                    "robis-edge: please report it with the output of the same command run with "
                    "ROBIS_EDGE_DEBUG=1")
        return 70


if __name__ == "__main__":
    sys.exit(main())
