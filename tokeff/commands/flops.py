"""`tokeff flops`: the exact FLOP count of one training step, beside the literature conventions."""

from __future__ import annotations

import argparse
import json

HELP = "exact training FLOPs of a [batch, seq-len] step, beside 6ND and Chinchilla App. F (JSON)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, metavar="PRESET", help="model preset, e.g. smollm2-135m")
    parser.add_argument("--seq-len", required=True, type=int, help="tokens per row")
    parser.add_argument("--batch", type=int, default=1, help="rows per step (default 1)")
    parser.add_argument("--remat", action="store_true",
                        help="charge rematerialisation (blocks' forward recomputed in the backward)")
    parser.add_argument("--attention", default="reference", choices=("reference", "splash", "cudnn"),
                        help="the attention path whose blocks are counted (default reference: the CPU's; "
                             "splash on TPU, cudnn on GPU)")


def run(args: argparse.Namespace) -> int:
    from tokeff import flops
    from tokeff.errors import UserError
    from tokeff.models.config import get_preset

    cfg = get_preset(args.model, field="--model", remat=bool(args.remat), attention=args.attention)
    if args.seq_len <= 0 or args.seq_len > cfg.max_seq_len:
        raise UserError(f"--seq-len: must be in 1..{cfg.max_seq_len} for {cfg.name}, got {args.seq_len}")
    if args.batch <= 0:
        raise UserError(f"--batch: must be positive, got {args.batch}")
    tokens = args.batch * args.seq_len
    row = flops.forward_breakdown(cfg, args.seq_len)
    training = flops.step_training_flops(cfg, args.batch, args.seq_len)
    report = {
        "model": cfg.name,
        "seq_len": args.seq_len,
        "batch": args.batch,
        "tokens": tokens,
        "remat": cfg.remat,
        "attention": cfg.attention,
        "params": cfg.params,
        "non_embedding_params": cfg.non_embedding_params,
        "forward_flops": args.batch * row.forward,
        "training_flops": training,
        "training_flops_per_token": training / tokens,
        "six_nd": flops.six_nd(cfg, tokens),
        "six_nd_non_embedding": flops.six_nd(cfg, tokens, non_embedding=True),
        "chinchilla_appendix_f": flops.chinchilla_appendix_f(cfg, args.seq_len, tokens),
        "training_over_six_nd": training / flops.six_nd(cfg, tokens),
        "breakdown": {name: args.batch * value for name, value in row.as_dict().items()},
    }
    print(json.dumps(report, indent=2))
    return 0
