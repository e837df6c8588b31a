"""tokeff against the PyTorch stack (transformers + torch) on the same work, in one run.

The work, identical on both sides (random weights, same shapes, float32):
- a training step: SmolLM2-135M shape, `--rows` x `--seq-len` tokens, AdamW. PyTorch:
  `LlamaForCausalLM` (sdpa attention) + `torch.optim.AdamW`, the cross-entropy on the logits.
  tokeff: its jitted train step (`tokeff.train.step`).
- cloze scoring of `--questions` MMLU questions (4 choices, "qa" prompts, the SmolLM2
  tokenizer). PyTorch: what a careful user writes — one row per (question, choice), batches
  of `--batch` rows sorted by length and padded to the longest, `torch.inference_mode`, the
  log-softmax of the logits gathered at the answer tokens. tokeff: `evaluate_methods`.

Each (stack, work) pair runs in its own subprocess, one after another, so the peak RSS is that
stack's alone and the two never hold memory at once. Every process also measures a dense
float32 matmul with its own stack, so "share of matmul" says how much of what this CPU does
for that stack the step achieves. Torch gets as many threads as XLA uses (the cores this
process may run on). Step FLOPs are tokeff's analytic count (`tokeff.flops`), the same work.
Scoring is timed on a second pass (tokeff's first pass compiles).

    python bench/peer_torch.py [--layers N] [--rows 4] [--seq-len 512] [--questions 32]
                               [--baseline-src /path/to/older/tokeff/checkout]

`--baseline-src` adds a column: the same tokeff workers run from another source tree (e.g. the
commit before a change), for before/after figures measured in the same run.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _threads() -> int:
    return len(os.sched_getaffinity(0))


def _peak_rss_gib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def _config(args):
    from tokeff.models.config import get_preset

    overrides = {"n_layers": args.layers} if args.layers else {}
    return get_preset(args.model, max_seq_len=max(2048, args.seq_len), **overrides)


def _train_batch(cfg, rows: int, seq_len: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, cfg.vocab_size, (rows, seq_len + 1)).astype(np.int64)


def _score_rows(args):
    """(records, token rows, scored masks) of the MMLU questions, as tokeff builds them."""
    from tokeff.data.prompts import PromptFormat, render
    from tokeff.data.sources import load_multiple_choice
    from tokeff.eval.multiple_choice import continuation_rows
    from tokeff.models.gguf_checkpoint import bundled_path, read_gguf_tokenizer

    info = read_gguf_tokenizer(bundled_path("smollm2-135m-instruct"))
    tokenizer = info.tokenizer if hasattr(info, "tokenizer") else info[0]  # TokenizerInfo, or the older tuple
    ds = load_multiple_choice("mmlu", subjects=args.subjects)
    pick = np.sort(np.random.default_rng(0).choice(len(ds), min(args.questions, len(ds)), replace=False))
    records = ds.select(pick.tolist()).to_list()
    expanded = [{**r, "answer": k} for r in records for k in range(len(r["choices"]))]
    sequences, masks = continuation_rows(tokenizer, render(expanded, PromptFormat(name="qa")))
    return tokenizer, records, sequences, masks


def _best_of(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


# ---------------------------------------------------------------- torch side
def _torch_matmul(n: int = 2048, repeats: int = 10) -> float:
    import torch

    a, b = torch.ones(n, n), torch.ones(n, n)
    a @ b

    def chain():
        x = a
        for _ in range(repeats):
            x = (x @ b) * (1.0 / n)

    return 2 * n**3 * repeats / _best_of(chain, 3)


def _torch_model(cfg):
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=cfg.vocab_size, hidden_size=cfg.d_model, intermediate_size=cfg.d_ff,
        num_hidden_layers=cfg.n_layers, num_attention_heads=cfg.n_heads, num_key_value_heads=cfg.n_kv_heads,
        head_dim=cfg.head_dim, rope_theta=cfg.rope_theta, rms_norm_eps=cfg.rms_norm_eps,
        tie_word_embeddings=cfg.tie_embeddings, max_position_embeddings=cfg.max_seq_len,
        attn_implementation="sdpa",
    )
    return LlamaForCausalLM(config).float()


def torch_train(args) -> dict:
    import torch
    import torch.nn.functional as F

    cfg = _config(args)
    model = _torch_model(cfg).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, weight_decay=0.0)
    ids = torch.from_numpy(_train_batch(cfg, args.rows, args.seq_len))
    losses = []

    def step():
        optimizer.zero_grad(set_to_none=True)
        logits = model(input_ids=ids[:, :-1]).logits
        loss = F.cross_entropy(logits.reshape(-1, cfg.vocab_size), ids[:, 1:].reshape(-1))
        loss.backward()
        optimizer.step()
        losses.append(float(loss))

    step()  # warm-up (allocator, optimizer state)
    return {"step_s": _best_of(step, args.steps), "matmul": _torch_matmul(), "rss": _peak_rss_gib(),
            "first_loss": losses[0]}


def torch_score(args) -> dict:
    import torch

    cfg = _config(args)
    model = _torch_model(cfg).eval()
    _, records, sequences, masks = _score_rows(args)
    order = np.argsort([-len(s) for s in sequences], kind="stable")

    def score() -> np.ndarray:
        sums = np.zeros(len(sequences))
        with torch.inference_mode():
            for start in range(0, len(order), args.batch):
                idx = order[start:start + args.batch]
                width = max(len(sequences[i]) for i in idx) - 1
                tokens = torch.zeros((len(idx), width), dtype=torch.long)
                targets = torch.zeros((len(idx), width), dtype=torch.long)
                scored = torch.zeros((len(idx), width), dtype=torch.bool)
                attention = torch.zeros((len(idx), width), dtype=torch.long)
                for r, i in enumerate(idx):
                    seq, n = torch.as_tensor(sequences[i], dtype=torch.long), len(sequences[i]) - 1
                    tokens[r, :n], targets[r, :n] = seq[:-1], seq[1:]
                    scored[r, :n], attention[r, :n] = torch.as_tensor(masks[i][1:]), 1
                logits = model(input_ids=tokens, attention_mask=attention).logits
                logp = torch.log_softmax(logits.float(), dim=-1).gather(-1, targets[..., None])[..., 0]
                sums[idx] = torch.where(scored, logp, 0.0).sum(-1).numpy()
        return sums

    score()
    seconds = _best_of(score, 1)
    return {"questions": len(records), "score_s": seconds, "rss": _peak_rss_gib()}


# ---------------------------------------------------------------- tokeff side
def tokeff_train(args) -> dict:
    sys.path.insert(0, os.path.join(REPO, "bench"))
    import jax
    from flax import nnx

    from tokeff.models.transformer import Transformer
    from tokeff.train.defaults import base_config
    from tokeff.train.mesh import make_mesh
    from tokeff.train.optimizer import make_optimizer
    from tokeff.train.sharding import batch_sharding, put_batch
    from tokeff.train.state import init_state, state_layout
    from tokeff.train.step import make_train_step
    from train_throughput import matmul_flops_per_second

    cfg = _config(args)
    mesh = make_mesh({"data": 1}, devices=jax.devices()[:1])
    optim = base_config().optim
    optim.clip_norm, optim.weight_decay = 0.0, 0.0  # torch.optim.AdamW as configured above
    tx, _ = make_optimizer(optim, 1000)
    factory = lambda: Transformer(cfg, rngs=nnx.Rngs(0))  # noqa: E731
    layout = state_layout(factory, tx, mesh)
    state = init_state(layout, factory, tx, 0)
    step = make_train_step(layout, tx, mesh)
    ids = _train_batch(cfg, args.rows, args.seq_len).astype(np.int32)
    rows, s = args.rows, args.seq_len
    fields = {"tokens": ids[:, :-1], "targets": ids[:, 1:], "loss_mask": np.ones((rows, s), np.float32),
              "segment_ids": np.ones((rows, s), np.int32),
              "positions": np.broadcast_to(np.arange(s, dtype=np.int32), (rows, s)).copy()}
    batch = {k: put_batch(v[None], batch_sharding(mesh)) for k, v in fields.items()}
    lr = np.float32(1e-4)
    holder = {"state": state}
    losses = []

    def one():
        holder["state"], metrics = step(holder["state"], batch, lr)
        losses.append(float(jax.block_until_ready(metrics)["loss"]))

    t0 = time.perf_counter()
    one()
    compile_s = time.perf_counter() - t0
    return {"step_s": _best_of(one, args.steps), "matmul": matmul_flops_per_second("float32"),
            "rss": _peak_rss_gib(), "first_loss": losses[0], "compile_s": compile_s}


def tokeff_score(args) -> dict:
    from flax import nnx

    from tokeff.eval import evaluate_methods
    from tokeff.models.transformer import Transformer

    cfg = _config(args)
    tokenizer, records, _, _ = _score_rows(args)
    model = Transformer(cfg, nnx.Rngs(0))
    run = lambda: evaluate_methods((model, tokenizer), records, ("cloze",), batch_size=args.batch)  # noqa: E731
    t0 = time.perf_counter()
    run()
    first = time.perf_counter() - t0
    return {"questions": len(records), "score_s": _best_of(run, 1), "first_pass_s": first, "rss": _peak_rss_gib()}


WORKERS = {("torch", "train"): torch_train, ("torch", "score"): torch_score,
           ("tokeff", "train"): tokeff_train, ("tokeff", "score"): tokeff_score}


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--layers", type=int, default=0, help="override the layer count (0: the preset's)")
    parser.add_argument("--rows", type=int, default=4)
    parser.add_argument("--seq-len", type=int, default=512)
    parser.add_argument("--steps", type=int, default=2, help="timed steps after one warm-up (best kept)")
    parser.add_argument("--questions", type=int, default=32)
    parser.add_argument("--subjects", default="medical")
    parser.add_argument("--batch", type=int, default=16, help="scoring rows per batch (both stacks)")
    parser.add_argument("--work", default="train,score")
    parser.add_argument("--baseline-src", default=None, help="another tokeff source tree for a 'before' column")
    parser.add_argument("--worker", nargs=2, metavar=("STACK", "WORK"), help=argparse.SUPPRESS)
    return parser


def _spawn(stack: str, work: str, argv: list[str], src: str) -> dict:
    env = dict(os.environ, PYTHONPATH=src)
    threads = str(_threads())
    env.update(OMP_NUM_THREADS=threads, MKL_NUM_THREADS=threads)
    print(f"running {stack} {work} ({'src ' + src}) ...", file=sys.stderr, flush=True)
    proc = subprocess.run([sys.executable, os.path.abspath(__file__), *argv, "--worker", stack, work],
                          env=env, capture_output=True, text=True)
    if proc.returncode:
        sys.stderr.write(proc.stderr[-4000:])
        raise SystemExit(f"{stack} {work} worker failed (exit {proc.returncode})")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    print(f"  {stack} {work}: {json.dumps(result)}", file=sys.stderr, flush=True)  # kept if the run is cut short
    return result


def main() -> None:
    args = _parser().parse_args()
    if args.worker:
        if args.worker[0] == "torch":
            import torch

            torch.set_num_threads(_threads())
        print(json.dumps(WORKERS[tuple(args.worker)](args)))
        return
    argv = [a for a in sys.argv[1:]]
    stacks = [("torch", REPO), ("tokeff", REPO)] + ([("before", args.baseline_src)] if args.baseline_src else [])
    works = args.work.split(",")
    results = {(name, work): _spawn("torch" if name == "torch" else "tokeff", work, argv, src)
               for work in works for name, src in stacks}

    from tokeff.flops import step_training_flops

    cfg = _config(args)
    flops = step_training_flops(cfg, args.rows, args.seq_len)
    names = [n for n, _ in stacks]
    table = []
    if "train" in works:
        tr = {n: results[n, "train"] for n in names}
        table += [
            ("train step (s)", {n: tr[n]["step_s"] for n in names}, "{:.2f}", "inverse"),
            ("train tokens/s", {n: args.rows * args.seq_len / tr[n]["step_s"] for n in names}, "{:,.0f}", "ratio"),
            ("own-stack f32 matmul GFLOP/s", {n: tr[n]["matmul"] / 1e9 for n in names}, "{:.0f}", "ratio"),
            ("step FLOP/s / matmul FLOP/s", {n: flops / tr[n]["step_s"] / tr[n]["matmul"] for n in names},
             "{:.0%}", "ratio"),
            ("train peak RSS (GiB)", {n: tr[n]["rss"] for n in names}, "{:.2f}", "ratio"),
            ("first-step loss", {n: tr[n]["first_loss"] for n in names}, "{:.3f}", None),
        ]
    if "score" in works:
        sc = {n: results[n, "score"] for n in names}
        table += [
            ("scoring questions/s", {n: sc[n]["questions"] / sc[n]["score_s"] for n in names}, "{:.2f}", "ratio"),
            ("scoring peak RSS (GiB)", {n: sc[n]["rss"] for n in names}, "{:.2f}", "ratio"),
        ]
    layers = args.layers or cfg.n_layers
    print(f"\n{args.model} shape ({layers} layers), float32, random weights; train {args.rows} x {args.seq_len} "
          f"tokens AdamW ({flops:.3e} FLOPs/step); cloze scoring of {args.questions} MMLU {args.subjects} "
          f"questions, batches of {args.batch} rows; {_threads()} threads per stack, CPU {os.cpu_count()} cores")
    header = f"{'':<30}" + "".join(f"{n:>12}" for n in names) + f"{'tokeff/torch':>14}"
    if args.baseline_src:
        header += f"{'tokeff/before':>15}"
    print(header)
    print("-" * len(header))
    for label, values, fmt, kind in table:
        line = f"{label:<30}" + "".join(f"{fmt.format(values[n]):>12}" for n in names)
        if kind is None:
            print(line)
            continue
        ratio = lambda a, b: (b / a if kind == "inverse" else a / b)  # noqa: E731
        line += f"{ratio(values['tokeff'], values['torch']):>13.2f}x"
        if args.baseline_src:
            line += f"{ratio(values['tokeff'], values['before']):>14.2f}x"
        print(line)
    print("ratios > 1 favour tokeff for speed rows (time rows are inverted to speed); for RSS rows, "
          "< 1 means tokeff uses less memory.")


if __name__ == "__main__":
    main()
