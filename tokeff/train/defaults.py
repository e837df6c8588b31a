"""Every key a training config has, with the defaults the configs in configs/ start from.

Configs are locked after loading, so a key not listed here is an error on the command line
(`--config.optim.lrr=...`): this function is the reference of the config schema.
"""

import ml_collections


def base_config() -> ml_collections.ConfigDict:
    """Every key a training config has, with neutral defaults (the other configs start from it)."""
    c = ml_collections.ConfigDict()
    c.model = "tiny"  # a preset (trained from scratch) or a load_model spec (gguf:..., hf:..., a dir)
    c.dtype = "float32"  # compute dtype; "bfloat16" = mixed precision with float32 master weights
    # attention path: "auto" (splash on TPU, cudnn on GPU in bfloat16, else reference), "reference",
    # "splash" (off TPU: Pallas interpret mode, slow, for checking) or "cudnn" (docs/accelerators.md)
    c.attention = "auto"
    c.seed = 0  # model init and data order

    c.data = ml_collections.ConfigDict()
    c.data.source = "arithmetic"  # "arithmetic" (generated) or "mmlu"
    c.data.pool_size = 1000  # arithmetic: examples generated
    c.data.subjects = "medical"  # mmlu: subjects or groups, comma separated
    c.data.path = ""  # a local multiple-choice file (.json/.jsonl/.csv/.parquet) instead of data.source
    c.data.fields = ""  # data.path's columns, e.g. "question=q,choices=a|b|c|d,answer=label"
    c.data.split_seed = 0  # mmlu: the per-subject train/eval split (eval side is never trained on)
    c.data.eval_fraction = 0.2
    c.data.prompt_format = "qa"  # "qa" or "chat" (the model's chat template)
    c.data.k_shot = 0  # solved train-side examples before each question (training and evaluation)
    c.data.loss_on = "answer"  # "answer" (answer tokens only) or "all" (whole sequence)
    c.data.strategy = "random"  # composition: random, few_long, many_short, balanced, ...
    c.data.token_budget = 0  # composition target (0 = unset): dataset volume N*L in tokens
    c.data.n_examples = 0  # composition target N (0 = unset)
    c.data.avg_tokens = 0.0  # composition target L (0 = unset)
    c.data.max_len = 0  # strategy "truncate": cap per example
    c.data.layout = "packed"  # "packed" (segment ids) or "padded" (length buckets)
    c.data.row_len = 64  # packed row length (0 = next power of two over the longest example)
    c.data.cache_dir = ""  # tokenisation cache ("" = $TOKEFF_CACHE/tokens, else ~/.cache/tokeff/tokens; "none" = off)

    c.batch_size = 8  # rows per step, global (all devices, all microbatches)
    c.microbatches = 1  # gradient accumulation: the step runs batch_size/microbatches rows at a time

    c.budget = ml_collections.ConfigDict()
    c.budget.flops = 2.02e10  # the budget of record (tokeff.flops, padding included)
    c.budget.tokens = 0  # also stop after this many example tokens (0 = no limit)
    c.budget.epochs = 0  # also stop after this many epochs (0 = no limit)

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 3e-3
    c.optim.schedule = "cosine"  # cosine, linear or constant after warmup
    c.optim.warmup_steps = 5
    c.optim.min_lr_ratio = 0.1
    c.optim.b1 = 0.9
    c.optim.b2 = 0.95
    c.optim.eps = 1e-8
    c.optim.weight_decay = 0.0
    c.optim.clip_norm = 1.0  # global-norm clipping (0 = off)
    c.optim.moments_dtype = "float32"  # Adam's moments; "bfloat16" halves their memory (tokeff.train.optimizer)

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all devices not used by the other axes
    c.mesh.fsdp = 1
    c.mesh.tensor = 1
    c.mesh.num_devices = 0  # 0: every device of every process; N: the first N (one host only)

    c.checkpoint = ml_collections.ConfigDict()
    c.checkpoint.every_steps = 20  # also saved at the end and on SIGTERM (0 = only those)
    c.checkpoint.keep = 2
    c.checkpoint.async_save = True

    c.log = ml_collections.ConfigDict()
    c.log.progress = True  # tqdm bar
    c.log.tensorboard = False  # event files in workdir/tensorboard

    c.distributed = ml_collections.ConfigDict()
    c.distributed.enabled = False  # True on multi-host slices: jax.distributed.initialize()
    c.distributed.coordinator = ""  # "" = auto-detect (TPU VMs, SLURM); else host:port
    c.distributed.num_processes = 0  # 0 = auto-detect
    c.distributed.process_id = -1  # -1 = auto-detect
    c.distributed.cpu_collectives = ""  # "gloo" for multi-process CPU runs
    return c
