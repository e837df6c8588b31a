"""Print a sweep's expected FLOPs and device-hours before launching it.

Training FLOPs are exact: every run stops at its budget (the accountant's count, tokeff.flops),
so a point costs its budget. Evaluation adds forward passes: each held-out question (the config's eval split, counted
from the data) is scored as the scorer runs it, its prompt once and then every choice (`tokeff.eval.scoring`), about
--eval-tokens tokens a question of which --answer-tokens are read through the vocabulary. Device-hours divide by the
device's peak FLOP/s times an assumed MFU — measure MFU on a short run (`tokeff train` prints
it) and re-estimate; the published peaks below are dense bf16.

    python experiments/estimate_cost.py --config configs/tpu_sweep_lagasse.py --device v5e --mfu 0.35
"""

from __future__ import annotations

import argparse
import collections
import sys

from tokeff.devices import DEVICE_NAMES, peak_flops

def estimate(config, *, peak_flops: float, mfu: float, eval_tokens: int, chips: int = 1,
             overhead_s: float = 0.0, answer_tokens: int = 40):
    """Per-model rows (points, train FLOPs, eval FLOPs, device-hours) and the totals.

    `overhead_s` per point (loading the checkpoint, compiling, writing checkpoints) holds all
    `chips` while it runs: at these small budgets it can exceed the FLOPs' own time.
    """
    from tokeff import flops, sweep
    from tokeff.models.config import get_preset
    from tokeff.data.task import task_from_config
    from tokeff.models.tokenizer import TokenizerInfo

    # Which questions are held out depends on the data, not the model: no tokenizer needed.
    task = task_from_config(config.train.data, TokenizerInfo(None), 0, int(config.train.seed))
    n_eval = len(task.eval_set(int(config.eval.max_questions)))
    per_model = collections.OrderedDict()
    for point in sweep.grid_points(config):
        cfg = get_preset(sweep.preset_for_spec(point.model))
        eval_flops = n_eval * flops.eval_forward_flops(cfg, 1, eval_tokens, min(answer_tokens, eval_tokens))
        row = per_model.setdefault(point.model, dict(points=0, train=0.0, eval=0.0, params=cfg.params,
                                                     n_eval=n_eval))
        row["points"] += 1
        row["train"] += point.budget_flops
        row["eval"] += eval_flops
    for row in per_model.values():
        row["device_hours"] = ((row["train"] + row["eval"]) / (peak_flops * mfu)
                               + row["points"] * overhead_s * chips) / 3600
    total = {k: sum(r[k] for r in per_model.values()) for k in ("points", "train", "eval", "device_hours")}
    return per_model, total


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="sweep config file (FILE.py[:ARG])")
    parser.add_argument("--device", default="v5e", help=f"one of {', '.join(DEVICE_NAMES)}")
    parser.add_argument("--peak-flops", type=float, default=None, help="override the device peak (FLOP/s per chip)")
    parser.add_argument("--chips", type=int, default=1, help="chips the sweep runs on (wall-clock hours = device-hours / chips)")
    parser.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOPs utilisation")
    parser.add_argument("--overhead-s", type=float, default=60.0,
                        help="seconds per point outside the FLOPs (checkpoint load, compile, saves)")
    parser.add_argument("--eval-tokens", type=int, default=160,
                        help="tokens per scored question: its prompt once and all its choices (MMLU medical: ~50)")
    parser.add_argument("--answer-tokens", type=int, default=40, help="answer tokens per question (all choices)")
    args, overrides = parser.parse_known_args(argv)

    from tokeff.errors import UserError
    from tokeff.train.config import load_config

    try:
        if args.peak_flops is None and args.device not in DEVICE_NAMES:
            raise UserError(f"--device: unknown {args.device!r}; known: {', '.join(DEVICE_NAMES)} (or pass --peak-flops)")
        if not 0 < args.mfu <= 1:
            raise UserError(f"--mfu: must be in (0, 1], got {args.mfu}")
        peak = args.peak_flops or peak_flops(args.device)
        config = load_config(args.config, overrides)
        per_model, total = estimate(config, peak_flops=peak, mfu=args.mfu, eval_tokens=args.eval_tokens,
                                    answer_tokens=args.answer_tokens,
                                    chips=args.chips, overhead_s=args.overhead_s)
    except UserError as e:
        print(f"estimate_cost: error: {e}", file=sys.stderr)
        return 2
    n_eval = next(iter(per_model.values()))["n_eval"]
    print(f"device {args.device} peak {peak:.3g} FLOP/s/chip, MFU {args.mfu:.0%}, {args.chips} chip(s); "
          f"{n_eval} eval questions per point, {args.overhead_s:.0f} s overhead per point")
    print(f"{'model':45s} {'params':>8s} {'points':>6s} {'train FLOPs':>12s} {'eval FLOPs':>11s} {'device-h':>9s}")
    for model, r in per_model.items():
        print(f"{model:45s} {r['params'] / 1e6:7.0f}M {r['points']:6d} {r['train']:12.3e} {r['eval']:11.3e} "
              f"{r['device_hours']:9.2f}")
    print(f"{'total':45s} {'':8s} {total['points']:6d} {total['train']:12.3e} {total['eval']:11.3e} "
          f"{total['device_hours']:9.2f}")
    print(f"wall-clock on {args.chips} chip(s): {total['device_hours'] / args.chips:.2f} h")
    return 0


if __name__ == "__main__":
    sys.exit(main())
