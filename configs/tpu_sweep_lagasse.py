"""The Lagasse et al. (2025) study at full scale on a TPU VM or slice: 4 models x 5 FLOP budgets
x 3 strategies x 3 seeds = 180 fine-tunes of hub checkpoints on MMLU, each evaluated on the
eval side of a per-subject split.

    get_config()                       the medical subject group (the paper's BRICC stand-in)
    get_config("anatomy")              one subject, or a comma-separated list / group name

Each point selects examples with its strategy until one epoch of packed 1024-token rows fills
90% of its FLOP budget (`token_budget_fill`), then trains until the budget is spent exactly.
Budgets span 2e13..1e15 FLOPs: ~24k..1.2M training tokens for SmolLM2-135M (0.9 GFLOP/token at
1024) and ~2k..100k for SmolLM2-1.7B (~11 GFLOP/token; 1e13 would not buy it one 1024-token row). Small subjects run out of examples at
the top budgets: every strategy then takes the whole pool (the row records it, via
unique_tokens and epochs), so choose budgets inside the pool for a clean comparison.

Launch and cost: experiments/tpu_launch.sh (README "Accelerator VMs");
`python experiments/estimate_cost.py --config configs/tpu_sweep_lagasse.py --device v5e`.
"""

import ml_collections

from tokeff.train.defaults import base_config

MODELS = (
    "hf:HuggingFaceTB/SmolLM2-135M-Instruct",
    "hf:HuggingFaceTB/SmolLM2-360M-Instruct",
    "hf:Qwen/Qwen2.5-0.5B-Instruct",
    "hf:HuggingFaceTB/SmolLM2-1.7B-Instruct",
)


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.train = base_config()
    c.train.dtype = "bfloat16"
    c.train.data.source = "mmlu"
    c.train.data.subjects = arg or "medical"
    c.train.data.prompt_format = "qa"  # the paper's "Question: ... Answer: ..." format
    c.train.data.layout = "packed"
    c.train.data.row_len = 1024
    c.train.batch_size = 32  # global rows per step: divisible by the slice's data x fsdp shards
    c.train.mesh.data = -1
    c.train.optim.lr = 2e-5
    c.train.optim.warmup_steps = 5
    c.train.optim.weight_decay = 0.01
    c.train.checkpoint.every_steps = 50
    c.train.log.progress = True
    c.train.log.tensorboard = True

    c.axis_keys = ml_collections.ConfigDict(dict(
        model="model", budget="budget.flops", seed="seed", composition="data"))
    c.token_budget_fill = 0.9
    c.grid = ml_collections.ConfigDict()
    c.grid.models = MODELS
    c.grid.budgets = (2e13, 5e13, 1e14, 3e14, 1e15)
    c.grid.compositions = (dict(strategy="few_long"), dict(strategy="many_short"), dict(strategy="balanced"))
    c.grid.seeds = (0, 1, 2)
    # All of the held-out questions, cloze-scored (the paper's lowest-loss answer choice).
    c.eval = ml_collections.ConfigDict(dict(method="cloze", max_questions=100_000, batch_size=64))
    return c
