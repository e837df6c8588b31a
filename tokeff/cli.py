"""`tokeff` entry point: dispatches to `tokeff.commands.<name>`.

Each command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Bad input raises `tokeff.errors.UserError`; it is printed as one line and the exit code is 2.
"""

from __future__ import annotations

import argparse
import importlib
import os
import re
import sys

from tokeff.cache import enable_compilation_cache
from tokeff.errors import UserError
from tokeff.io import DiskFullError, is_disk_full
from tokeff.ownership import release_held_locks

# Order is the order of `tokeff --help`: the pipeline from model to decision.
COMMANDS = [
    "flops",
    "generate",
    "compose",
    "eval",
    "train",
    "sweep",
    "fit",
    "compare",
    "backtest",
    "allocate",
    "propose",
    "demo",
]


class _ArgumentParser(argparse.ArgumentParser):
    """argparse that reports bad flags as one line with exit code 2 (as argparse does)."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        # argparse's default takes "-1e12" for a flag ("expected one argument"): accept exponents too.
        self._negative_number_matcher = re.compile(r"^-(\d+\.?\d*|\.\d+)(e[-+]?\d+)?$|^-(inf|nan)$", re.I)

    def error(self, message: str):  # noqa: D401 - argparse API
        self.exit(2, f"{self.prog}: error: {message}\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _ArgumentParser(prog="tokeff", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_ArgumentParser)
    for name in COMMANDS:
        module = importlib.import_module(f"tokeff.commands.{name}")
        text = module.HELP.replace("%", "%%")  # argparse %-formats help strings
        cmd = sub.add_parser(name, help=text, description=text)
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    enable_compilation_cache()
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    # Only commands that take ml_collections overrides (--config.KEY=VALUE) accept extras.
    if extra and not getattr(args, "_accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args._extra = extra
    try:
        return int(args._run(args) or 0)
    except UserError as e:
        print(f"tokeff {args.command}: error: {e}", file=sys.stderr)
        return 2
    except DiskFullError as e:
        print(f"tokeff {args.command}: error: {e}", file=sys.stderr)
        return 1
    except Exception as e:
        if not is_disk_full(e):
            raise
        where = getattr(e, "filename", None) or "while writing"
        print(f"tokeff {args.command}: error: no space left on the device ({where})", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"tokeff {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        release_held_locks()


if __name__ == "__main__":
    sys.exit(main())
