"""One sweep point: a budgeted fine-tune, then its evaluation, as the metrics of one results row.

`train_and_evaluate` is the default sweep runner. Training is TRAIN's resumable `train`; the
evaluation scores held-out questions the run never trained on — the eval side of the same
per-subject split (`data.split_seed`, `data.eval_fraction`) — in the prompt format it trained
with: accuracy by cloze scoring (the lowest-loss answer choice, as Lagasse et al.) and
`eval_loss`, the mean NLL per token of the correct answers. Its FLOPs are recorded in `extra`,
apart from the training budget.

The evaluation is written to `workdir/eval.json` before it is returned, so a sweep killed
after it re-uses it instead of scoring again.

Every point of a sweep compiles the same train step and scoring shapes; JAX's persistent
compilation cache turns those compiles into disk reads after the first point (on a 2-core CPU
the tiny point drops from ~80 s to ~14 s), so it is switched on unless the user chose a cache.
"""

from __future__ import annotations

import json
import os
from typing import Any

import ml_collections

from tokeff.errors import UserError


def enable_compilation_cache() -> None:
    """Persist compiled programs in $TOKEFF_CACHE/jax (default ~/.cache/tokeff/jax)."""
    import jax

    if jax.config.jax_compilation_cache_dir:
        return
    root = os.environ.get("TOKEFF_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "tokeff")
    jax.config.update("jax_compilation_cache_dir", os.path.join(root, "jax"))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def train_and_evaluate(point, config: ml_collections.ConfigDict, workdir: str,
                       eval_config: ml_collections.ConfigDict) -> dict[str, Any]:
    """Train `config` in `workdir` (resuming), evaluate the result; metrics for the results row."""
    from tokeff.train.loop import train

    enable_compilation_cache()
    summary = train(config, workdir)
    if summary["status"] != "completed":
        raise UserError(f"{point.run_id}: training stopped early ({summary['status']}); re-run to resume")
    evaluation = _cached_evaluation(config, workdir, eval_config)
    dataset = config.data.source
    if dataset == "mmlu":
        dataset = f"mmlu:{config.data.subjects}"
    return {
        "params": summary["params"],
        "non_embedding_params": summary["non_embedding_params"],
        "dataset": dataset,
        "n_examples": summary["n_examples"],
        "avg_tokens": summary["avg_tokens"],
        "unique_tokens": summary["unique_tokens"],
        "tokens_seen": summary["tokens_seen"],
        "epochs": summary["epochs"],
        "flops_used": summary["flops_used"],
        "steps": summary["steps"],
        "eval_loss": evaluation["loss"],
        "accuracy": evaluation["accuracy"],
        "n_eval": evaluation["n"],
        "extra": {
            "eval_method": evaluation["method"],
            "accuracy_ci95": evaluation["ci95"],
            "chance": evaluation["chance"],
            "eval_flops": evaluation["flops"],
            "final_train_loss": summary["final_loss"],
            "train_wall_seconds": summary["wall_seconds"],
            "flops_per_second": summary["flops_per_second"],
            "device_kind": summary["device_kind"],
            "devices": summary["devices"],
            "dataset_tokens": summary["dataset_tokens"],
        },
    }


def _cached_evaluation(config, workdir: str, eval_config) -> dict[str, Any]:
    import jax

    path = os.path.join(workdir, "eval.json")
    if os.path.exists(path):
        with open(path) as f:
            return json.load(f)
    from tokeff.eval.multiple_choice import evaluate_multiple_choice
    from tokeff.train.dataset import training_task
    from tokeff.train.trained import load_trained

    loaded = load_trained(workdir)
    task = training_task(config.data, loaded.name, loaded.tokens, loaded.config.max_seq_len, int(config.seed))
    records = task.eval_set(int(eval_config.max_questions))
    result = evaluate_multiple_choice(
        loaded, records, method=eval_config.method, prompt_format=task.prompt, exemplars=task.exemplars,
        bos_id=loaded.prepend_bos_id, batch_size=int(eval_config.batch_size), progress=bool(config.log.progress))
    evaluation = result.summary()
    if jax.process_index() == 0:
        tmp = f"{path}.tmp-{os.getpid()}"
        with open(tmp, "w") as f:
            json.dump(evaluation, f, indent=2)
        os.replace(tmp, path)
    return evaluation
