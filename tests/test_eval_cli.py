"""`tokeff eval`: a real run on a tiny model, and bad input as one line with exit code 2."""

import json

import pytest

from tokeff.cli import main

QUESTIONS = [
    {"question": f"Q{i}: which word is {w}?", "choices": [w, "stone", "river", "cloud"], "answer": 0,
     "subject": "toy"}
    for i, w in enumerate(["red", "blue", "green", "fast", "slow", "tall"])
]


@pytest.fixture
def toy_file(tmp_path):
    path = tmp_path / "toy.jsonl"
    path.write_text("\n".join(json.dumps(q) for q in QUESTIONS))
    return str(path)


def test_eval_json_report_on_a_tiny_model(toy_file, capsys):
    rc = main(["eval", "--model", "tiny", "--dataset", toy_file, "--split", "all", "--method", "all",
               "--batch-size", "8", "--json"])
    assert rc == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == len(QUESTIONS) and report["chance"] == 0.25
    assert set(report["methods"]) == {"cloze", "cloze_norm", "cloze_token", "letter"}
    for m in report["methods"].values():
        lo, hi = m["ci95"]
        assert 0.0 <= lo <= m["accuracy"] <= hi <= 1.0 and m["n"] == len(QUESTIONS)
    # The cloze methods share one pass: eval FLOPs = that pass + the letter pass.
    assert report["eval_flops"] == report["methods"]["cloze"]["flops"] + report["methods"]["letter"]["flops"]
    assert report["loss"] > 0 and report["loss_tokens"] > 0


def test_eval_table_on_a_tiny_model(toy_file, capsys):
    assert main(["eval", "--model", "tiny", "--dataset", toy_file, "--split", "all", "--limit", "4"]) == 0
    out = capsys.readouterr().out
    assert "95% CI (Wilson)" in out and "n=4" in out and "answer loss" in out and "eval FLOPs" in out


@pytest.mark.parametrize("argv, field", [
    (["--subjects", "anatomy,virolgy"], "subjects: unknown subject 'virolgy'; did you mean virology"),
    (["--limit", "0"], "--limit: must be positive"),
    (["--k-shot", "2", "--split", "all"], "--k-shot: needs --split eval"),
    (["--dataset", "missing.jsonl"], "--dataset: file not found"),
])
def test_bad_input_is_one_line_exit_2(argv, field, capsys):
    assert main(["eval", *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert err.startswith("tokeff eval: error: ") and field in err
