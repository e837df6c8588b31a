"""`tokeff train`: fine-tune a model under a FLOP budget from an ml_collections config file."""

from __future__ import annotations

import argparse
import json
import sys

HELP = "train a model under a FLOP budget (config file + --config.KEY=VALUE overrides); reruns resume"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--config", required=True, metavar="FILE.py[:ARG]",
                        help="config file defining get_config(arg=None), e.g. configs/tiny.py")
    parser.add_argument("--workdir", required=True,
                        help="run directory: metrics.jsonl, summary.json, checkpoints/ (rerun resumes)")
    parser.set_defaults(_accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from tokeff.train.config import load_train_config
    from tokeff.train.loop import train

    config = load_train_config(args.config, list(args._extra))
    summary = train(config, args.workdir)
    if not summary.completed:
        print(f"tokeff train: {summary.status} after step {summary.steps} of {summary.planned_steps}; "
              "rerun the same command to resume", file=sys.stderr)
        return 1
    print(json.dumps({k: v for k, v in summary.as_dict().items() if k != "selection"}, indent=2))
    return 0
