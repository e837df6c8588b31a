"""Print a sweep's expected FLOPs and device-hours before launching it, and its memory plan.

Training FLOPs are exact: every run stops at its budget (the accountant's count, tokeff.flops),
so a point costs its budget. Evaluation adds forward passes: each held-out question (the config's eval split, counted
from the data) is scored as the scorer runs it, its prompt once and then every choice (`tokeff.eval.scoring`), about
--eval-tokens tokens a question of which --answer-tokens are read through the vocabulary. Device-hours divide by the
device's peak FLOP/s times an MFU, printed beside each model's FLOPs: --mfu (assumed), or the MFU
a sweep measured (--measured SWEEP_DIR: each finished run records it, the median per model is used; models
it has not run keep --mfu). The published peaks below are dense bf16.

--memory compiles each model's train step on the config's mesh over --chips devices (a CPU host splits itself
into as many CPU devices) and prints one device's peak memory from the compiled step's memory analysis (tokeff.train.memory); a point that does
not fit the device (its memory from the device when run on it, else --device's datasheet figure or
--device-memory-gib) fails here, in one line, before anything is launched.

    python experiments/estimate_cost.py --config configs/tpu_sweep_lagasse.py --device v5e --mfu 0.35
    python experiments/estimate_cost.py --config tokeff/demo/configs/demo.py:gpu --device h100 --memory
"""

from __future__ import annotations

import argparse
import collections
import sys

from tokeff.devices import DEVICE_NAMES, peak_flops

def estimate(config, *, peak_flops: float, mfu: float | dict[str, float], eval_tokens: int, chips: int = 1,
             overhead_s: float = 0.0, answer_tokens: int = 40):
    """Per-model rows (points, train FLOPs, eval FLOPs, MFU, device-hours) and the totals.

    `mfu` is one figure or one per model (a model it lacks raises KeyError). `overhead_s` per
    point (loading the checkpoint, compiling, writing checkpoints) holds all `chips` while it
    runs: at these small budgets it can exceed the FLOPs' own time.
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
    for model, row in per_model.items():
        row["mfu"] = mfu[model] if isinstance(mfu, dict) else mfu
        row["device_hours"] = ((row["train"] + row["eval"]) / (peak_flops * row["mfu"])
                               + row["points"] * overhead_s * chips) / 3600
    total = {k: sum(r[k] for r in per_model.values()) for k in ("points", "train", "eval", "device_hours")}
    return per_model, total


def measured_mfu(sweep_dir: str) -> dict[str, tuple[float, int]]:
    """model -> (median MFU, runs) over a sweep's finished runs that recorded one (accelerator runs)."""
    import statistics

    from tokeff.sweep import sweep_rows

    found = collections.defaultdict(list)
    for row in sweep_rows(sweep_dir):
        value = (row.get("extra") or {}).get("mfu")
        if row.get("status") == "ok" and isinstance(value, (int, float)) and value > 0:
            found[row["model"]].append(float(value))
    return {model: (statistics.median(values), len(values)) for model, values in found.items()}


def memory_plan(config, *, chips: int, device: str | None, device_gib: float | None):
    """[(model, StepMemory per device)] for each model of the grid, and the device's bytes (None
    when unknown). The step is compiled on the config's mesh over `chips` devices (on a CPU host,
    CPU devices standing in for the chips); off the accelerator with the reference attention
    (an upper bound: tokeff.train.memory)."""
    import jax

    from tokeff import sweep
    from tokeff.errors import UserError
    from tokeff.models.config import get_preset
    from tokeff.train.memory import device_memory, step_memory

    train = config.train
    if not train.data.row_len:
        raise UserError("config.train.data.row_len: the memory plan needs a fixed row length (0 = from the data)")
    attention = train.attention if jax.default_backend() != "cpu" else "reference"
    plans = []
    for model in dict.fromkeys(point.model for point in sweep.grid_points(config)):
        cfg = get_preset(sweep.preset_for_spec(model), dtype=train.dtype, attention=attention)
        plans.append((model, step_memory(cfg, train, devices=chips)))
    return plans, device_memory(device, device_gib)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="sweep config file (FILE.py[:ARG])")
    parser.add_argument("--device", default="v5e", help=f"one of {', '.join(DEVICE_NAMES)}")
    parser.add_argument("--peak-flops", type=float, default=None, help="override the device peak (FLOP/s per chip)")
    parser.add_argument("--chips", type=int, default=1, help="chips the sweep runs on (wall-clock hours = device-hours / chips)")
    parser.add_argument("--mfu", type=float, default=0.35, help="assumed model FLOPs utilisation")
    parser.add_argument("--measured", default=None, metavar="SWEEP_DIR",
                        help="use the MFU a sweep measured (median per model) where it has run the model")
    parser.add_argument("--overhead-s", type=float, default=60.0,
                        help="seconds per point outside the FLOPs (checkpoint load, compile, saves)")
    parser.add_argument("--eval-tokens", type=int, default=160,
                        help="tokens per scored question: its prompt once and all its choices (MMLU medical: ~50)")
    parser.add_argument("--answer-tokens", type=int, default=40, help="answer tokens per question (all choices)")
    parser.add_argument("--memory", action="store_true",
                        help="compile each model's train step and check its peak memory per device (fails if it does not fit)")
    parser.add_argument("--device-memory-gib", type=float, default=None,
                        help="memory of one device for --memory (default: the device's own, else --device's figure)")
    args, overrides = parser.parse_known_args(argv)
    if args.memory and args.chips > 1:
        from tokeff.train.memory import plan_cpu_devices

        plan_cpu_devices(args.chips)  # a CPU host stands in for the chips (before JAX starts)

    from tokeff.errors import UserError
    from tokeff.sweep import grid_points
    from tokeff.train.config import load_config

    try:
        if args.peak_flops is None and args.device not in DEVICE_NAMES:
            raise UserError(f"--device: unknown {args.device!r}; known: {', '.join(DEVICE_NAMES)} (or pass --peak-flops)")
        if not 0 < args.mfu <= 1:
            raise UserError(f"--mfu: must be in (0, 1], got {args.mfu}")
        if args.chips < 1:
            raise UserError(f"--chips: must be at least 1, got {args.chips}")
        peak = args.peak_flops or peak_flops(args.device)
        config = load_config(args.config, overrides)
        measured = measured_mfu(args.measured) if args.measured else {}
        models = dict.fromkeys(point.model for point in grid_points(config))
        mfu = {m: measured[m][0] if m in measured else args.mfu for m in models}
        per_model, total = estimate(config, peak_flops=peak, mfu=mfu, eval_tokens=args.eval_tokens,
                                    answer_tokens=args.answer_tokens,
                                    chips=args.chips, overhead_s=args.overhead_s)
    except UserError as e:
        print(f"estimate_cost: error: {e}", file=sys.stderr)
        return 2
    n_eval = next(iter(per_model.values()))["n_eval"]
    print(f"device {args.device} peak {peak:.3g} FLOP/s/chip, {args.chips} chip(s); "
          f"{n_eval} eval questions per point, {args.overhead_s:.0f} s overhead per point")
    print(f"{'model':45s} {'params':>8s} {'points':>6s} {'train FLOPs':>12s} {'eval FLOPs':>11s} "
          f"{'MFU':>5s} {'(from)':14s} {'device-h':>9s}")
    for model, r in per_model.items():
        source = f"measured, {measured[model][1]} run{'s' * (measured[model][1] > 1)}" if model in measured else "assumed"
        print(f"{model:45s} {r['params'] / 1e6:7.0f}M {r['points']:6d} {r['train']:12.3e} {r['eval']:11.3e} "
              f"{r['mfu']:5.0%} {source:14s} {r['device_hours']:9.2f}")
    print(f"{'total':45s} {'':8s} {total['points']:6d} {total['train']:12.3e} {total['eval']:11.3e} "
          f"{'':5s} {'':14s} {total['device_hours']:9.2f}")
    print(f"wall-clock on {args.chips} chip(s): {total['device_hours'] / args.chips:.2f} h")
    if args.memory:
        return _print_memory(config, args)
    return 0


def _print_memory(config, args) -> int:
    """The memory plan's table; exit 2 with one line naming the first model that does not fit."""
    import jax

    from tokeff.errors import UserError
    from tokeff.train.memory import GIB

    try:
        plans, limit = memory_plan(config, chips=args.chips, device=args.device, device_gib=args.device_memory_gib)
    except UserError as e:
        print(f"estimate_cost: error: {e}", file=sys.stderr)
        return 2
    train = config.train
    where = jax.devices()[0].device_kind
    note = " (reference attention: an upper bound off the accelerator)" if jax.default_backend() == "cpu" else ""
    mesh = {a: train.mesh[a] for a in ("data", "fsdp", "tensor")}
    print(f"memory per device, compiled on {args.chips} x {where}{note}; mesh {mesh}, {train.dtype}, "
          f"moments {train.optim.moments_dtype}, device holds "
          f"{f'{limit / GIB:.1f} GiB' if limit else 'unknown (pass --device-memory-gib)'}")
    rows = f"{train.batch_size}x{train.data.row_len}"
    print(f"{'model':45s} {'batch':>9s} {'state+batch':>11s} {'temporaries':>11s} {'peak GiB':>9s}  fits")
    too_big = None
    for model, mem in plans:
        fits = "?" if limit is None else "yes" if mem.peak <= limit else "NO"
        print(f"{model:45s} {rows:>9s} {mem.arguments / GIB:11.2f} {mem.temporaries / GIB:11.2f} "
              f"{mem.peak / GIB:9.2f}  {fits}")
        if fits == "NO" and too_big is None:
            too_big = (model, mem)
    if too_big:
        model, mem = too_big
        print(f"estimate_cost: error: memory: {model} needs {mem.peak / GIB:.1f} GiB per device for batches of "
              f"{rows} tokens on {args.chips} chip(s), a {args.device} holds {limit / GIB:.1f} GiB (shard the state "
              f"with mesh.fsdp, raise microbatches, use more chips or optim.moments_dtype=bfloat16)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
