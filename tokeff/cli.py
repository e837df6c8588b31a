"""`tokeff` entry point: dispatches to `tokeff.commands.<name>`.

Each command module defines `HELP` (one line), `add_arguments(parser)` and `run(args) -> int`.
Bad input raises `tokeff.errors.UserError`; it is printed as one line and the exit code is 2.
"""

from __future__ import annotations

import argparse
import contextlib
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
    "predict",
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
        cmd = sub.add_parser(name, help=text, description=module.HELP)  # descriptions are not %-formatted
        module.add_arguments(cmd)
        cmd.set_defaults(_run=module.run)
    return parser


def _hoist_positionals(argv: list[str], parser: argparse.ArgumentParser) -> list[str]:
    """`fit --map N=p D=t data.csv`: a VAR=VALUE list option (nargs="+", metavar with '=') would
    swallow the positional after it; a token without '=' there is moved before the options, while
    the command still lacks a positional (once it has its own, the token stays in the list, whose
    parser names it: `predict FIT --at N D=1e10` is an --at error, not a second FIT_DIR)."""
    if not argv or argv[0].startswith("-"):
        return argv
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    command = sub.choices.get(argv[0]) if sub else None
    if command is None:
        return argv
    lists = {a for a in command._actions if a.nargs == "+" and "=" in str(a.metavar or "")}
    options = {s: a for a in command._actions for s in a.option_strings}

    def action_of(token: str):  # argparse takes a unique prefix of a flag for the flag (--lik: --likelihood)
        if token in options or "=" in token:
            return options.get(token)
        found = {a for s, a in options.items() if s.startswith(token)}
        return found.pop() if len(found) == 1 else None

    wanted = sum(1 for a in command._actions if not a.option_strings and a.nargs is None)
    out, hoisted, given = [argv[0]], [], 0
    state = None  # what the tokens after an option are: "list" (VAR=VALUE), "many", "one" value, or positionals
    for token in argv[1:]:
        if token.startswith("-"):
            action = action_of(token)
            state = ("list" if action in lists else "many" if action.nargs in ("+", "*") else
                     None if action.nargs == 0 else "one") if action is not None else None
            out.append(token)
        elif state == "list" and "=" not in token and given + len(hoisted) < wanted:
            hoisted.append(token)
        else:
            if state is None:
                given += 1
            elif state == "one":
                state = None
            out.append(token)
    return [out[0], *hoisted, *out[1:]] if hoisted else argv


def _check_cwd() -> None:
    """A deleted current directory makes every relative path meaningless: one line, exit 2."""
    try:
        os.getcwd()
    except FileNotFoundError:
        print("tokeff: error: the current directory no longer exists; cd to an existing directory", file=sys.stderr)
        sys.exit(2)


class _OnceWarnings:
    """Python warnings as `tokeff CMD: warning: ...`, one line each, each text once per command."""

    def __init__(self, command: str):
        self.command, self.seen = command, set()

    def __call__(self, message, category, filename, lineno, file=None, line=None):
        text = " ".join(str(message).split())
        if text in self.seen:
            return
        self.seen.add(text)
        print(f"tokeff {self.command}: warning: {text}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    _check_cwd()
    enable_compilation_cache()
    parser = build_parser()
    args, extra = parser.parse_known_args(_hoist_positionals(list(argv), parser))
    # Only commands that take ml_collections overrides (--config.KEY=VALUE) accept extras.
    if extra and not getattr(args, "_accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args._extra = extra
    import warnings

    previous = warnings.showwarning
    warnings.showwarning = _OnceWarnings(args.command)
    try:
        if isinstance(getattr(args, "seed", None), int):  # every command's --seed: one range, checked once
            from tokeff.resources import check_seed

            check_seed(args.seed, "--seed")
        code = int(args._run(args) or 0)
        sys.stdout.flush()  # inside the try: a reader that left shows here, not at interpreter exit
        return code
    except BrokenPipeError:
        # `tokeff compare ... | head -c1`: the reader left; stop quietly, as cat and grep do.
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
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
        warnings.showwarning = previous
        release_held_locks()


if __name__ == "__main__":
    sys.exit(main())
