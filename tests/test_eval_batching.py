"""Scores of the real Transformer do not depend on how rows are batched, padded or sharded."""

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

RECORDS = [
    {"question": "What is the capital of France?", "choices": ["Paris", "a banana", "the moon", "seven"], "answer": 0},
    {"question": "2 + 2 = ?", "choices": ["4", "five hundred and twelve", "22", "fish"], "answer": 0},
]

# Runs in a child process: the simulated device count must be set before JAX starts, and the
# pytest process must keep its own.
_SHARDED = textwrap.dedent("""
    import json, sys
    import jax
    jax.config.update("jax_num_cpu_devices", 4)
    from flax import nnx
    from tokeff.eval import evaluate_methods
    from tokeff.models.config import get_preset
    from tokeff.models.tokenizer import byte_tokenizer
    from tokeff.models.transformer import Transformer
    from tokeff.train.mesh import make_mesh

    records = json.loads(sys.argv[1])
    pair = (Transformer(get_preset("tiny"), nnx.Rngs(3)), byte_tokenizer())
    out = {}
    for name, mesh in [("single", None), ("sharded", make_mesh({"data": 2, "tensor": 2}))]:
        res = evaluate_methods(pair, records, ("cloze", "letter"), batch_size=4, mesh=mesh)
        out[name] = {m: r.scores.tolist() for m, r in res.items()}
    print(json.dumps(out))
""")


@pytest.fixture(scope="module")
def tiny_pair():
    from flax import nnx

    from tokeff.models.config import get_preset
    from tokeff.models.tokenizer import byte_tokenizer
    from tokeff.models.transformer import Transformer

    return Transformer(get_preset("tiny"), nnx.Rngs(3)), byte_tokenizer()


def test_scores_do_not_depend_on_batch_size(tiny_pair):
    from tokeff.eval import evaluate_methods

    one = evaluate_methods(tiny_pair, RECORDS, ("cloze", "letter"), batch_size=3)
    many = evaluate_methods(tiny_pair, RECORDS, ("cloze", "letter"), batch_size=8)
    for method in one:
        assert np.isfinite(one[method].scores).all()
        np.testing.assert_allclose(one[method].scores, many[method].scores, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
@pytest.mark.multidevice
def test_sharded_eval_matches_single_device():
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    proc = subprocess.run([sys.executable, "-c", _SHARDED, json.dumps(RECORDS)], capture_output=True,
                          text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    for method in ("cloze", "letter"):
        np.testing.assert_allclose(out["sharded"][method], out["single"][method], rtol=1e-5, atol=1e-4)


def test_batches_spread_the_rows_evenly():
    from tokeff.eval.scoring import balanced_rows

    assert balanced_rows(100, 32) == 25  # 4 batches of 25 rows, not 128 rows with 28 of padding
    assert balanced_rows(33, 32) == 17
    assert balanced_rows(5, 16) == 5
    assert balanced_rows(10, 4, shards=4) == 4  # rounded up to the shard count
    assert balanced_rows(0, 8) == 1
    for n in range(1, 80):
        rows = balanced_rows(n, 16)
        assert rows <= 16 and -(-n // rows) == -(-n // 16)  # never more batches than before
