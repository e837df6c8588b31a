"""HF checkpoint import/export: logits parity with `transformers` (PyTorch CPU) on tiny random
checkpoints written by `save_pretrained`, and the user errors of bad checkpoint directories."""

import json
import os

import jax.numpy as jnp
import numpy as np
import pytest

import torch
import transformers

from tokeff.cli import main as cli_main
from tokeff.errors import UserError
from tokeff.models.export import export_hf
from tokeff.models.load import load_model

_SMALL = dict(vocab_size=128, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256)

CONFIGS = {
    "llama-gqa-tied": (transformers.LlamaConfig, dict(tie_word_embeddings=True)),
    "llama-untied-mha": (transformers.LlamaConfig, dict(tie_word_embeddings=False, num_key_value_heads=4,
                                                        rms_norm_eps=1e-5, rope_theta=100_000.0)),
    "qwen2-bias": (transformers.Qwen2Config, dict(tie_word_embeddings=False)),
    "llama3-rope-scaling": (transformers.LlamaConfig, dict(
        tie_word_embeddings=True, hidden_size=64, num_attention_heads=2, num_key_value_heads=1,
        rope_theta=500_000.0, rope_scaling={"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0,
                                            "high_freq_factor": 4.0, "original_max_position_embeddings": 32})),
}


def _save_random(kind: str, path, **save_kw):
    """A transformers model with every parameter perturbed (biases and norms are not trivial)."""
    config_cls, overrides = CONFIGS[kind]
    torch.manual_seed(0)
    model = transformers.AutoModelForCausalLM.from_config(config_cls(**{**_SMALL, **overrides}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    model.eval()
    model.save_pretrained(path, **save_kw)
    return model


def _tokens(vocab: int, shape=(2, 48)) -> np.ndarray:
    return np.random.default_rng(0).integers(0, vocab, shape).astype(np.int32)


def _torch_logits(model, tokens: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return model(torch.from_numpy(tokens.astype(np.int64))).logits.numpy()


@pytest.mark.parametrize("kind", list(CONFIGS))
def test_logits_match_transformers(kind, tmp_path):
    reference = _save_random(kind, tmp_path)
    loaded = load_model(str(tmp_path))
    tokens = _tokens(loaded.config.vocab_size)
    ours = np.asarray(loaded.model(jnp.asarray(tokens)))
    np.testing.assert_allclose(ours, _torch_logits(reference, tokens), atol=1e-4, rtol=0)


def test_llama3_rope_scaling_is_applied(tmp_path):
    """The scaled and unscaled frequencies must give different logits at these lengths, or the
    parity test above would not be testing the scaling."""
    _save_random("llama3-rope-scaling", tmp_path)
    loaded = load_model(str(tmp_path))
    assert loaded.config.rope_scaling == (8.0, 1.0, 4.0, 32)
    from tokeff.models.load import build_model
    from flax import nnx

    params = {p: np.asarray(v.get_value()) for p, v in nnx.to_flat_state(nnx.state(loaded.model, nnx.Param))}
    unscaled = build_model(loaded.config.replace(rope_scaling=None), params)
    tokens = jnp.asarray(_tokens(loaded.config.vocab_size))
    assert float(jnp.abs(unscaled(tokens) - loaded.model(tokens)).max()) > 1e-3


def test_sharded_checkpoint_loads(tmp_path):
    reference = _save_random("qwen2-bias", tmp_path, max_shard_size="20KB")
    assert os.path.exists(tmp_path / "model.safetensors.index.json")
    loaded = load_model(str(tmp_path))
    tokens = _tokens(loaded.config.vocab_size, (1, 16))
    np.testing.assert_allclose(np.asarray(loaded.model(jnp.asarray(tokens))), _torch_logits(reference, tokens),
                               atol=1e-4, rtol=0)


@pytest.mark.parametrize("kind", ["llama-gqa-tied", "qwen2-bias"])
def test_export_round_trip(kind, tmp_path):
    """import -> export -> (tokeff and transformers) load: identical logits, same architecture."""
    _save_random(kind, tmp_path / "src")
    loaded = load_model(str(tmp_path / "src"))
    export_hf(loaded, str(tmp_path / "out"))
    tokens = _tokens(loaded.config.vocab_size)
    before = np.asarray(loaded.model(jnp.asarray(tokens)))

    again = load_model(str(tmp_path / "out"))
    assert again.config.replace(name="x") == loaded.config.replace(name="x")
    np.testing.assert_array_equal(np.asarray(again.model(jnp.asarray(tokens))), before)

    reference = transformers.AutoModelForCausalLM.from_pretrained(str(tmp_path / "out")).eval()
    assert type(reference).__name__ == CONFIGS[kind][0].__name__.replace("Config", "ForCausalLM")
    np.testing.assert_allclose(_torch_logits(reference, tokens), before, atol=1e-4, rtol=0)


def test_hub_spec_downloads_then_loads_like_a_local_dir(tmp_path, monkeypatch):
    """`hf:<id>` = snapshot_download + local-dir import (the download itself is not run offline)."""
    import huggingface_hub

    _save_random("llama-gqa-tied", tmp_path)
    calls = []

    def fake_download(repo_id, **kw):
        calls.append(repo_id)
        if repo_id != "org/tiny":
            raise OSError(f"cannot reach the hub for {repo_id}")
        return str(tmp_path)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_download)
    loaded = load_model("hf:org/tiny")
    assert loaded.name == loaded.config.name == "hf:org/tiny" and calls == ["org/tiny"]
    with pytest.raises(UserError, match="could not download hf:org/missing"):
        load_model("hf:org/missing")


def test_export_refuses_non_empty_dir(tmp_path):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="already exists"):
        export_hf(load_model("tiny"), str(tmp_path / "out"))
    assert os.listdir(tmp_path) == ["out"]  # no temporary directory left behind


def test_export_preset_with_tokenizer_loads_in_tokeff(tmp_path):
    loaded = load_model("tiny-untied", seed=3)
    export_hf(loaded, str(tmp_path / "out"))
    again = load_model(str(tmp_path / "out"))
    assert again.tokenizer.encode("héllo").ids == loaded.tokenizer.encode("héllo").ids
    assert (again.bos_id, again.eos_id) == (loaded.bos_id, loaded.eos_id)
    tokens = jnp.asarray(_tokens(512, (1, 8)))
    np.testing.assert_array_equal(np.asarray(again.model(tokens)), np.asarray(loaded.model(tokens)))


# Bad checkpoint directories: one-line errors naming the file or tensor.


def test_missing_config_names_the_file(tmp_path):
    with pytest.raises(UserError, match=r"missing file .*config\.json"):
        load_model(str(tmp_path))


def test_missing_weights_name_the_file(tmp_path):
    _save_random("llama-gqa-tied", tmp_path)
    os.remove(tmp_path / "model.safetensors")
    with pytest.raises(UserError, match=r"missing file .*model\.safetensors"):
        load_model(str(tmp_path))


def test_missing_shard_names_the_file(tmp_path):
    _save_random("llama-gqa-tied", tmp_path, max_shard_size="20KB")
    shard = sorted(f for f in os.listdir(tmp_path) if f.endswith(".safetensors"))[-1]
    os.remove(tmp_path / shard)
    with pytest.raises(UserError, match=f"missing file .*{shard}"):
        load_model(str(tmp_path))


def test_unsupported_architecture(tmp_path):
    _save_random("llama-gqa-tied", tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["architectures"] = ["GPT2LMHeadModel"]
    (tmp_path / "config.json").write_text(json.dumps(config))
    with pytest.raises(UserError, match="architecture 'GPT2LMHeadModel' is not supported; supported: Llama"):
        load_model(str(tmp_path))


def test_wrong_tensor_shape_names_tensor_and_shapes(tmp_path):
    from safetensors.numpy import load_file, save_file

    _save_random("llama-gqa-tied", tmp_path)
    tensors = load_file(tmp_path / "model.safetensors")
    tensors["model.layers.1.mlp.up_proj.weight"] = np.zeros((40, 32), np.float32)
    save_file(tensors, tmp_path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(UserError, match=r"model\.layers\.1\.mlp\.up_proj\.weight has shape \(40, 32\), "
                                        r"expected \(48, 32\)"):
        load_model(str(tmp_path))


def test_cli_reports_bad_checkpoint_in_one_line(tmp_path, capsys):
    code = cli_main(["generate", "--model", str(tmp_path), "--prompt", "hi"])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "config.json" in err and "Traceback" not in err
