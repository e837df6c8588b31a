"""Greedy generation and `tokeff generate`."""

import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from tokeff.cli import main as cli_main
from tokeff.models.config import get_preset
from tokeff.models.generate import greedy_generate
from tokeff.models.transformer import Transformer


@pytest.fixture(scope="module")
def tiny():
    return Transformer(get_preset("tiny"), nnx.Rngs(2))


forward = nnx.jit(lambda m, t: m(t))


@pytest.mark.parametrize("n_prompt", [4, 61])  # 61 + 6 crosses a 64-slot bucket
def test_kv_cache_generation_equals_full_recomputation(tiny, n_prompt):
    """Greedy decoding with the KV cache picks, token for token, the argmax of a full forward
    over everything so far."""
    prompt = np.random.default_rng(n_prompt).integers(0, tiny.cfg.vocab_size, n_prompt).tolist()
    ids = list(prompt)
    for _ in range(6):
        # One shape for every step (one compile): the tokens so far, then zeros that the causal
        # forward cannot see from the last real position.
        padded = ids + [0] * (n_prompt + 6 - len(ids))
        ids.append(int(np.argmax(np.asarray(forward(tiny, jnp.asarray([padded])))[0, len(ids) - 1])))
    generated = ids[len(prompt):]
    assert greedy_generate(tiny, prompt, 6) == generated
    stop = generated[-1]  # generation ends before the first occurrence of a stop id
    assert greedy_generate(tiny, prompt, 6, stop_ids=[stop]) == generated[:generated.index(stop)]


def test_cached_logits_equal_the_full_forward():
    model = Transformer(get_preset("tiny-qwen"), nnx.Rngs(4))
    tokens = jnp.asarray(np.random.default_rng(1).integers(0, 512, (2, 9)), jnp.int32)

    @nnx.jit
    def cached(m, tokens):
        _, cache = m.extend(tokens[:, :5], m.init_cache(2, 16), 0)
        hidden, _ = m.extend(tokens[:, 5:], cache, 5)
        return m.logits(hidden)

    np.testing.assert_allclose(np.asarray(cached(model, tokens)), np.asarray(forward(model, tokens))[:, 5:], atol=1e-5)


def test_generate_cli_completes_paris(capsys):
    """The user's first sanity check of the offline SmolLM2-135M-Instruct (plain completion)."""
    code = cli_main(["generate", "--model", "gguf:smollm2-135m-instruct", "--prompt", "The capital of France is",
                     "--max-new-tokens", "4"])
    out = capsys.readouterr().out
    assert code == 0
    assert out.startswith("The capital of France is") and "Paris" in out[len("The capital of France is"):]


def test_generate_cli_unknown_preset_exits_2_with_one_line(capsys):
    code = cli_main(["generate", "--model", "smollm2-13b", "--prompt", "hi"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "known: smollm2-135m" in err and "Traceback" not in err


def test_generate_cli_rejects_zero_new_tokens_before_loading(capsys):
    assert cli_main(["generate", "--model", "tiny", "--prompt", "hi", "--max-new-tokens", "0"]) == 2
    assert "--max-new-tokens: must be at least 1, got 0" in capsys.readouterr().err
