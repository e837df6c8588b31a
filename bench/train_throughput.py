"""Training-step throughput against the machine's own matmul peak.

CPU (always): a SmolLM2-135M-shaped model, float32, rows of 512 tokens. The reference is a
dense float32 matmul measured in the same process, so the ratio says how much of what this
CPU can do the training step achieves (target >= 50%).
GPU (when one is present): SmolLM2-360M, bfloat16 compute, rows of 2048 tokens; MFU against
the vendor peak of the device (tokeff.devices.PEAK_FLOPS).

FLOPs are the analytic count of record (tokeff.flops.step_training_flops), not XLA's.

    python bench/train_throughput.py [--rows N] [--steps N] [--seq-len S] [--model PRESET]
                                     [--attention PATH] [--losses-json FILE]

`--losses-json` writes the loss of every step (same seed, same batch each step) so that two
backends can be compared (bench/gpu_check.sh: GPU bf16 against CPU float32).
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time

import numpy as np


def matmul_flops_per_second(dtype: str, n: int = 2048, repeats: int = 10) -> float:
    """Sustained FLOP/s of a jitted square matmul (the dense peak this process can reach)."""
    import jax
    import jax.numpy as jnp

    a = jnp.ones((n, n), dtype)
    b = jnp.ones((n, n), dtype)
    chain = jax.jit(lambda a, b: jax.lax.fori_loop(0, repeats, lambda _, x: (x @ b) * (1.0 / n), a))
    chain(a, b).block_until_ready()
    best = float("inf")
    for _ in range(3):
        t0 = time.perf_counter()
        chain(a, b).block_until_ready()
        best = min(best, time.perf_counter() - t0)
    return 2 * n**3 * repeats / best


def train_step_seconds(preset: str, dtype: str, rows: int, seq_len: int, steps: int, remat: bool,
                       layers: int = 0, attention: str = "auto"):
    """(best and median seconds per step over `steps` after a warm-up, compile seconds, config,
    every step's loss) on one device."""
    import jax
    from flax import nnx

    from tokeff.models.config import get_preset
    from tokeff.models.transformer import Transformer
    from tokeff.train.defaults import base_config
    from tokeff.train.mesh import make_mesh
    from tokeff.train.optimizer import make_optimizer
    from tokeff.train.sharding import batch_sharding, put_batch
    from tokeff.train.state import init_state, state_layout
    from tokeff.train.step import make_train_step

    from tokeff.models.attention import resolve

    cfg = get_preset(preset, dtype=dtype, max_seq_len=max(seq_len, 2048), remat=remat,
                     attention=resolve(attention, dtype), **({"n_layers": layers} if layers else {}))
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    tx, schedule = make_optimizer(base_config().optim, 1000)
    factory = lambda: Transformer(cfg, rngs=nnx.Rngs(0))  # noqa: E731
    layout = state_layout(factory, tx, mesh)
    state = init_state(layout, factory, tx, 0)
    step = make_train_step(layout, tx, mesh)
    lr = np.float32(schedule(0))
    ids = np.random.default_rng(0).integers(0, cfg.vocab_size, (rows, seq_len + 1)).astype(np.int32)
    fields = {"tokens": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": np.ones((rows, seq_len), np.float32),
              "segment_ids": np.ones((rows, seq_len), np.int32),
              "positions": np.broadcast_to(np.arange(seq_len, dtype=np.int32), (rows, seq_len)).copy()}
    batch = {k: put_batch(v[None], batch_sharding(mesh)) for k, v in fields.items()}
    t0 = time.perf_counter()
    state, metrics = step(state, batch, lr)
    losses = [float(jax.block_until_ready(metrics)["loss"])]
    compile_seconds = time.perf_counter() - t0
    print(f"compiled + first step: {compile_seconds:.1f} s", file=sys.stderr, flush=True)
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        state, metrics = step(state, batch, lr)
        jax.block_until_ready(metrics)
        times.append(time.perf_counter() - t0)
        losses.append(float(metrics["loss"]))
    return min(times), float(np.median(times)), compile_seconds, cfg, losses


def peak_memory_bytes(device) -> tuple[int, str]:
    stats = device.memory_stats() if hasattr(device, "memory_stats") else None
    if stats and "peak_bytes_in_use" in stats:
        return int(stats["peak_bytes_in_use"]), "device peak"
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "host max RSS"


def main() -> None:
    import jax

    from tokeff.flops import step_training_flops
    from tokeff.devices import device_peak_flops

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    gpu = jax.default_backend() == "gpu"
    parser.add_argument("--model", default="smollm2-360m" if gpu else "smollm2-135m")
    parser.add_argument("--dtype", default="bfloat16" if gpu else "float32")
    parser.add_argument("--seq-len", type=int, default=2048 if gpu else 512)
    parser.add_argument("--rows", type=int, default=8 if gpu else 4)
    parser.add_argument("--steps", type=int, default=5 if gpu else 3)
    parser.add_argument("--remat", action="store_true", help="rematerialise blocks (charged as FLOPs)")
    parser.add_argument("--layers", type=int, default=0, help="override the preset's layer count (0: keep)")
    parser.add_argument("--losses-json", default=None, help="write every step's loss here (JSON)")
    parser.add_argument("--attention", default="auto", choices=("auto", "reference", "splash", "cudnn"),
                        help="attention path (auto: splash on TPU, cudnn on GPU in bfloat16, else reference)")
    args = parser.parse_args()

    device = jax.devices()[0]
    print(f"measuring ({args.model}, {args.rows} x {args.seq_len}, {args.dtype}) ...", file=sys.stderr, flush=True)
    before = matmul_flops_per_second(args.dtype)
    best, median, compile_seconds, cfg, losses = train_step_seconds(
        args.model, args.dtype, args.rows, args.seq_len, args.steps, args.remat, args.layers, args.attention)
    if args.losses_json:
        with open(args.losses_json, "w") as f:
            json.dump({"backend": jax.default_backend(), "model": args.model, "dtype": args.dtype,
                       "rows": args.rows, "seq_len": args.seq_len, "losses": losses}, f)
    # Measured before and after the step, the better one kept: on a shared machine the
    # reference must not be taken in a quieter moment than the step (or a busier one).
    matmul = max(before, matmul_flops_per_second(args.dtype))
    flops = step_training_flops(cfg, args.rows, args.seq_len)
    achieved = flops / best
    memory, memory_kind = peak_memory_bytes(device)
    peak = device_peak_flops(device, args.dtype)
    rows = [
        ("device", f"{device.device_kind} ({jax.default_backend()}, {jax.local_device_count()} local)"),
        ("model", f"{args.model} ({cfg.params / 1e6:.1f}M params), {args.dtype}, remat={args.remat}"),
        ("batch", f"{args.rows} x {args.seq_len} tokens"),
        ("attention", cfg.attention),
        ("step FLOPs (analytic)", f"{flops:.3e}"),
        ("compile + first step", f"{compile_seconds:.1f} s"),
        ("step time (best / median)", f"{best:.3f} s / {median:.3f} s"),
        ("achieved FLOP/s", f"{achieved:.3e}"),
        ("tokens/s", f"{args.rows * args.seq_len / best:,.0f}"),
        (f"dense {args.dtype} matmul FLOP/s", f"{matmul:.3e}"),
        ("achieved / matmul", f"{achieved / matmul:.1%}"),
        ("MFU (vendor peak)", f"{achieved / peak:.1%} of {peak:.3e}" if peak else "n/a (peak unknown)"),
        (f"peak memory ({memory_kind})", f"{memory / 2**30:.2f} GiB"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key:<{width}}  {value}")


if __name__ == "__main__":
    main()
