"""`tokeff demo`: the whole pipeline, offline, on a CPU: sweep → fit → compare → allocate → report."""

from __future__ import annotations

import argparse

HELP = "run the embedded demo: fine-tune SmolLM2-135M on MMLU under FLOP budgets, fit, allocate, report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", default=None, metavar="FILE.py[:ARG]",
                        help="demo config (default: the demo's own, tokeff/demo/configs/demo.py; ':ARG' picks one of"
                             " its variants: ':smoke' is tiny, ':gpu' the full grid)")
    parser.add_argument("--workdir", default="runs/demo",
                        help="run folder: results table, fits, plots, report.txt (rerun resumes)")
    parser.set_defaults(_accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from tokeff.demo import run_demo

    return run_demo(args.config, list(args._extra), args.workdir)
