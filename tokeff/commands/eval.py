"""`tokeff eval`: multiple-choice accuracy of a model with its uncertainty, and answer-token loss."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

HELP = "multiple-choice accuracy (cloze / letter scoring) with a 95% interval vs chance, and answer-token loss"

METHOD_CHOICES = ("cloze", "cloze_norm", "cloze_token", "letter", "all")
_LOCAL_SUFFIXES = (".json", ".jsonl", ".csv", ".parquet")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="gguf:smollm2-135m-instruct",
                        help="preset, gguf:smollm2-135m-instruct (default, offline), hf:<id> or a checkpoint dir")
    parser.add_argument("--dataset", default="mmlu", help="mmlu, a hub dataset id, or a local .json/.jsonl/.csv/.parquet")
    parser.add_argument("--subjects", default=None,
                        help="comma-separated subjects or groups (e.g. anatomy,virology or medical); default all")
    parser.add_argument("--method", default="cloze", choices=METHOD_CHOICES,
                        help="cloze: answer log-likelihood; cloze_norm: per byte; cloze_token: per token; "
                             "letter: logit of the A-D letter; all: every one (default cloze)")
    parser.add_argument("--split", default="eval", choices=("eval", "all"),
                        help="eval: the held-out side of the seeded per-subject split (default); all: every question")
    parser.add_argument("--seed", type=int, default=0, help="split and --limit sampling seed (default 0)")
    parser.add_argument("--eval-fraction", type=float, default=0.2, help="eval share of each subject (default 0.2)")
    parser.add_argument("--limit", type=int, default=None, help="score a seeded random sample of N questions")
    parser.add_argument("--prompt-format", default="qa", choices=("qa", "chat"),
                        help="qa: 'Question: ... Answer: ...' (default); chat: the model's chat template")
    parser.add_argument("--k-shot", type=int, default=0, help="solved train-split examples before each question")
    parser.add_argument("--batch-size", type=int, default=16, help="rows per forward pass (default 16)")
    parser.add_argument("--dtype", default="float32", choices=("float32", "bfloat16"), help="compute dtype")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of a table")


def _task(args):
    """The data task of the command line: its eval set is what gets scored."""
    from tokeff.data.task import Task
    from tokeff.errors import UserError
    from tokeff.models.tokenizer import TokenizerInfo

    if args.limit is not None and args.limit <= 0:
        raise UserError(f"--limit: must be positive, got {args.limit}")
    if args.k_shot < 0:
        raise UserError(f"--k-shot: must be >= 0, got {args.k_shot}")
    if args.k_shot and args.split == "all":
        raise UserError("--k-shot: needs --split eval (the exemplars come from the train side)")
    if args.subjects is not None:
        from tokeff.data.sources import check_subject_list

        check_subject_list(args.subjects, "--subjects")
    local = Path(args.dataset).suffix.lower() in _LOCAL_SUFFIXES
    if local:
        from tokeff.inputs import check_input_file

        check_input_file(args.dataset, "--dataset")  # a regular file within the size limit
    return Task(tokens=TokenizerInfo(None), context_len=0, source="mmlu" if local else args.dataset,
                subjects=args.subjects, path=args.dataset if local else None, path_field="--dataset",
                split_seed=args.seed,
                eval_fraction=args.eval_fraction if args.split == "eval" else None,
                prompt_format=args.prompt_format, k_shot=args.k_shot, prompt_seed=args.seed)


def run(args: argparse.Namespace) -> int:
    from tokeff.errors import UserError
    from tokeff.eval import evaluate
    from tokeff.models.load import load_model

    if args.batch_size <= 0:
        raise UserError(f"--batch-size: must be positive, got {args.batch_size}")
    task = _task(args)
    records = task.eval_set(args.limit, sample_seed=args.seed)  # bad data refused before the model loads
    if args.limit is not None and len(records) < args.limit:
        raise UserError(f"--limit: {args.limit} questions asked for, but the eval set has {len(records)}; "
                        f"pass --limit {len(records)} or less")
    loaded = load_model(args.model, dtype=args.dtype, field="--model")
    fmt = dataclasses.replace(task, tokens=loaded.tokens).prompt  # chat: the model's own template
    result = evaluate(loaded, records, args.method, prompt_format=fmt, exemplars=task.exemplars,
                      batch_size=args.batch_size, progress=not args.json, bos_id=loaded.prepend_bos_id)
    report = {
        "model": args.model,
        "dataset": args.dataset,
        "subjects": sorted({r["subject"] for r in records}),
        "split": args.split,
        "seed": args.seed,
        "prompt_format": args.prompt_format,
        "k_shot": args.k_shot,
        "n": result.n,
        "chance": result.chance,
        "methods": {m: r.record().as_dict() for m, r in result.results.items()},
        "loss": result.loss,
        "loss_tokens": result.loss_tokens,
        "eval_flops": result.flops,
    }
    if args.json:
        print(json.dumps(report, indent=2))
    else:
        print(_table(report))
    return 0


def _table(report: dict) -> str:
    subjects = ", ".join(report["subjects"])
    lines = [
        f"model    {report['model']}",
        f"data     {report['dataset']} [{subjects}], split {report['split']} (seed {report['seed']}), "
        f"format {report['prompt_format']}, {report['k_shot']}-shot, n={report['n']}",
        "",
        f"{'method':<12} {'accuracy':>8} {'stderr':>7}   {'95% CI (Wilson)':<16} {'chance':>6}  {'correct':>9}",
    ]
    for m, r in report["methods"].items():
        lo, hi = r["ci95"]
        verdict = "above" if lo > r["chance"] else ("below" if hi < r["chance"] else "~")
        lines.append(
            f"{m:<12} {r['accuracy']:>8.3f} {r['stderr']:>7.3f}   [{lo:.3f}, {hi:.3f}]   {r['chance']:>6.3f}  "
            f"{round(r['accuracy'] * r['n']):>4}/{r['n']:<4} {verdict} chance"
        )
    lines += [
        "",
        f"answer loss  {report['loss']:.4f} nats/token over {report['loss_tokens']} answer tokens (correct choices)",
        f"eval FLOPs   {report['eval_flops']:.4g} (forward passes run, padding included; not a training budget)",
    ]
    return "\n".join(lines)
