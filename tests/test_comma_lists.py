"""Comma-separated flags (`tokeff.commalist`): an empty item is refused, naming the flag as typed,
in one line, whichever flag it is; and `--form` is named as typed when its name is unknown."""

import json

import pytest

from tokeff.errors import UserError


def _read(kind: str, text: str):
    """Each comma-separated list tokeff reads, read as its command would."""
    from tokeff.data.sources import resolve_subjects
    from tokeff.data.task import parse_fields
    from tokeff.decide.options import int_list
    from tokeff.laws.forms import get_form
    from tokeff.laws.hierarchy import parse_pool
    from tokeff.laws.priors import Prior
    from tokeff.laws.stacking import form_names

    return {"lengths": lambda: int_list(text, "--lengths-grid"), "form": lambda: form_names(text),
            "pool": lambda: parse_pool(text, get_form("chinchilla")), "subjects": lambda: resolve_subjects(text),
            "fields": lambda: parse_fields(text, "--fields"), "prior": lambda: Prior.parse(text)}[kind]()


@pytest.mark.parametrize("kind,text,message", [
    ("lengths", "64,", "--lengths-grid: an empty item in '64,'"),
    ("form", "chinchilla,,kaplan", "--form: an empty form name in 'chinchilla,,kaplan'"),
    ("pool", "beta,,E", "--pool: an empty parameter name in 'beta,,E'"),
    ("subjects", "anatomy,,virology", "subjects: an empty subject name in 'anatomy,,virology'"),
    ("fields", "question=q,,answer=label", "--fields: an empty mapping in 'question=q,,answer=label'"),
    ("prior", "normal(0,,1)", "prior: an empty argument in '0,,1'"),
    ("prior", "normal(0, 1, )", "prior: an empty argument in '0, 1, '"),
])
def test_an_empty_item_is_refused_in_one_line_naming_the_field(kind, text, message):
    with pytest.raises(UserError) as e:
        _read(kind, text)
    assert str(e.value).startswith(message) and "\n" not in str(e.value)


def test_lists_without_an_empty_item_read_as_given():
    from tokeff.data.sources import resolve_subjects
    from tokeff.data.task import parse_fields

    assert resolve_subjects(" anatomy , virology") == ["anatomy", "virology"]
    assert parse_fields("question=q, choices=a|b") == {"question": "q", "choices": ["a", "b"]}
    assert parse_fields("") == {}  # not given: no mapping


@pytest.fixture
def mc_file(tmp_path):
    path = tmp_path / "mc.jsonl"
    path.write_text("".join(json.dumps({"question": f"Is {i} even?", "choices": ["yes", "no", "maybe", "never"],
                                        "answer": i % 2, "subject": ("anatomy", "virology")[i % 2]}) + "\n"
                            for i in range(8)))
    return path


@pytest.mark.parametrize("argv,flag", [
    (["eval", "--model", "tiny", "--subjects", "anatomy,"], "--subjects"),
    (["compose", "--model", "tiny", "--subjects", "anatomy,,virology"], "--subjects"),
    (["compose", "--model", "tiny", "--target-subjects", ",anatomy"], "--target-subjects"),
    (["compose", "--model", "tiny", "--fields", "question=question,"], "--fields"),
])
def test_cli_refuses_an_empty_subject_or_field_before_loading_anything(argv, flag, mc_file, tmp_path, cli,
                                                                       monkeypatch):
    import tokeff.data.model_tokenizer
    import tokeff.data.sources

    def not_reached(*a, **k):
        raise AssertionError("loaded data or a tokenizer before refusing the flag")

    monkeypatch.setattr(tokeff.data.model_tokenizer, "load_tokenizer", not_reached)
    monkeypatch.setattr(tokeff.data.sources, "load_multiple_choice", not_reached)
    where = ["--dataset", str(mc_file)] if argv[0] == "eval" else ["--path", str(mc_file)]
    monkeypatch.chdir(tmp_path)
    before = sorted(p.name for p in tmp_path.iterdir())
    code, err = cli([*argv, *where])
    assert code == 2 and len(err.splitlines()) == 1, err
    assert f"{flag}: an empty" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == before


def test_an_unknown_form_is_named_as_the_flag_was_typed(tmp_path, cli):
    table = tmp_path / "t.csv"
    table.write_text("N,D,loss\n1e6,1e8,3\n1e7,1e9,2.5\n1e8,1e10,2.2\n")
    common = [str(table), "--map", "N=N", "--map", "D=D", "--target", "loss", "--method", "map"]
    for argv in (["fit", *common, "--form", "nope", "--out", str(tmp_path / "f")],
                 ["fit", *common, "--form", "chinchilla,nope", "--out", str(tmp_path / "f")],
                 ["fit", *common, "--form", "nope", "--group", "N", "--out", str(tmp_path / "f")],
                 ["backtest", *common, "--form", "nope", "--by", "N", "--out", str(tmp_path / "b")],
                 ["backtest", *common, "--form", "nope", "--by", "N", "--decision", "model", "--group", "N",
                  "--out", str(tmp_path / "b")]):
        code, err = cli(argv)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert "--form: unknown form 'nope'" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.csv"]


def test_a_fit_of_an_unregistered_form_asks_for_its_module(tmp_path, cli):
    """allocate, predict and compare (and propose, through the same reader) take no --form: the fit's
    own form is named, with the fix."""
    import pathlib
    import shutil
    import sys

    import numpy as np

    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent / "fixtures"))
    from handmade_fit import save_fit_dir

    n, d = np.geomspace(1e6, 1e9, 6), np.geomspace(1e8, 1e11, 6)
    draws = {k: np.full(50, v) for k, v in dict(E=1.7, A=400.0, B=400.0, alpha=0.34, beta=0.28, sigma=0.02).items()}
    fit = save_fit_dir(tmp_path / "fit", "chinchilla", draws, {"N": n, "D": d}, 1.7 + 400 / n**0.34 + 400 / d**0.28)
    summary = json.loads((tmp_path / "fit" / "summary.json").read_text())
    (tmp_path / "fit" / "summary.json").write_text(json.dumps({**summary, "form": "my_law"}))
    shutil.copytree(fit, tmp_path / "fit2")
    for argv in (["allocate", fit, "--budget", "1e20", "--out", str(tmp_path / "a")],
                 ["predict", fit, "--at", "N=1e9", "D=1e10", "--out", str(tmp_path / "p")],
                 ["compare", fit, str(tmp_path / "fit2")]):
        code, err = cli(argv)
        assert code == 2 and len(err.splitlines()) == 1, err
        assert "form 'my_law', which is not registered; pass --module" in err, err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["fit", "fit2"]
