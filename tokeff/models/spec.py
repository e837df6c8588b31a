"""Model spec strings, parsed once: what `--model` / `config.model` may name.

    smollm2-135m, tiny, ...         a preset (randomly initialised: from-scratch runs, tests)
    gguf:smollm2-135m-instruct      a GGUF file bundled by a package (offline SmolLM2-135M-Instruct)
    gguf:/path/to/model.gguf        any Llama-architecture GGUF file
    hf:HuggingFaceTB/SmolLM2-135M   a hub checkpoint (online only)
    /path/to/checkpoint_dir         a local HF directory (config.json + safetensors), e.g. an export

Loading the weights (`tokeff.models.load.load_model`) and loading only the tokenizer
(`tokeff.data.model_tokenizer.load_tokenizer`) both start here, so they cannot disagree on
what a string means.
"""

from __future__ import annotations

import dataclasses
import os
import re

from tokeff.errors import UserError

KINDS = ("preset", "gguf", "hf", "dir")


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    kind: str  # one of KINDS
    target: str  # preset name, bundled GGUF name or .gguf path, hub repo id, or directory
    text: str  # the spec as written
    field: str = "model"  # what the user called it (`--model`, `model`): messages about it name that

    @property
    def gguf_path(self) -> str:
        """The GGUF file of a gguf: spec (a bundled name resolves to its package's file)."""
        from tokeff.models.gguf_checkpoint import bundled_path

        return self.target if self.target.endswith(".gguf") else bundled_path(self.target, self.field)


def parse_model_spec(spec: str, field: str = "model") -> ModelSpec:
    """The kind and target of `spec`; an unknown preset's error lists close matches. `field`: what
    the user called the spec (`--model` on the command line, `model` in a training config)."""
    from tokeff.models.config import PRESETS, get_preset

    if not isinstance(spec, str) or not spec:
        raise UserError(f"{field}: must be a non-empty spec string, got {spec!r}")
    for prefix in ("gguf", "hf"):
        if spec.startswith(f"{prefix}:"):
            target = spec[len(prefix) + 1:]
            if not target:
                raise UserError(f"{field}: {spec!r} names no {prefix} checkpoint")
            return ModelSpec(prefix, target, spec, field)
    if spec in PRESETS:
        return ModelSpec("preset", spec, spec, field)
    if os.path.isdir(spec):
        return ModelSpec("dir", spec, spec, field)
    if os.sep in spec or spec.startswith("."):
        raise UserError(f"{field}: checkpoint directory {spec} does not exist")
    get_preset(spec, field=field)  # raises, listing close preset names
    return ModelSpec("preset", spec, spec, field)


def is_preset(spec: str) -> bool:
    """A preset name (trained from scratch) rather than a checkpoint to fine-tune."""
    from tokeff.models.config import PRESETS

    return spec in PRESETS


def preset_for_spec(spec: str) -> str:
    """The preset whose shapes a model spec loads (for FLOP estimates without downloading it).

    `gguf:smollm2-135m-instruct`, `hf:HuggingFaceTB/SmolLM2-360M-Instruct` and
    `hf:Qwen/Qwen2.5-0.5B-Instruct` map to `smollm2-135m`, `smollm2-360m`, `qwen2.5-0.5b`.
    """
    from tokeff.models.config import PRESETS

    name = spec.split(":", 1)[-1].split("/")[-1].lower()
    name = re.sub(r"[-_.](instruct|it|chat|base)$", "", name)
    name = re.sub(r"[-_.]q\d.*$", "", name)  # gguf quantisation suffixes
    if name in PRESETS:
        return name
    raise UserError(f"model: no preset matches {spec!r}; known presets: {', '.join(PRESETS)}")
