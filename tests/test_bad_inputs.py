"""Every command's bad input: exit 2, one line on stderr naming the field, no traceback, nothing written.

One table of cases (`CASES`), run in-process through `tokeff.cli.main` (a subprocess pays ~3 s of
JAX import per case), plus a few through the real `python -m tokeff.cli` entry point. Each case
runs in a shared world of inputs (tables, fit dirs, model dirs, config files) whose files are
hashed before and after: a refused command must leave every byte as it was and add nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "fixtures"))
from handmade_fit import save_fit_dir, save_grouped_fit_dir  # noqa: E402

REPO = pathlib.Path(__file__).resolve().parent.parent
TINY = str(REPO / "configs" / "tiny.py")
SWEEP_TINY = str(REPO / "configs" / "sweep_tiny.py")
MMLU = "{W}/mc.jsonl"
LONG = "x" * 300

# (id, argv, the field the one-line message must name, or a tuple: the field and what must be said
# about it, e.g. ("--out", "path is empty")). "{W}" is the world directory.
CASES: list[tuple[str, list[str], str | tuple[str, ...]]] = []


def case(name: str, argv: list[str], field: str | tuple[str, ...]) -> None:
    CASES.append((name, argv, field))


# --- flops -------------------------------------------------------------------------------
DEMO_SMOKE = str(REPO / "tokeff" / "demo" / "configs" / "demo.py") + ":smoke"

case("flops-unknown-preset", ["flops", "--model", "nope", "--seq-len", "64"], ("--model", "nope"))
case("flops-seq-len-0", ["flops", "--model", "tiny", "--seq-len", "0"], "--seq-len")
case("flops-seq-len-neg", ["flops", "--model", "tiny", "--seq-len", "-4"], "--seq-len")
case("flops-seq-len-text", ["flops", "--model", "tiny", "--seq-len", "many"], "--seq-len")
case("flops-batch-0", ["flops", "--model", "tiny", "--seq-len", "64", "--batch", "0"], "--batch")
case("flops-batch-neg", ["flops", "--model", "tiny", "--seq-len", "64", "--batch", "-1"], "--batch")
case("flops-missing-model", ["flops", "--seq-len", "64"], "--model")
case("flops-unknown-flag", ["flops", "--model", "tiny", "--seq-len", "64", "--bogus"], "--bogus")

# --- generate ----------------------------------------------------------------------------
case("generate-unknown-preset", ["generate", "--model", "nope", "--prompt", "hi"], "nope")
case("generate-missing-dir", ["generate", "--model", "{W}/no-such-dir", "--prompt", "hi"], "no-such-dir")
case("generate-garbage-config", ["generate", "--model", "{W}/model-bad-config", "--prompt", "hi"], "config.json")
case("generate-config-not-object", ["generate", "--model", "{W}/model-list-config", "--prompt", "hi"], "config.json")
case("generate-garbage-weights", ["generate", "--model", "{W}/model-bad-weights", "--prompt", "hi"],
     "model.safetensors")
case("generate-truncated-weights", ["generate", "--model", "{W}/model-cut-weights", "--prompt", "hi"],
     "model.safetensors")
case("generate-no-weights", ["generate", "--model", "{W}/model-no-weights", "--prompt", "hi"], "model.safetensors")
case("generate-corrupt-tokenizer", ["generate", "--model", "{W}/model-bad-tokenizer", "--prompt", "hi"],
     "tokenizer.json")
case("generate-max-new-0", ["generate", "--model", "tiny", "--prompt", "hi", "--max-new-tokens", "0"],
     "--max-new-tokens")
case("generate-max-new-neg", ["generate", "--model", "tiny", "--prompt", "hi", "--max-new-tokens", "-3"],
     "--max-new-tokens")
case("generate-bad-dtype", ["generate", "--model", "tiny", "--prompt", "hi", "--dtype", "float8"], "--dtype")
case("generate-missing-prompt", ["generate", "--model", "tiny"], "--prompt")
case("generate-bad-gguf", ["generate", "--model", "gguf:no-such-model", "--prompt", "hi"], "no-such-model")

# --- compose -----------------------------------------------------------------------------
C = ["compose", "--path", MMLU, "--model", "tiny"]
case("compose-missing-path", ["compose", "--path", "{W}/nope.jsonl", "--model", "tiny"], ("--path", "nope.jsonl"))
case("compose-garbage-model-config", [*C[:3], "--model", "{W}/model-bad-config"], "config.json")
case("compose-corrupt-tokenizer", [*C[:3], "--model", "{W}/model-bad-tokenizer"], "tokenizer.json")
case("compose-unknown-strategy", [*C, "--strategy", "fancy"], "--strategy")
case("compose-token-budget-neg", [*C, "--token-budget", "-5"], "token")
case("compose-n-examples-0", [*C, "--n-examples", "0"], "n_examples")
case("compose-avg-tokens-nan", [*C, "--avg-tokens", "nan"], "--avg-tokens")
case("compose-avg-tokens-neg", [*C, "--avg-tokens", "-3"], "avg_tokens")
case("compose-eval-fraction-2", [*C, "--eval-fraction", "2"], "eval")
case("compose-eval-fraction-neg", [*C, "--eval-fraction", "-0.1"], "eval")
case("compose-k-shot-neg", [*C, "--k-shot", "-1"], "k")
case("compose-bins-0", [*C, "--bins", "0"], "bins")
case("compose-window-no-bounds", [*C, "--strategy", "length_window"], "lo")
case("compose-window-inverted", [*C, "--strategy", "length_window", "--lo", "50", "--hi", "10"], "lo")
case("compose-truncate-no-cap", [*C, "--strategy", "truncate"], "max_len")
case("compose-option-wrong-strategy", [*C, "--strategy", "random", "--max-len", "8"], "max")
case("compose-unknown-subject", [*C, "--subjects", "astrology_nope"], "astrology_nope")
case("compose-bad-format", [*C, "--format", "yaml"], "--format")
case("compose-bad-fields", [*C, "--fields", "question"], "fields")
case("compose-unsupported-ext", ["compose", "--path", "{W}/table.txt", "--model", "tiny"], "table.txt")

# --- eval --------------------------------------------------------------------------------
E = ["eval", "--model", "tiny", "--dataset", MMLU]
case("eval-unknown-method", [*E, "--method", "guess"], "--method")
case("eval-limit-0", [*E, "--limit", "0"], "--limit")
case("eval-limit-neg", [*E, "--limit", "-2"], "--limit")
case("eval-batch-size-0", [*E, "--batch-size", "0"], "--batch-size")
case("eval-k-shot-neg", [*E, "--k-shot", "-1"], "k")
case("eval-eval-fraction-2", [*E, "--eval-fraction", "2"], "eval")
case("eval-eval-fraction-nan", [*E, "--eval-fraction", "nan"], "eval")
case("eval-missing-dataset", ["eval", "--model", "tiny", "--dataset", "{W}/nope.jsonl"], "nope.jsonl")
case("eval-unknown-preset", ["eval", "--model", "nope", "--dataset", MMLU], "nope")
case("eval-garbage-model-config", ["eval", "--model", "{W}/model-bad-config", "--dataset", MMLU], "config.json")
case("eval-garbage-weights", ["eval", "--model", "{W}/model-bad-weights", "--dataset", MMLU], "model.safetensors")
case("eval-bad-split", [*E, "--split", "test"], "--split")
case("eval-unknown-subject", [*E, "--subjects", "astrology_nope"], "astrology_nope")

# --- train -------------------------------------------------------------------------------
T = ["train", "--config", TINY, "--workdir", "{W}/new-run"]
case("train-missing-config", ["train", "--config", "{W}/nope.py", "--workdir", "{W}/new-run"], "--config")
case("train-config-syntax-error", ["train", "--config", "{W}/cfg_syntax.py", "--workdir", "{W}/new-run"], "syntax")
case("train-config-no-get-config", ["train", "--config", "{W}/cfg_noget.py", "--workdir", "{W}/new-run"], "get_config")
case("train-config-returns-dict", ["train", "--config", "{W}/cfg_dict.py", "--workdir", "{W}/new-run"], "get_config")
case("train-config-raises", ["train", "--config", "{W}/cfg_raises.py", "--workdir", "{W}/new-run"], "get_config")
case("train-config-import-error", ["train", "--config", "{W}/cfg_import.py", "--workdir", "{W}/new-run"],
     "cfg_import.py")
case("train-config-file-typo", ["train", "--config", "{W}/cfg_typo.py", "--workdir", "{W}/new-run"], "optim.lrr")
case("train-config-file-new-section", ["train", "--config", "{W}/cfg_section.py", "--workdir", "{W}/new-run"],
     "optimizer")
case("train-config-file-scalar-for-section", ["train", "--config", "{W}/cfg_scalar.py", "--workdir",
                                              "{W}/new-run"], "optim")
case("train-override-typo", [*T, "--config.optim.lrr=1e-5"], "optim.lrr")
case("train-override-unknown-section", [*T, "--config.optimizer.lr=1e-5"], "optimizer")
case("train-override-section", [*T, "--config.optim=3"], "optim")
case("train-override-not-a-number", [*T, "--config.budget.flops=lots"], "budget.flops")
case("train-override-not-an-int", [*T, "--config.batch_size=2.5"], "batch_size")
case("train-override-not-a-bool", [*T, "--config.log.progress=maybe"], "log.progress")
case("train-override-no-value", [*T, "--config.seed"], "seed")
case("train-override-not-config", [*T, "--lr=3"], "--lr")
for value in ("nan", "inf", "-inf", "0", "-1e12"):
    case(f"train-budget-flops-{value}", [*T, f"--config.budget.flops={value}"], "budget.flops")
case("train-budget-flops-1e18-tiny", [*T, "--config.budget.flops=1e18"], "budget.flops")
for value in ("nan", "inf", "0", "-0.1"):
    case(f"train-optim-lr-{value}", [*T, f"--config.optim.lr={value}"], "optim.lr")
for key, value in [("budget.tokens", "-1"), ("budget.epochs", "-2"), ("optim.warmup_steps", "-1"),
                   ("optim.min_lr_ratio", "1.5"), ("optim.b1", "1.2"), ("optim.b2", "-0.5"), ("optim.eps", "0"),
                   ("optim.weight_decay", "-1"), ("optim.clip_norm", "-1"), ("optim.clip_norm", "nan"),
                   ("data.pool_size", "0"), ("data.eval_fraction", "1"), ("data.eval_fraction", "0"),
                   ("data.token_budget", "-100"), ("data.n_examples", "-1"), ("data.avg_tokens", "-2"),
                   ("data.avg_tokens", "nan"), ("data.max_len", "-1"), ("data.row_len", "-4"),
                   ("batch_size", "0"), ("batch_size", "-8"), ("microbatches", "0"),
                   ("checkpoint.every_steps", "-1"), ("checkpoint.keep", "0"), ("dtype", "float8"),
                   ("data.layout", "ragged"), ("data.loss_on", "everything"), ("data.prompt_format", "xml")]:
    case(f"train-{key}-{value}", [*T, f"--config.{key}={value}"], key)
case("train-unknown-model", [*T, "--config.model=nope"], "nope")
case("train-unknown-source", [*T, "--config.data.source=arithmetc"], "source")
case("train-unknown-strategy", [*T, "--config.data.strategy=fancy"], "strategy")
case("train-unknown-schedule", [*T, "--config.optim.schedule=step"], "optim.schedule")
case("train-batch-not-divisible", [*T, "--config.batch_size=6", "--config.microbatches=4"], "batch_size")
case("train-too-many-devices", [*T, "--config.mesh.num_devices=64"], "mesh.num_devices")
case("train-budget-below-one-step", [*T, "--config.budget.flops=1e3"], "budget")
case("train-workdir-is-file", ["train", "--config", TINY, "--workdir", "{W}/afile"], "--workdir")
case("train-workdir-under-file", ["train", "--config", TINY, "--workdir", "{W}/afile/run"], "--workdir")
case("train-workdir-too-long", ["train", "--config", TINY, "--workdir", f"{{W}}/{LONG}"], "--workdir")
case("train-workdir-read-only", ["train", "--config", TINY, "--workdir", "{W}/ro/run"], "--workdir")
case("train-workdir-garbage-config", ["train", "--config", TINY, "--workdir", "{W}/wd-garbage"], "config.json")
case("train-workdir-config-not-object", ["train", "--config", TINY, "--workdir", "{W}/wd-list"], "config.json")
case("train-workdir-other-run", ["train", "--config", TINY, "--workdir", "{W}/wd-other"], "--workdir")
case("train-missing-workdir-flag", ["train", "--config", TINY], "--workdir")

# --- sweep -------------------------------------------------------------------------------
S = ["sweep", "--config", SWEEP_TINY, "--workdir", "{W}/new-sweep"]
for shard in ("2/2", "-1/2", "0/0", "1/0", "a/b", "1", "0/1/2"):
    case(f"sweep-shard-{shard}", [*S, "--shard", shard], "--shard")
case("sweep-missing-config", ["sweep", "--config", "{W}/nope.py", "--workdir", "{W}/new-sweep"], "--config")
case("sweep-config-syntax-error", ["sweep", "--config", "{W}/cfg_syntax.py", "--workdir", "{W}/new-sweep"], "syntax")
case("sweep-config-no-get-config", ["sweep", "--config", "{W}/cfg_noget.py", "--workdir", "{W}/new-sweep"],
     "get_config")
case("sweep-config-returns-dict", ["sweep", "--config", "{W}/cfg_dict.py", "--workdir", "{W}/new-sweep"], "get_config")
case("sweep-override-typo", [*S, "--config.grid.modelz=tiny"], "grid.modelz")
case("sweep-override-not-config", [*S, "--grid=3"], "--grid")
case("sweep-workdir-is-file", ["sweep", "--config", SWEEP_TINY, "--workdir", "{W}/afile"], "--workdir")
case("sweep-workdir-too-long", ["sweep", "--config", SWEEP_TINY, "--workdir", f"{{W}}/{LONG}"], "--workdir")
case("sweep-workdir-read-only", ["sweep", "--config", SWEEP_TINY, "--workdir", "{W}/ro/sweep"], "--workdir")

# --- fit ---------------------------------------------------------------------------------
F = ["fit", "{W}/table.csv", "--form", "chinchilla", "--map", "N=params", "--map", "D=tokens", "--target", "loss",
     "--method", "map", "--out", "{W}/new-fit"]
case("fit-missing-data", ["fit", "{W}/nope.csv", *F[2:]], "nope.csv")
case("fit-unsupported-ext", ["fit", "{W}/table.txt", *F[2:]], "table.txt")
case("fit-garbage-csv", ["fit", "{W}/garbage.csv", *F[2:]], "garbage.csv")
case("fit-empty-csv", ["fit", "{W}/empty.csv", *F[2:]], "empty.csv")
case("fit-garbage-jsonl-results", ["fit", "{W}/bad-results.jsonl", *F[2:]], "bad-results.jsonl")
case("fit-single-row", ["fit", "{W}/one.csv", *F[2:]], "point")
case("fit-unknown-form", [*F[:2], "--form", "nope", *F[4:]], "nope")
case("fit-unknown-column", [*F[:4], "--map", "N=parameters", *F[6:]], "parameters")
case("fit-map-no-equals", [*F, "--map", "N"], "--map")
case("fit-map-unknown-var", [*F, "--map", "Q=params"], "--map")
case("fit-target-unknown", [*F[:8], "--target", "perplexity", *F[10:]], "perplexity")
case("fit-target-text-column", [*F[:8], "--target", "name", *F[10:]], "name")
case("fit-nan-rows", ["fit", "{W}/nan.csv", *F[2:]], "NaN")
case("fit-negative-input", ["fit", "{W}/negative.csv", *F[2:]], "input N")
case("fit-constant-input", ["fit", "{W}/constant.csv", *F[2:]], "input D")
case("fit-prior-no-spec", [*F, "--prior", "alpha"], "--prior")
case("fit-prior-unknown-param", [*F, "--prior", "gamma=normal(0,1)"], "gamma")
case("fit-prior-uniform-inverted", [*F, "--prior", "alpha=uniform(0.6,0.1)"], "prior")
case("fit-prior-lognormal-neg-scale", [*F, "--prior", "A=lognormal(6,-2)"], "prior")
case("fit-prior-normal-zero-scale", [*F, "--prior", "E=normal(1,0)"], "prior")
case("fit-prior-halfnormal-neg", [*F, "--prior", "E=halfnormal(-1)"], "prior")
case("fit-prior-gamma-neg", [*F, "--prior", "E=gamma(-1,2)"], "prior")
case("fit-prior-truncnormal-inverted", [*F, "--prior", "alpha=truncnormal(0.3,0.1,1,0)"], "prior")
case("fit-prior-nan", [*F, "--prior", "alpha=normal(nan,1)"], "prior")
case("fit-prior-unknown-dist", [*F, "--prior", "alpha=cauchy(0,1)"], "prior")
case("fit-prior-wrong-arity", [*F, "--prior", "alpha=normal(0)"], "prior")
case("fit-prior-unparsable", [*F, "--prior", "alpha=normal 0 1"], "prior")
case("fit-prior-text-arg", [*F, "--prior", "alpha=normal(a,1)"], "prior")
case("fit-bootstrap-0", [*F[:-3], "classic", "--out", "{W}/new-fit", "--bootstrap", "0"], "--bootstrap")
case("fit-bootstrap-1", [*F[:-3], "classic", "--out", "{W}/new-fit", "--bootstrap", "1"], "--bootstrap")
case("fit-target-accept-2", [*F, "--target-accept", "2"], "--target-accept")
case("fit-target-accept-nan", [*F, "--target-accept", "nan"], "--target-accept")
case("fit-target-accept-0", [*F, "--target-accept", "0"], "--target-accept")
case("fit-chains-0", [*F, "--chains", "0"], "--chains")
case("fit-draws-0", [*F, "--draws", "0"], "--draws")
case("fit-warmup-neg", [*F, "--warmup", "-5"], "--warmup")
case("fit-unknown-method", [*F[:-3], "gibbs", "--out", "{W}/new-fit"], "--method")
case("fit-unknown-likelihood", [*F, "--likelihood", "cauchy"], "--likelihood")
case("fit-classic-student-t", [*F[:-3], "classic", "--out", "{W}/new-fit", "--likelihood", "student_t"],
     "--likelihood")
case("fit-missing-module", [*F, "--module", "no_such_module_xyz"], "no_such_module_xyz")
case("fit-out-is-file", [*F[:-1], "{W}/afile"], "--out")
case("fit-out-non-empty-foreign", [*F[:-1], "{W}/foreign"], "--out")
case("fit-out-is-dot-of-data", [*F[:-1], "{W}"], "--out")
case("fit-out-earlier-fit", [*F[:-1], "{W}/fit-chinchilla"], "--out")
case("fit-out-too-long", [*F[:-1], f"{{W}}/{LONG}"], "--out")
case("fit-out-read-only", [*F[:-1], "{W}/ro/fit"], "--out")
case("fit-out-under-file", [*F[:-1], "{W}/afile/fit"], "--out")

case("fit-group-missing-column", [*F, "--group", "nope"], "--group")
case("fit-group-single-value", [*F, "--group", "name"], "--group")
case("fit-pool-unknown", [*F, "--group", "grp", "--pool", "zeta"], "--pool")
case("fit-pool-without-group", [*F, "--pool", "E"], "--pool")
case("fit-pool-twice", [*F, "--group", "grp", "--pool", "beta,beta"], ("--pool", "twice"))
case("fit-group-is-target", [*F, "--group", "loss"], ("--group", "target"))
case("fit-group-is-input", [*F, "--group", "params"], ("--group", "input N"))
case("fit-group-classic", [*F[:-3], "classic", "--out", "{W}/new-fit", "--group", "grp"], "--method")
case("fit-group-stack", [*[("chinchilla,kaplan" if a == "chinchilla" else a) for a in F], "--group", "grp"],
     ("--form", "not a stack"))

# --- backtest --decision model ---------------------------------------------------------------
BM = ["backtest", "{W}/table.csv", "--form", "chinchilla", "--map", "N=params", "--map", "D=tokens", "--target",
      "loss", "--by", "params", "--decision", "model", "--out", "{W}/new-bt"]
case("backtest-model-no-group", BM, "--group")
case("backtest-model-group-missing", [*BM, "--group", "nope"], "--group")
case("backtest-model-group-single", [*BM, "--group", "name"], "--group")
case("backtest-model-stack", [*[("chinchilla,kaplan" if a == "chinchilla" else a) for a in BM], "--group", "grp"],
     ("--form", "not a stack"))
case("backtest-pool-without-model", [*BM[:-4], "--out", "{W}/new-bt", "--pool", "E"], "--pool")

# --- backtest ----------------------------------------------------------------------------
BT = ["backtest", "{W}/table.csv", "--form", "chinchilla", "--map", "N=params", "--map", "D=tokens", "--target",
      "loss", "--method", "map", "--by", "params*tokens", "--out", "{W}/new-bt"]

# --- compare -----------------------------------------------------------------------------
case("compare-one-dir", ["compare", "{W}/fit-chinchilla"], "dirs")
case("compare-same-dir-twice", ["compare", "{W}/fit-chinchilla", "{W}/fit-chinchilla"], "twice")
case("compare-missing-dir", ["compare", "{W}/fit-chinchilla", "{W}/nope"], "nope")
case("compare-not-a-fit", ["compare", "{W}/fit-chinchilla", "{W}/foreign"], "foreign")
case("compare-truncated-summary", ["compare", "{W}/fit-chinchilla", "{W}/fit-cut-summary"], "summary.json")
case("compare-truncated-posterior", ["compare", "{W}/fit-chinchilla", "{W}/fit-cut-posterior"], "posterior.nc")
case("compare-garbage-posterior", ["compare", "{W}/fit-chinchilla", "{W}/fit-bad-posterior"], "posterior.nc")
case("compare-different-data", ["compare", "{W}/fit-chinchilla", "{W}/fit-volume"], "different data")
case("compare-bad-ic", ["compare", "{W}/fit-chinchilla", "{W}/fit-volume", "--ic", "aic"], "--ic")

# --- allocate ----------------------------------------------------------------------------
A = ["allocate", "{W}/fit-chinchilla", "--out", "{W}/new-alloc"]
for value in ("-1e12", "0", "nan", "inf", "lots", "-inf"):
    case(f"allocate-budget-{value}", [*A, "--budget", value], "--budget")
case("allocate-missing-budget", A, "--budget")
case("allocate-missing-out", ["allocate", "{W}/fit-chinchilla", "--budget", "1e20"], ("--out", "required"))
case("allocate-grouped-fit", ["allocate", "{W}/fit-grouped", "--budget", "1e20", "--out", "{W}/new-alloc"],
     ("FIT_DIR", "names no model preset"))
G = ["allocate", "{W}/fit-grouped-presets", "--budget", "1e16", "--lengths-grid", "64", "--out", "{W}/new-alloc"]
case("allocate-grouped-unknown-group", [*G, "--group-value", "tiny", "smollm2-360m"], ("--group-value", "unknown model"))
case("allocate-grouped-new-group-no-preset", [*G, "--group-value", "tiny", "mystery-7b", "--new-group"],
     ("--group-value", "names no model preset"))
case("allocate-grouped-group-twice", [*G, "--group-value", "tiny", "tiny"], "--group-value")
case("allocate-grouped-models", [*G, "--models", "tiny"], "--models")
case("allocate-grouped-no-lengths", [*G[:4], "--out", "{W}/new-alloc"], "lengths")
case("allocate-grouped-pretraining", ["allocate", "{W}/fit-grouped-chinchilla", "--budget", "1e20", "--out",
                                      "{W}/new-alloc"], ("FIT_DIR", "grouped"))
case("allocate-missing-fit", ["allocate", "{W}/nope", "--budget", "1e20", "--out", "{W}/new-alloc"], "FIT_DIR")
case("allocate-fit-is-file", ["allocate", "{W}/afile", "--budget", "1e20", "--out", "{W}/new-alloc"], "FIT_DIR")
case("allocate-not-a-fit", ["allocate", "{W}/foreign", "--budget", "1e20", "--out", "{W}/new-alloc"], "foreign")
case("allocate-truncated-summary", ["allocate", "{W}/fit-cut-summary", "--budget", "1e20", "--out",
                                    "{W}/new-alloc"], "summary.json")
case("allocate-garbage-summary", ["allocate", "{W}/fit-bad-summary", "--budget", "1e20", "--out",
                                  "{W}/new-alloc"], "summary.json")
case("allocate-truncated-posterior", ["allocate", "{W}/fit-cut-posterior", "--budget", "1e20", "--out",
                                      "{W}/new-alloc"], "posterior.nc")
case("allocate-unconverged", ["allocate", "{W}/fit-unconverged", "--budget", "1e20", "--out", "{W}/new-alloc"],
     "diagnostics")
case("allocate-pretraining-models", [*A, "--budget", "1e20", "--models", "tiny"], "--models")
case("allocate-pretraining-lengths", [*A, "--budget", "1e20", "--lengths-grid", "64,128"], "--lengths-grid")
case("allocate-pretraining-strategies", [*A, "--budget", "1e20", "--strategies", "few_long",
                                         "--lengths", "{W}/lengths.json"], "--strategies")
for flag, value in (("--epochs", "3"), ("--lengths", "{W}/lengths.json"), ("--max-examples", "1000")):
    case(f"allocate-pretraining-flag{flag[1:]}", [*A, "--budget", "1e20", flag, value], (flag, "pretraining law"))
V = ["allocate", "{W}/fit-volume", "--budget", "1e12", "--out", "{W}/new-alloc"]
case("allocate-finetuning-no-models", V, "models")
case("allocate-group-value-ungrouped", [*V, "--models", "tiny", "--lengths-grid", "64", "--group-value", "tiny"],
     "--group-value")
case("allocate-unknown-model", [*V, "--models", "nope", "--lengths-grid", "64"], ("--models", "nope"))
case("allocate-unknown-strategy", [*V, "--models", "tiny", "--strategies", "fancy"], "--strategies")
case("allocate-strategies-without-lengths", [*V, "--models", "tiny", "--strategies", "few_long"], "lengths")
case("allocate-lengths-grid-text", [*V, "--models", "tiny", "--lengths-grid", "a,b"], "--lengths-grid")
case("allocate-lengths-grid-zero", [*V, "--models", "tiny", "--lengths-grid", "0,64"], "--lengths-grid")
case("allocate-epochs-zero", [*V, "--models", "tiny", "--lengths-grid", "64", "--epochs", "0"], "--epochs")
case("allocate-n-examples-neg", [*V, "--models", "tiny", "--lengths-grid", "64", "--n-examples", "-3"],
     "--n-examples")
case("allocate-max-examples-0", [*V, "--models", "tiny", "--lengths-grid", "64", "--max-examples", "0"],
     "--max-examples")
case("allocate-lengths-missing", [*V, "--models", "tiny", "--strategies", "few_long", "--lengths", "{W}/nope.json"],
     "--lengths")
case("allocate-lengths-garbage", [*V, "--models", "tiny", "--strategies", "few_long", "--lengths",
                                  "{W}/garbage.csv"], "--lengths")
case("allocate-out-is-file", [*A[:-1], "{W}/afile", "--budget", "1e20"], "--out")
case("allocate-out-foreign", [*A[:-1], "{W}/foreign", "--budget", "1e20"], "--out")
case("allocate-out-too-long", [*A[:-1], f"{{W}}/{LONG}", "--budget", "1e20"], "--out")
case("allocate-out-read-only", [*A[:-1], "{W}/ro/alloc", "--budget", "1e20"], "--out")

# --- propose -----------------------------------------------------------------------------
P = ["propose", "{W}/fit-volume", "--models", "tiny", "--lengths-grid", "32,64", "--n-examples", "100,1000",
     "--out", "{W}/new-proposals"]
PGRID = [*P[:2], *P[-2:]]  # with --grid FILE: the candidates come from the file alone
case("propose-n-eval-0", [*P, "--n-eval", "0"], "--n-eval")
case("propose-n-eval-neg", [*P, "--n-eval", "-5"], "--n-eval")
case("propose-top-0", [*P, "--top", "0"], "--top")
case("propose-sims-1", [*P, "--sims", "1"], "--sims")
case("propose-budget-neg", [*P, "--budget", "-1e12"], "--budget")
case("propose-budget-nan", [*P, "--budget", "nan"], "--budget")
case("propose-horizon-0", [*P, "--horizon", "0"], "--horizon")
case("propose-horizon-text", [*P, "--horizon", "soon"], "--horizon")
case("propose-grid-missing", [*PGRID, "--grid", "{W}/nope.json"], "--grid")
case("propose-grid-garbage", [*PGRID, "--grid", "{W}/garbage.csv"], "--grid")
case("propose-unknown-model", [*P[:2], "--models", "nope", *P[4:]], "nope")
case("propose-missing-fit", ["propose", "{W}/nope", *P[2:]], "FIT_DIR")
case("propose-truncated-summary", ["propose", "{W}/fit-cut-summary", *P[2:]], "summary.json")
case("propose-grouped-fit", ["propose", "{W}/fit-grouped", *P[4:]], ("FIT_DIR", "names no model preset"))
PG = ["propose", "{W}/fit-grouped-presets", "--lengths-grid", "32,64", "--n-examples", "100,1000",
      "--out", "{W}/new-proposals"]
case("propose-grouped-models", [*PG, "--models", "tiny"], "--models")
case("propose-grouped-no-n-examples", [*PG[:4], *PG[6:]], ("--grid: no candidates", "groups are the models"))
case("propose-grouped-unknown-group", [*PG, "--group-value", "tiny", "smollm2-360m"], ("--group-value", "unknown"))
case("propose-grouped-grid-unknown-group", ["propose", "{W}/fit-grouped-presets", "--grid", "{W}/grid-unknown-group.json", *PG[-2:]], ("--grid", "unknown"))
case("propose-grouped-pretraining", ["propose", "{W}/fit-grouped-chinchilla", *PG[2:]], ("FIT_DIR", "grouped"))
case("propose-group-value-ungrouped", [*P, "--group-value", "tiny"], "--group-value")
case("propose-unconverged", ["propose", "{W}/fit-unconverged", *P[2:]], "diagnostics")
case("propose-missing-out", P[:-2], ("--out", "required"))
case("propose-out-is-file", [*P[:-1], "{W}/afile"], "--out")
case("propose-out-foreign", [*P[:-1], "{W}/foreign"], "--out")
case("propose-out-read-only", [*P[:-1], "{W}/ro/proposals"], "--out")

# --- predict -----------------------------------------------------------------------------
R = ["predict", "{W}/fit-chinchilla", "--out", "{W}/new-pred"]
case("predict-not-a-fit", ["predict", "{W}/foreign", "--at", "N=1e9", "D=1e10", "--out", "{W}/new-pred"], "foreign")
case("predict-missing-fit", ["predict", "{W}/nope", "--at", "N=1e9", "D=1e10", "--out", "{W}/new-pred"], "nope")
case("predict-at-unknown-input", [*R, "--at", "N=1e9", "X=1e10"], "--at")
case("predict-at-missing-input", [*R, "--at", "N=1e9"], "--at")
case("predict-at-negative", [*R, "--at", "N=-1e9", "D=1e10"], "--at")
case("predict-at-zero", [*R, "--at", "N=0", "D=1e10"], "--at")
case("predict-at-nan", [*R, "--at", "N=nan", "D=1e10"], "--at")
case("predict-at-inf", [*R, "--at", "N=1e9", "D=inf"], "--at")
case("predict-at-text", [*R, "--at", "N=big", "D=1e10"], "--at")
case("predict-at-repeated-input", [*R, "--at", "N=1e9", "D=1e10", "N=2e9"], "--at: N given twice")
case("predict-at-overflow", [*R, "--at", "N=1e9", "D=1e300"], ("--at: D=1e300", "limit"))
case("predict-table-overflow", [*R, "--table", "{W}/points-huge.csv"], ("--table", "limit"))
case("predict-n-eval-on-loss-fit", [*R, "--at", "N=1e9", "D=1e10", "--n-eval", "100"], ("--n-eval", "loss form"))
case("predict-table-missing-input-column", [*R, "--table", "{W}/points-no-d.csv"], "--table")
case("predict-table-missing-file", [*R, "--table", "{W}/nope.csv"], "--table")
case("predict-at-and-table", [*R, "--at", "N=1e9", "D=1e10", "--table", "{W}/points-no-d.csv"], "--table")
case("predict-group-value-unknown", ["predict", "{W}/fit-grouped", "--at", "D=1e6", "--group-value", "m9",
                                     "--out", "{W}/new-pred"], "--group-value")
case("predict-table-names-groups", ["predict", "{W}/fit-grouped", "--table", "{W}/points-with-model.csv", "--out",
     "{W}/new-pred"], ("--table", "group column"))
case("predict-new-group-alone", ["predict", "{W}/fit-grouped", "--at", "D=1e6", "--new-group", "--out",
     "{W}/new-pred"], ("--new-group", "--group-value"))
case("allocate-new-group-alone", [*G, "--new-group"], ("--new-group", "--group-value"))
case("propose-new-group-alone", [*PG, "--new-group"], ("--new-group", "--group-value"))
case("predict-group-value-ungrouped", [*R, "--at", "N=1e9", "D=1e10", "--group-value", "m1"], "--group-value")
case("predict-out-foreign", [*R[:-1], "{W}/foreign", "--at", "N=1e9", "D=1e10"], "--out")

# --- demo --------------------------------------------------------------------------------
case("demo-missing-config", ["demo", "--config", "{W}/nope.py", "--workdir", "{W}/new-demo"], "--config")
case("demo-config-syntax-error", ["demo", "--config", "{W}/cfg_syntax.py", "--workdir", "{W}/new-demo"], "syntax")
case("demo-config-no-get-config", ["demo", "--config", "{W}/cfg_noget.py", "--workdir", "{W}/new-demo"],
     "get_config")
case("demo-override-not-config", ["demo", "--workdir", "{W}/new-demo", "--fast"], "--fast")
case("demo-workdir-is-file", ["demo", "--config", DEMO_SMOKE, "--workdir", "{W}/afile"], "--workdir")
case("demo-workdir-under-file", ["demo", "--config", DEMO_SMOKE, "--workdir", "{W}/afile/demo"], "--workdir")
case("demo-workdir-foreign", ["demo", "--config", DEMO_SMOKE, "--workdir", "{W}/foreign"], "--workdir")

# --- directories a command writes: new, empty or tokeff's own (workdirs and outputs alike) ----
# Each is a directory tokeff did not create for this command: a user's metrics.jsonl, a thesis,
# a checkpoint of the user's own (checkpoints/my_model.pt, checkpoints/7/), a fit output, a
# sweep dir given to train, a train workdir given to sweep or as an output, a folder holding the
# user's own point.json or sweep.json (a run record's file name, not its contents), an empty path.
for wd in ("wd-user-metrics", "foreign", "sweep-dir", "wd-ckpt", "wd-ckpt7", "fit-chinchilla", "user-results",
           "user-point"):
    case(f"train-workdir-{wd}", ["train", "--config", TINY, "--workdir", f"{{W}}/{wd}"], "--workdir")
EMPTY = "path is empty"
# The same rule on an object store (fsspec's memory:// filesystem stands in for gs://; no network).
for wd in ("user-metrics", "sweep-dir", "fit-out"):
    case(f"train-workdir-remote-{wd}", ["train", "--config", TINY, "--workdir", f"memory://world/{wd}"], "--workdir")
for wd in ("user-metrics", "train-wd"):
    case(f"sweep-workdir-remote-{wd}", ["sweep", "--config", SWEEP_TINY, "--workdir", f"memory://world/{wd}"],
         "--workdir")
case("train-workdir-remote-locked", ["train", "--config", TINY, "--workdir", "memory://world/locked"],
     ("--workdir", "in use by process"))
case("train-workdir-unknown-scheme", ["train", "--config", TINY, "--workdir", "nosuchfs://bucket/run"],
     ("--workdir", "nosuchfs"))
case("train-workdir-empty-path", ["train", "--config", TINY, "--workdir", ""], ("--workdir", EMPTY))
for wd in ("wd-user-metrics", "foreign", "train-wd", "wd-ckpt", "fit-chinchilla", "user-results", "user-sweep"):
    case(f"sweep-workdir-{wd}", ["sweep", "--config", SWEEP_TINY, "--workdir", f"{{W}}/{wd}"], "--workdir")
case("sweep-workdir-empty-path", ["sweep", "--config", SWEEP_TINY, "--workdir", ""], ("--workdir", EMPTY))
case("sweep-dry-run-empty-path", ["sweep", "--config", SWEEP_TINY, "--workdir", "", "--dry-run"], ("--workdir", EMPTY))
for out in ("", "{W}/train-wd", "{W}/sweep-dir", "{W}/wd-user-metrics", "{W}/wd-ckpt7", "gs://bucket/fit",
            "memory://world/new-fit"):
    case(f"fit-out-{out.rsplit('/', 1)[-1] or 'empty-path'}", [*F[:-1], out], ("--out", EMPTY) if not out else "--out")

# --- inputs must be regular files within the size limit, read in bounded chunks ---------------
# A FIFO (would hang), symlinks to /dev/zero and /dev/urandom (would grow until killed), a
# directory, and a 300 MiB sparse file (over the 256 MiB limit: refused by its size, unread).
SAYS = {"fifo": "FIFO", "zero": "device", "urandom": "device", "dir": "directory", "big": "limit"}
for kind in ("fifo", "zero", "urandom", "dir", "big"):
    case(f"fit-data-{kind}", ["fit", f"{{W}}/{kind}.csv", *F[2:]], (f"{kind}.csv", SAYS[kind]))
    case(f"fit-data-{kind}-jsonl", ["fit", f"{{W}}/{kind}.jsonl", *F[2:]], (f"{kind}.jsonl", SAYS[kind]))
case("fit-data-empty-dir", ["fit", "{W}/emptydir", *F[2:]], ("emptydir", "directory"))
case("fit-data-empty-path", ["fit", "", *F[2:]], ("data", EMPTY))
for kind in ("fifo", "zero", "dir", "big"):
    case(f"eval-dataset-{kind}", ["eval", "--model", "tiny", "--dataset", f"{{W}}/{kind}.jsonl"],
         (f"{kind}.jsonl", SAYS[kind]))
    case(f"compose-path-{kind}", ["compose", "--path", f"{{W}}/{kind}.jsonl", "--model", "tiny"],
         (f"{kind}.jsonl", SAYS[kind]))
    case(f"sweep-points-{kind}", [*S, "--points", f"{{W}}/{kind}.json", "--dry-run"], (f"{kind}.json", SAYS[kind]))
    case(f"propose-grid-{kind}", [*PGRID, "--grid", f"{{W}}/{kind}.json"], (f"{kind}.json", SAYS[kind]))
    case(f"allocate-lengths-{kind}", [*V, "--models", "tiny", "--strategies", "few_long", "--lengths",
                                      f"{{W}}/{kind}.json"], (f"{kind}.json", SAYS[kind]))
for kind in ("fifo", "zero", "dir"):
    case(f"train-config-{kind}", ["train", "--config", f"{{W}}/{kind}.py", "--workdir", "{W}/new-run"],
         (f"{kind}.py", SAYS[kind]))
case("sweep-config-fifo", ["sweep", "--config", "{W}/fifo.py", "--workdir", "{W}/new-sweep"], "fifo.py")
case("demo-config-fifo", ["demo", "--config", "{W}/fifo.py", "--workdir", "{W}/new-demo"], "fifo.py")

NUTS = [*F[:-3], "nuts", "--out", "{W}/new-fit"]

# --- user modules: any failure is one line naming the module ---------------------------------
MODULE_FAILURES = [("raises", "raises_mod", ("raises_mod", "boom at import")),
                   ("exits", "exits_mod", ("exits_mod", "sys.exit")),
                   ("syntax", "syntax_mod", ("syntax_mod", "syntax error")),
                   ("shadows-builtin", "shadow_mod", ("chinchilla", "built-in")),
                   ("empty", "", ("--module", "empty")),
                   ("raises-path", "{W}/mods/raises_path.py", ("raises_path", "boom from a path")),
                   ("missing-path", "{W}/mods/nope.py", "nope.py"), ("not-py", "{W}/table.txt", "table.txt"),
                   ("fifo-path", "{W}/fifo.py", "fifo.py"), ("bad-name", "my-forms", "my-forms")]
for label, module, field in MODULE_FAILURES:
    case(f"fit-module-{label}", [*F, "--module", module], field)
for label, module, field in MODULE_FAILURES[:6]:
    case(f"compare-module-{label}", ["compare", "{W}/fit-chinchilla", "{W}/fit-volume", "--module", module], field)
    case(f"allocate-module-{label}", [*A, "--budget", "1e20", "--module", module], field)
    case(f"propose-module-{label}", [*P, "--module", module], field)
for label, module, field in MODULE_FAILURES[:4]:
    case(f"backtest-module-{label}", [*BT, "--module", module], field)
for form in ("nanform", "negform", "scalarform", "noparams"):
    case(f"fit-user-form-{form}", [*F[:2], "--form", form, *F[4:], "--module", "badforms_mod"], form)
ROW_DEFECTS = {"nanrows": ("nanrows", "NaN", "row"), "nanaway": ("nanaway", "NaN", "prior draw"),
               "infrows": ("infrows", "infinite", "row"), "shaperows": ("shaperows", "shape"),
               "negrows": ("negrows", "positive", "row"), "raiserows": ("raiserows", "prior draw", "oops")}
for form, field in ROW_DEFECTS.items():
    case(f"fit-user-form-{form}", [*F[:2], "--form", form, *F[4:], "--module", "badforms_mod"], field)
for form in ("nanrows", "nanaway", "shaperows"):
    case(f"fit-nuts-user-form-{form}", [*NUTS[:2], "--form", form, *NUTS[4:], "--module", "badforms_mod"],
         ROW_DEFECTS[form])
    case(f"fit-grouped-user-form-{form}", [*F[:2], "--form", form, *F[4:], "--module", "badforms_mod", "--group",
                                          "grp"], ROW_DEFECTS[form])
for form in ("nanform", "scalarform", "nanaway", "infrows"):
    case(f"backtest-user-form-{form}", [*BT[:2], "--form", form, *BT[4:], "--module", "badforms_mod"], form)

# --- sizes estimated before the work: refused naming the flag and the limit -----------------
for flag, value in [("--chains", "1000"), ("--chains", "65"), ("--draws", "1000000000"), ("--warmup", "2000000")]:
    case(f"fit-nuts{flag}-{value}", [*NUTS, flag, value], flag)
case("fit-classic-bootstrap-1e8", [*F[:-3], "classic", "--out", "{W}/new-fit", "--bootstrap", "100000000"],
     "--bootstrap")
case("backtest-chains-1000", [*BT[:-5], "nuts", *BT[-4:], "--chains", "1000"], "--chains")
case("propose-sims-1e8", [*P, "--sims", "100000000"], "--sims")
case("propose-grid-200k-candidates", [*PGRID, "--grid", "{W}/grid-huge.json"], "--grid")
case("propose-grid-2m-candidates", [*PGRID, "--grid", "{W}/grid-2m.json"], ("error: --grid: 2000000 candidates", "limit"))
case("fit-nuts-chains-2-draws-1e9", [*NUTS, "--chains", "2", "--draws", "1000000000"], "--draws")
case("propose-pretraining-no-candidates", ["propose", "{W}/fit-chinchilla", "--out", "{W}/new-proposals"],
     ("--grid", "pretraining"))
for key, value in [("data.pool_size", "99999999999"), ("batch_size", "10000000"), ("seed", "-1"),
                   ("seed", "1e23"), ("seed", "4294967296"), ("data.split_seed", "-1")]:
    case(f"train-limit-{key}-{value}", [*T, f"--config.{key}={value}"], key)
for command, argv in [("fit", F), ("propose", P), ("eval", E), ("backtest", BT),
                      ("compose", C)]:
    for value in ("-1", "4294967296", "1e23"):
        case(f"{command}-seed-{value}", [*argv, "--seed", value], "--seed")

# --- conflicts and flags that cannot apply: refused, never silently ignored -------------------
case("fit-map-same-var-twice", [*F, "--map", "N=tokens"], "--map")
case("fit-target-conflicts-map", [*F, "--map", "target=name"], "--target")
case("fit-duplicate-csv-columns", ["fit", "{W}/dup-columns.csv", *F[2:]], "loss")
case("fit-likelihood-on-accuracy", ["fit", "{W}/table.csv", "--form", "volume", "--likelihood", "student_t",
                                    "--method", "map", "--out", "{W}/new-fit"], "--likelihood")
case("fit-chance-on-loss", [*F, "--chance", "0.25"], "--chance")
case("fit-chance-1.5", ["fit", "{W}/table.csv", "--form", "volume", "--chance", "1.5", "--method", "map",
                        "--out", "{W}/new-fit"], "--chance")
case("fit-chance-neg", ["fit", "{W}/table.csv", "--form", "volume", "--chance", "-0.1", "--method", "map",
                        "--out", "{W}/new-fit"], "--chance")
case("fit-map-swallows-missing-data", ["fit", "--map", "N=params", "D=tokens", "{W}/nope.csv", "--form", "chinchilla",
                                      *F[8:]], "nope.csv")
case("fit-overflow-input", ["fit", "{W}/huge.csv", *F[2:]], "input N")
case("fit-overflow-product", [*F[:6], "--map", "D=tokens*tokens*tokens", *F[8:]], "input D")
case("backtest-frac-tiny", [*BT, "--frac", "1e-9"], "--frac")
case("backtest-out-empty-path", [*BT[:-1], ""], ("--out", EMPTY))
case("backtest-out-foreign", [*BT[:-1], "{W}/foreign"], "--out")
case("backtest-out-train-wd", [*BT[:-1], "{W}/train-wd"], "--out")
case("backtest-data-missing", ["backtest", "{W}/nope.csv", *BT[2:]], "nope.csv")
for cmd, argv in [("allocate", [*V, "--models", "tiny", "--lengths-grid", "64"]), ("propose", P)]:
    case(f"{cmd}-n-examples-fraction", [*argv, "--n-examples", "1.5"], ("--n-examples", "whole numbers"))
    case(f"{cmd}-n-examples-1e30", [*argv, "--n-examples", "1e30"], ("--n-examples", "limit"))
    case(f"{cmd}-n-examples-twice", [*argv, "--n-examples", "100,100"], ("--n-examples", "twice"))
    case(f"{cmd}-fill-without-row-len", [*argv, "--fill", "0.5"], ("--fill", "--row-len"))
    case(f"{cmd}-epochs-twice", [*argv, "--epochs", "1,1"], ("--epochs", "twice"))
case("allocate-models-twice", [*V, "--models", "tiny,tiny", "--lengths-grid", "64"], "--models")
case("allocate-lengths-grid-twice", [*V, "--models", "tiny", "--lengths-grid", "64,64"], "--lengths-grid")
case("allocate-lengths-beyond-context", [*V, "--models", "tiny", "--lengths-grid", "64,4096"], "--lengths-grid")
case("allocate-strategies-twice", [*V, "--models", "tiny", "--strategies", "few_long,few_long", "--lengths",
                                   "{W}/lengths.json"], "--strategies")
case("allocate-budget-1e-300", [*A, "--budget", "1e-300"], "--budget")
case("allocate-budget-below-min", [*A, "--budget", "1000"], "--budget")
case("allocate-out-empty-path", [*A[:-1], "", "--budget", "1e20"], ("--out", EMPTY))
case("allocate-out-train-wd", [*A[:-1], "{W}/train-wd", "--budget", "1e20"], "--out")
case("allocate-out-user-metrics", [*A[:-1], "{W}/wd-user-metrics", "--budget", "1e20"], "--out")
case("propose-models-twice", [*P[:2], "--models", "tiny,tiny", *P[4:]], "--models")
case("propose-lengths-grid-twice", [*P[:4], "--lengths-grid", "64,64", *P[6:]], "--lengths-grid")
case("propose-lengths-beyond-context", [*P[:4], "--lengths-grid", "64,4096", *P[6:]], "--lengths-grid")
case("propose-grid-beyond-context", [*PGRID, "--grid", "{W}/grid-ctx.json"], ("error: --grid: ", "context"))
case("propose-grid-1e30-examples", [*PGRID, "--grid", "{W}/grid-1e30.json"], ("error: --grid: n_examples", "at most"))
case("propose-out-empty-path", [*P[:-1], ""], ("--out", EMPTY))
case("propose-out-train-wd", [*P[:-1], "{W}/train-wd"], "--out")
case("propose-out-sweep-dir", [*P[:-1], "{W}/sweep-dir"], "--out")
case("sweep-points-unknown-model", [*S, "--points", "{W}/points-unknown-model.json", "--dry-run"], "model")
case("sweep-points-negative-seed", [*S, "--points", "{W}/points-neg-seed.json", "--dry-run"], "seed")
case("eval-limit-over-available", [*E, "--limit", "1000"], "--limit")
for kind in ("fifo", "zero", "dir", "big"):
    case(f"predict-table-{kind}", [*R, "--table", f"{{W}}/{kind}.csv"], (f"{kind}.csv", SAYS[kind]))
case("predict-out-empty-path", [*R[:-1], "", "--at", "N=1e9", "D=1e10"], ("--out", EMPTY))
case("predict-out-train-wd", [*R[:-1], "{W}/train-wd", "--at", "N=1e9", "D=1e10"], "--out")
case("predict-out-its-fit-force", [*R[:-1], "{W}/fit-chinchilla", "--force", "--at", "N=1e9", "D=1e10"], "--out")
for label, module, field in MODULE_FAILURES[:4]:
    case(f"predict-module-{label}", [*R, "--at", "N=1e9", "D=1e10", "--module", module], field)
case("demo-workdir-empty-path", ["demo", "--config", DEMO_SMOKE, "--workdir", ""], ("--workdir", EMPTY))
case("demo-workdir-train-wd", ["demo", "--config", DEMO_SMOKE, "--workdir", "{W}/train-wd"], "--workdir")
case("demo-workdir-fit-chinchilla", ["demo", "--config", DEMO_SMOKE, "--workdir", "{W}/fit-chinchilla"], "--workdir")

# --- values a flag's parser let through, refused where they are read --------------------------
VOL = ["predict", "{W}/fit-volume", "--at", "V=1e5", "M=1e6", "--out", "{W}/new-pred"]
for value in ("0", "-1", "1.5", "nan"):
    case(f"predict-n-eval-{value}", [*VOL, "--n-eval", value], ("--n-eval", "whole, positive"))
case("predict-at-no-equals", [*R, "--at", "N", "D=1e10"], ("--at", "VAR=VALUE"))
case("predict-table-rows-wider-than-header", [*R, "--table", "{W}/points-wide.csv"], ("--table", "more fields"))
case("fit-rows-wider-than-header", ["fit", "{W}/table-wide.csv", *F[2:]], ("table-wide.csv", "more fields"))
case("compare-no-log-likelihood", ["compare", "{W}/fit-chinchilla", "{W}/fit-unconverged"], ("fit-chinchilla", "log-likelihood"))
case("allocate-lengths-nan", [*V, "--models", "tiny", "--strategies", "few_long", "--lengths", "{W}/lengths-nan.json"],
     ("--lengths", "positive token lengths"))
case("allocate-lengths-1e30", [*V, "--models", "tiny", "--strategies", "few_long", "--lengths", "{W}/lengths-huge.json"],
     ("--lengths", "limit"))
case("allocate-epochs-empty", [*V, "--models", "tiny", "--lengths-grid", "64", "--epochs", ""], ("--epochs", "empty"))
case("allocate-n-examples-empty", [*V, "--models", "tiny", "--lengths-grid", "64", "--n-examples", ""],
     ("--n-examples", "empty"))
case("allocate-budget-1e300", [*A, "--budget", "1e300"], ("--budget", "limit"))
case("allocate-frontier-on-finetuning", [*V, "--models", "tiny", "--lengths-grid", "64", "--frontier", "law"],
     ("--frontier", "pretraining"))
case("propose-budget-1e300", [*P, "--budget", "1e300"], ("--budget", "limit"))
case("propose-horizon-1e300", [*P, "--horizon", "1e300"], ("--horizon", "limit"))
case("propose-grid-unknown-key", [*P[:2], "--grid", "{W}/grid-typo.json", "--out", "{W}/new-proposals"],
     ("--grid", "unknown key 'n_exmples'"))
case("propose-grid-and-models", [*P, "--grid", "{W}/grid-ok.json"], ("--models", "--grid"))
case("propose-grid-budget-1e300", [*P[:2], "--grid", "{W}/grid-budget-huge.json", "--lengths", "{W}/lengths.json",
                                   "--out", "{W}/new-proposals"], ("--grid: budgets", "limit"))
case("propose-grid-and-epochs", [*P[:2], "--grid", "{W}/grid-ok.json", "--epochs", "2", "--out", "{W}/new-proposals"],
     ("--epochs", "--grid"))
case("propose-n-eval-on-loss-fit", ["propose", "{W}/fit-chinchilla", "--grid", "{W}/grid-unknown-group.json",
                                    "--n-eval", "100", "--out", "{W}/new-proposals"], ("--n-eval", "loss form"))
case("fit-pool-empty", [*F, "--group", "grp", "--pool", ""], ("--pool", "empty parameter name"))
case("fit-pool-empty-name", [*F, "--group", "grp", "--pool", "E,,beta"], ("--pool", "empty parameter name"))
case("backtest-frontier-no-interior-optimum", [*BT[:-2], "--decision", "frontier", "--out", "{W}/new-bt"],
     ("--by", "optimum inside its runs"))
case("backtest-choice-on-pretraining", [*BT[:-2], "--decision", "choice", "--out", "{W}/new-bt"],
     ("--decision", "fine-tuning"))
case("train-data.k_shot--1", [*T, "--config.data.k_shot=-1"], "data.k_shot")
case("train-mesh.fsdp-0", [*T, "--config.mesh.fsdp=0"], "mesh.fsdp")
case("sweep-grid-unknown-model", [*S, "--config.grid.models=('nope',)"], ("error: config.grid.models: unknown", "nope"))
case("sweep-grid-unknown-strategy", [*S, "--config.grid.compositions=({'strategy': 'fancy'},)"],
     ("config.grid.compositions[0].strategy", "fancy"))
case("sweep-points-unknown-strategy", [*S, "--points", "{W}/points-fancy.json"], ("points[0].composition.strategy", "fancy"))
case("eval-dataset-empty-name", ["eval", "--model", "tiny", "--dataset", ""], ("dataset", "empty"))

# --- the field named as the user wrote it: the flag, the full config key, the table column ------
case("train-data.path-missing", [*T, "--config.data.path={W}/nope.jsonl"], ("data.path", "no such file"))
case("train-data.row_len-beyond-context", [*T, "--config.data.row_len=100000"], ("data.row_len", "context"))
case("train-config-file-mistyped-value", ["train", "--config", "{W}/cfg_type.py", "--workdir", "{W}/new-run"],
     ("config.optim.lr", "must be a float"))
case("generate-missing-dir-flag", ["generate", "--model", "{W}/no-such-dir", "--prompt", "hi"], ("--model", "does not exist"))
case("eval-unknown-gguf-flag", ["eval", "--model", "gguf:nope", "--dataset", MMLU], ("--model", "gguf:nope"))
case("compose-unknown-model-flag", [*C[:3], "--model", "nope"], ("--model", "unknown preset"))
case("fit-form-empty", [*F[:2], "--form", "", *F[4:]], ("--form", "empty"))
case("fit-form-empty-in-stack", [*F[:2], "--form", "chinchilla,,kaplan", *F[4:]], ("--form", "empty form name"))
case("compose-lo-neg", [*C, "--strategy", "length_window", "--lo", "-5"], ("--lo", ">= 0"))
case("fit-nan-rows-column", ["fit", "{W}/nan.csv", *F[2:]], ("column params", "NaN"))
case("allocate-lengths-grid-empty-item", [*V, "--models", "tiny", "--lengths-grid", "64,"],
     ("--lengths-grid", "empty item"))
case("allocate-models-empty-item", [*V, "--models", "tiny,", "--lengths-grid", "64"], ("--models", "empty item"))
case("compose-path-and-dataset", [*C, "--dataset", "mmlu"], ("--path", "--dataset"))


# --- the CLI itself ----------------------------------------------------------------------
case("cli-unknown-command", ["frobnicate"], "frobnicate")
case("cli-extra-args-no-overrides", ["flops", "--model", "tiny", "--seq-len", "64", "--config.x=1"], "--config.x")


# ---------------------------------------------------------------------------------------
# The world every case runs in.


def _draws(center: dict, n=200, rel=0.02, seed=0) -> dict:
    rng = np.random.default_rng(seed)
    return {k: v * np.exp(rel * rng.standard_normal(n)) for k, v in center.items()}


def _build_world(root: pathlib.Path) -> None:
    from tokeff.models.export import export_hf
    from tokeff.models.load import load_model

    rng = np.random.default_rng(0)
    n = np.exp(rng.uniform(np.log(7e7), np.log(1.6e10), 16))
    d = np.exp(rng.uniform(np.log(5e9), np.log(5e11), 16))
    loss = 1.69 + 406.4 / n**0.34 + 410.7 / d**0.28
    rows = "\n".join(f"{a:.6g},{b:.6g},{c:.6g},run" for a, b, c in zip(n, d, loss))
    (root / "table.csv").write_text("params,tokens,loss,name,grp\n" + "\n".join(
        f"{a:.6g},{b:.6g},{c:.6g},run,g{i % 2}" for i, (a, b, c) in enumerate(zip(n, d, loss))) + "\n")
    (root / "points-no-d.csv").write_text("N\n1e9\n")
    (root / "points-with-model.csv").write_text("model,D\nm9,1e6\n")
    subjects = ("anatomy", "virology")
    (root / "mc.jsonl").write_text("".join(json.dumps(
        {"question": f"Is {i} even?", "choices": ["yes", "no", "maybe", "never"], "answer": i % 2,
         "subject": subjects[i % 2]}) + "\n" for i in range(24)))
    (root / "table.txt").write_text("params tokens loss\n")
    (root / "one.csv").write_text(f"params,tokens,loss,name\n{n[0]:.6g},{d[0]:.6g},{loss[0]:.6g},run\n")
    (root / "empty.csv").write_text("params,tokens,loss,name\n")
    (root / "garbage.csv").write_bytes(b"\x00\xff\xfe not, a \"table\n\"\"\x01")
    (root / "nan.csv").write_text("params,tokens,loss,name\n" + rows + "\nnan,1e10,2.0,run\n")
    (root / "negative.csv").write_text("params,tokens,loss,name\n" + rows + "\n-5,1e10,2.0,run\n")
    (root / "constant.csv").write_text("params,tokens,loss,name\n" + "\n".join(
        f"{a:.6g},1e10,{c:.6g},run" for a, c in zip(n, loss)) + "\n")
    (root / "bad-results.jsonl").write_text('{"run_id": "a", "model": "tiny", "params": "many"}\n')
    (root / "lengths.json").write_text(json.dumps([10, 20, 30, 40]))
    (root / "afile").write_text("keep\n")
    (root / "foreign").mkdir()
    (root / "foreign" / "thesis.txt").write_text("keep\n")
    (root / "ro").mkdir()

    draws = {**_draws(dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)), "sigma": np.full(200, 0.02)}
    save_fit_dir(root / "fit-chinchilla", "chinchilla", draws, {"N": n, "D": d}, loss)
    save_fit_dir(root / "fit-unconverged", "chinchilla", draws, {"N": n, "D": d}, loss, ok=False)
    save_grouped_fit_dir(root / "fit-grouped")
    save_grouped_fit_dir(root / "fit-grouped-presets", groups=("tiny", "smollm2-135m", "qwen2.5-0.5b"))
    save_grouped_fit_dir(root / "fit-grouped-chinchilla", groups=("tiny", "smollm2-135m"), form_name="chinchilla")
    (root / "grid-unknown-group.json").write_text(json.dumps(
        {"models": ["tiny", "smollm2-360m"], "n_examples": [100], "avg_tokens": [32]}))
    v, m = np.geomspace(1e4, 1e6, 12), np.tile([1.5e5, 1.7e6], 6)
    acc = np.clip(1e-3 * v**0.1 * m**0.3 + 0.25, 0, 1)
    save_fit_dir(root / "fit-volume", "volume", _draws(dict(A=1e-3, beta=0.1, gamma=0.3, E=0.25)), {"V": v, "M": m},
             acc, n_eval=np.full(12, 200))
    for name, file, damage in [("fit-cut-summary", "summary.json", "cut"), ("fit-bad-summary", "summary.json", "junk"),
                               ("fit-cut-posterior", "posterior.nc", "cut"),
                               ("fit-bad-posterior", "posterior.nc", "junk")]:
        shutil.copytree(root / "fit-chinchilla", root / name)
        target = root / name / file
        data = target.read_bytes()
        target.write_bytes(data[: len(data) // 2] if damage == "cut" else b"\x89garbage" * 50)

    model = root / "model-good"
    export_hf(load_model("tiny-untied"), str(model))
    for name in ("bad-config", "list-config", "bad-weights", "cut-weights", "no-weights", "bad-tokenizer"):
        shutil.copytree(model, root / f"model-{name}")
    (root / "model-bad-config" / "config.json").write_text("{not json")
    (root / "model-list-config" / "config.json").write_text("[1, 2]")
    (root / "model-bad-weights" / "model.safetensors").write_bytes(b"\x00" * 64)
    weights = (model / "model.safetensors").read_bytes()
    (root / "model-cut-weights" / "model.safetensors").write_bytes(weights[: len(weights) // 3])
    (root / "model-no-weights" / "model.safetensors").unlink()
    (root / "model-bad-tokenizer" / "tokenizer.json").write_text('{"version": "1.0", "model": {"type": "nope"}}')

    header = "from tokeff.train.defaults import base_config\n"
    (root / "cfg_syntax.py").write_text("def get_config(arg=None:\n    return 1\n")
    (root / "cfg_noget.py").write_text("X = 1\n")
    (root / "cfg_dict.py").write_text("def get_config(arg=None):\n    return {'model': 'tiny'}\n")
    (root / "cfg_raises.py").write_text("def get_config(arg=None):\n    raise RuntimeError('boom')\n")
    (root / "cfg_import.py").write_text("import no_such_module_xyz\n")
    (root / "cfg_typo.py").write_text(header + "def get_config(arg=None):\n    c = base_config()\n"
                                      "    c.optim.lrr = 1e-5\n    return c\n")
    (root / "cfg_section.py").write_text(header + "import ml_collections\ndef get_config(arg=None):\n"
                                         "    c = base_config()\n    c.optimizer = ml_collections.ConfigDict()\n"
                                         "    return c\n")
    (root / "cfg_type.py").write_text(header + "def get_config(arg=None):\n    c = base_config()\n"
                                      "    c.optim.lr = 'fast'\n    return c\n")
    (root / "cfg_scalar.py").write_text(header + "def get_config(arg=None):\n    c = base_config()\n"
                                        "    c.optim = 3\n    return c\n")
    for name, text in [("wd-garbage", "{garbage"), ("wd-list", "[1]")]:
        (root / name).mkdir()
        (root / name / "config.json").write_text(text)
    (root / "wd-other").mkdir()
    from tokeff.train.defaults import base_config

    other = base_config()
    other.seed = 99
    (root / "wd-other" / "config.json").write_text(json.dumps(other.to_dict()))
    (root / "cwd").mkdir()
    _build_hostile_inputs(root, n, d, loss)
    _build_foreign_dirs(root, other)
    _build_user_modules(root)


def _build_hostile_inputs(root: pathlib.Path, n, d, loss) -> None:
    """Inputs that must be refused unread: FIFOs, symlinks to devices, directories, a sparse file
    over the size limit; tables whose values overflow or whose header repeats a column; grids and
    point lists a run could not use."""
    for ext in ("csv", "jsonl", "json", "py"):
        os.mkfifo(root / f"fifo.{ext}")
        os.symlink("/dev/zero", root / f"zero.{ext}")
        (root / f"dir.{ext}").mkdir()
    for ext in ("csv", "jsonl"):
        os.symlink("/dev/urandom", root / f"urandom.{ext}")
    for ext in ("csv", "jsonl", "json"):
        with open(root / f"big.{ext}", "wb") as f:
            f.truncate(300 * 2**20)  # sparse: no disk used, over the 256 MiB limit
    (root / "emptydir").mkdir()
    (root / "dup-columns.csv").write_text("params,tokens,loss,loss\n" + "\n".join(
        f"{a:.6g},{b:.6g},{c:.6g},{c:.6g}" for a, b, c in zip(n, d, loss)) + "\n")
    (root / "huge.csv").write_text("params,tokens,loss,name\n" + "\n".join(
        f"{a * 1e287:.6g},{b:.6g},{c:.6g},run" for a, b, c in zip(n, d, loss)) + "\n")
    (root / "grid-huge.json").write_text(json.dumps(
        {"models": ["tiny"], "n_examples": list(range(1, 1001)), "avg_tokens": list(range(1, 201))}))
    (root / "grid-2m.json").write_text(json.dumps(
        {"models": ["tiny"], "n_examples": list(range(1, 1001)), "avg_tokens": list(range(1, 2001))}))
    (root / "points-huge.csv").write_text("N,D\n1e9,1e10\n1e9,1e31\n")
    (root / "grid-ctx.json").write_text(json.dumps({"models": ["tiny"], "n_examples": [100], "avg_tokens": [99999]}))
    (root / "grid-1e30.json").write_text(json.dumps({"models": ["tiny"], "n_examples": [1e30], "avg_tokens": [64]}))
    point = {"model": "nope", "budget_flops": 1e9, "composition": {"strategy": "random"}, "seed": 0}
    (root / "points-unknown-model.json").write_text(json.dumps({"points": [point]}))
    (root / "points-neg-seed.json").write_text(json.dumps({"points": [{**point, "model": "tiny", "seed": -1}]}))
    (root / "points-fancy.json").write_text(json.dumps({"points": [{**point, "model": "tiny",
                                                                    "composition": {"strategy": "fancy"}}]}))
    (root / "points-wide.csv").write_text("N,D\n1e9,1e10,5\n")  # pandas would take N for an index
    (root / "table-wide.csv").write_text("params,tokens,loss\n" + "\n".join(
        f"{a:.6g},{b:.6g},{c:.6g},run" for a, b, c in zip(n, d, loss)) + "\n")
    (root / "lengths-nan.json").write_text("[10, NaN, 30]")
    (root / "lengths-huge.json").write_text("[10, 1e30]")
    (root / "grid-ok.json").write_text(json.dumps({"models": ["tiny"], "n_examples": [100], "avg_tokens": [32]}))
    (root / "grid-budget-huge.json").write_text(json.dumps({"models": ["tiny"], "budgets": [1e300],
                                                            "strategies": ["few_long"]}))
    (root / "grid-typo.json").write_text(json.dumps({"models": ["tiny"], "n_exmples": [100], "avg_tokens": [32]}))


def _build_foreign_dirs(root: pathlib.Path, train_config) -> None:
    """Directories a command must not write into: the user's own files where a workdir or an
    output is asked for, and tokeff directories of another kind."""
    (root / "wd-user-metrics").mkdir()
    (root / "wd-user-metrics" / "metrics.jsonl").write_text('{"my": 1}\n')
    (root / "wd-ckpt" / "checkpoints").mkdir(parents=True)
    (root / "wd-ckpt" / "checkpoints" / "my_model.pt").write_bytes(b"weights")
    (root / "wd-ckpt7" / "checkpoints" / "7").mkdir(parents=True)
    (root / "wd-ckpt7" / "checkpoints" / "7" / "state").write_bytes(b"mine")
    (root / "sweep-dir").mkdir()
    (root / "sweep-dir" / ".tokeff-workdir.json").write_text('{"kind": "sweep"}')
    (root / "sweep-dir" / "sweep.json").write_text("{}")
    (root / "train-wd").mkdir()
    (root / "train-wd" / ".tokeff-workdir.json").write_text('{"kind": "train"}')
    (root / "train-wd" / "config.json").write_text(json.dumps(train_config.to_dict()))
    (root / "user-results").mkdir()
    (root / "user-results" / "results.jsonl").write_text('{"mine": true}\n')
    # The file names of a run's record, holding the user's own: not a workdir from before markers.
    (root / "user-sweep").mkdir()
    (root / "user-sweep" / "sweep.json").write_text('{"method": "bayes", "parameters": {}}')
    (root / "user-point").mkdir()
    (root / "user-point" / "point.json").write_text('{"x": 1.5}')
    (root / "user-point" / "metrics.jsonl").write_text("my own log\n")
    import fsspec

    remote = fsspec.filesystem("memory")
    remote.pipe_file("/world/user-metrics/metrics.jsonl", b'{"my": 1}\n')
    remote.pipe_file("/world/sweep-dir/.tokeff-workdir.json", b'{"kind": "sweep"}')
    remote.pipe_file("/world/train-wd/.tokeff-workdir.json", b'{"kind": "train"}')
    remote.pipe_file("/world/fit-out/.tokeff-output.json", b'{"kind": "fit", "files": []}')
    remote.pipe_file("/world/locked/.tokeff-workdir.json", b'{"kind": "train"}')
    remote.pipe_file("/world/locked/.tokeff-lock", json.dumps({"host": "another-host", "pid": 4242,
                                                                "since": "2026-12-06T20:00:00Z"}).encode())


USER_FORMS = ("nanform", "negform", "scalarform", "noparams", "nanrows", "nanaway", "infrows", "shaperows",
              "negrows", "raiserows")


def _build_user_modules(root: pathlib.Path) -> None:
    """User modules (importable from the current directory, `cwd/`) that fail in every way."""
    cwd = root / "cwd"
    (cwd / "raises_mod.py").write_text("raise RuntimeError('boom at import')\n")
    (cwd / "exits_mod.py").write_text("import sys\nsys.exit(0)\n")
    (cwd / "syntax_mod.py").write_text("def f(:\n    pass\n")
    (cwd / "shadow_mod.py").write_text(
        "from tokeff.laws.forms import register_form\n"
        "@register_form(name='chinchilla', inputs=('N', 'D'), target='loss', params={'E': 'lognormal(0.5, 0.5)'})\n"
        "def mean(p, x):\n    return p['E'] + 0 * x['N']\n")
    forms = ["import numpy as np", "from tokeff.laws.forms import register_form",
             "COLS = {'N': 'params', 'D': 'tokens'}", "E = {'E': 'lognormal(0.5, 0.5)'}"]
    bodies = {"nanform": ("E", "p['E'] * np.nan + 0 * x['N']"), "negform": ("E", "-p['E'] + 0 * x['N']"),
              "scalarform": ("E", "p['E']"), "noparams": ("{}", "1.0 + 0 * x['N']"),
              # defects only some rows or some parameter values show (the medians alone pass):
              "nanrows": ("E", "np.where(x['N'] > 1e9, np.nan, p['E'] + 0 * x['N'])"),
              "nanaway": ("E", "np.where(p['E'] < 1.6, np.nan, p['E']) + 0 * x['N']"),  # median 1.65
              "infrows": ("E", "np.where(x['D'] > 1e11, np.inf, p['E'] + 0 * x['N'])"),
              "shaperows": ("E", "p['E'] + 0 * x['N'][:-1]"),
              "negrows": ("E", "np.where(x['N'] > 1e10, -p['E'], p['E']) + 0 * x['N']"),
              "raiserows": ("E", "p['E'] + 0 * x['N'] if p['E'] > 1.6 else x['oops']")}
    for name in USER_FORMS:
        params, body = bodies[name]
        forms += [f"@register_form(name='{name}', inputs=('N', 'D'), target='loss', params={params}, columns=COLS)",
                  f"def {name}(p, x):", f"    return {body}"]
    (cwd / "badforms_mod.py").write_text("\n".join(forms) + "\n")
    (root / "mods").mkdir()
    (root / "mods" / "raises_path.py").write_text("raise ValueError('boom from a path')\n")


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("world")
    _build_world(root)
    yield root
    from tokeff.laws import forms

    for name in USER_FORMS:  # the user module's forms stay out of other tests' registry
        forms._REGISTRY.pop(name, None)
    for name in ("badforms_mod",):
        sys.modules.pop(name, None)
    import fsspec

    fsspec.filesystem("memory").rm("/world", recursive=True)


def _snapshot(root: pathlib.Path) -> dict[str, str]:
    """Every path under `root` with a hash of its bytes (directories as 'dir', symlinks by their
    target, FIFOs as 'fifo', files over 16 MiB by size and mtime: none of them is read)."""
    import stat

    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = os.path.join(dirpath, name)
            info = os.lstat(path)
            if stat.S_ISLNK(info.st_mode):
                value = "link:" + os.readlink(path)
            elif stat.S_ISDIR(info.st_mode):
                value = f"dir:{stat.S_IMODE(info.st_mode):o}"
            elif not stat.S_ISREG(info.st_mode):
                value = "fifo"
            elif info.st_size > 16 * 2**20:
                value = f"size:{info.st_size}:{info.st_mtime_ns}"
            else:
                with open(path, "rb") as f:
                    value = hashlib.sha1(f.read()).hexdigest()
            out[os.path.relpath(path, root)] = value
    import fsspec

    remote = fsspec.filesystem("memory")  # the object-store part of the world (memory://world)
    for path in remote.find("/world"):
        out[f"memory:/{path}"] = hashlib.sha1(remote.cat_file(path)).hexdigest()
    return out


def _read_only(root: pathlib.Path, monkeypatch) -> None:
    """`root/ro` reads as not writable (tests run as root in CI, where os.access says yes to all)."""
    ro = str(root / "ro")
    real = os.access

    def access(path, mode, *args, **kwargs):
        if str(os.path.abspath(os.fspath(path))).startswith(ro) and mode & os.W_OK:
            return False
        return real(path, mode, *args, **kwargs)

    monkeypatch.setattr(os, "access", access)


def _expand(argv: list[str], root: pathlib.Path) -> list[str]:
    return [a.replace("{W}", str(root)) for a in argv]


@pytest.mark.parametrize("name,argv,field", CASES, ids=[c[0] for c in CASES])
def test_bad_input(name, argv, field, world, capsys, monkeypatch):
    from tokeff.cli import main

    _read_only(world, monkeypatch)
    monkeypatch.setenv("TOKEFF_CACHE", str(world.parent / "cache"))  # caches are not outputs
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # a user module's __pycache__ is not an output
    monkeypatch.chdir(world / "cwd")
    before = _snapshot(world)
    capsys.readouterr()
    try:
        code = main(_expand(argv, world))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    after = _snapshot(world)
    lines = [line for line in out.err.splitlines() if line.strip()]
    assert code == 2, f"exit {code}; stderr: {out.err[-2000:]}"
    assert "Traceback" not in out.err
    assert len(lines) == 1, f"{len(lines)} lines on stderr: {out.err[-2000:]}"
    for part in (field,) if isinstance(field, str) else field:
        assert part.lower() in lines[0].lower(), lines[0]
    assert after == before, f"disk changed: {sorted(set(after.items()) ^ set(before.items()))[:5]}"


def test_the_table_counts_at_least_550_cases():
    assert len(CASES) >= 550  # what README.md and docs/reliability.md say
    assert len({c[0] for c in CASES}) == len(CASES)


SUBPROCESS_CASES = ["train-config-file-typo", "train-budget-flops-nan", "fit-prior-uniform-inverted",
                    "allocate-budget--1e12", "sweep-shard-2/2"]


@pytest.mark.parametrize("name", SUBPROCESS_CASES)
def test_bad_input_through_the_real_entry_point(name, world):
    """The same contract through `python -m tokeff.cli` (imports, stderr, exit code of the process)."""
    argv = next(a for n, a, _ in CASES if n == name)
    field = next(f for n, _, f in CASES if n == name)
    before = _snapshot(world)
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    proc = subprocess.run([sys.executable, "-m", "tokeff.cli", *_expand(argv, world)], cwd=world / "cwd",
                          capture_output=True, text=True, env=env, timeout=120)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert len(lines) == 1 and "Traceback" not in proc.stderr, proc.stderr[-2000:]
    for part in (field,) if isinstance(field, str) else field:
        assert part.lower() in lines[0].lower()
    assert _snapshot(world) == before


