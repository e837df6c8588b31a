"""GGUF import of the offline SmolLM2-135M-Instruct: tokenizer rebuild, q/k un-permutation, shapes."""

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from tokeff.errors import UserError
from tokeff.models import gguf_checkpoint
from tokeff.models.config import get_preset
from tokeff.models.tokenizer import decode, encode, render_chat

TEXT = ("Paris is the capital and most populous city of France. With an estimated population of "
        "2,102,650 residents in January 2023 in an area of more than 105 km2, Paris is the fourth-most "
        "populous city in the European Union.")


@pytest.fixture(scope="module")
def tokenizer_meta():
    return gguf_checkpoint.read_gguf_tokenizer(gguf_checkpoint.bundled_path("smollm2-135m-instruct"))


def test_tokenizer_rebuilt_from_metadata(tokenizer_meta):
    tokenizer, bos, eos = tokenizer_meta.tokenizer, tokenizer_meta.bos_id, tokenizer_meta.eos_id
    assert tokenizer.get_vocab_size() == 49152
    assert (tokenizer.id_to_token(bos), tokenizer.id_to_token(eos)) == ("<|im_start|>", "<|im_end|>")
    assert encode(tokenizer, "<|im_start|>user\n") == [1, 4093, 198]
    assert [tokenizer.id_to_token(i) for i in encode(tokenizer, "The capital of France is")] == [
        "The", "Ġcapital", "Ġof", "ĠFrance", "Ġis"]
    assert encode(tokenizer, "2024") == [tokenizer.token_to_id(d) for d in "2024"]  # digits split singly
    for text in (TEXT, "naïve café — 東京 🙂\n\ttabs", "<|im_end|>\n"):
        assert decode(tokenizer, encode(tokenizer, text), skip_special=False) == text


def test_smollm2_vocab_presets_get_the_gguf_tokenizer(tokenizer_meta):
    from tokeff.models.load import preset_tokenizer

    preset = preset_tokenizer(get_preset("ladder-2m"))
    assert preset.tokenizer.get_vocab() == tokenizer_meta.tokenizer.get_vocab()
    assert (preset.chat_template, preset.bos_id, preset.eos_id) == (
        tokenizer_meta.chat_template, tokenizer_meta.bos_id, tokenizer_meta.eos_id)


def test_chat_template_renders_chatml(tokenizer_meta):
    template = tokenizer_meta.chat_template
    prompt = render_chat(template, [{"role": "user", "content": "Hi"}])
    assert prompt.endswith("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")
    assert prompt.startswith("<|im_start|>system\n")


def test_unpermute_inverts_llama_cpp_permutation():
    w = np.arange(6 * 8 * 5, dtype=np.float32).reshape(6 * 8, 5)
    permuted = gguf_checkpoint.permute_rope_rows(w, 6)
    assert not np.array_equal(permuted, w)
    np.testing.assert_array_equal(gguf_checkpoint.unpermute_rope_rows(permuted, 6), w)


def test_loaded_shapes_match_the_smollm2_preset(smollm2_instruct):
    cfg = smollm2_instruct.config
    assert cfg.replace(name="smollm2-135m", rms_norm_eps=1e-5) == get_preset("smollm2-135m")
    assert cfg.params == 134_515_008
    assert smollm2_instruct.chat_template and smollm2_instruct.eos_id == 2


def test_unpermuted_weights_predict_text_well(smollm2_instruct):
    """A wrong q/k layout still runs but predicts badly: the loaded model's loss on ordinary text
    must be low (measured 1.77 nats/token; 3.13 with the q/k rows left as GGUF stores them)."""
    ids = jnp.asarray([encode(smollm2_instruct.tokenizer, TEXT)])
    logits = smollm2_instruct.model(ids[:, :-1])
    nll = float(optax.softmax_cross_entropy_with_integer_labels(logits, ids[:, 1:]).mean())
    assert nll < 2.2


def test_unknown_bundled_gguf_lists_known():
    with pytest.raises(UserError, match="known: gguf:smollm2-135m-instruct"):
        gguf_checkpoint.bundled_path("smollm2-360m-instruct")


def test_missing_gguf_file_is_named(tmp_path):
    from tokeff.models.load import load_model

    with pytest.raises(UserError, match="missing file .*nothere.gguf"):
        load_model(f"gguf:{tmp_path}/nothere.gguf")


def test_bos_is_prepended_only_when_the_tokenizer_adds_one(tokenizer_meta):
    """SmolLM2's GGUF says add_bos_token = false: training and eval rows must not start with
    <|im_start|> (a chat template adds its own)."""
    from tokeff.models.tokenizer import byte_tokenizer, prepended_bos

    tokenizer, bos = tokenizer_meta.tokenizer, tokenizer_meta.bos_id
    assert bos == tokenizer.token_to_id("<|im_start|>")
    assert prepended_bos(tokenizer, bos) is None
    # A Llama-style GGUF (add_bos_token = true) gets a post-processor, so BOS is prepended.
    from tokeff.models.gguf_checkpoint import tokenizer_from_metadata

    fields = {"tokenizer.ggml.model": "gpt2", "tokenizer.ggml.tokens": ["a", "b", "<s>"],
              "tokenizer.ggml.token_type": [1, 1, 3], "tokenizer.ggml.merges": [],
              "tokenizer.ggml.bos_token_id": 2, "tokenizer.ggml.add_bos_token": True}
    llama = tokenizer_from_metadata(fields)
    llama_like, llama_bos = llama.tokenizer, llama.bos_id
    assert prepended_bos(llama_like, llama_bos) == 2
    assert prepended_bos(byte_tokenizer(), 256) is None
