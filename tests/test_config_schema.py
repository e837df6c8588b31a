"""Sweep and demo configs are locked to their schemas: bad keys are refused before anything runs.

Each case runs `tokeff sweep` / `tokeff demo` in-process and expects exit 2, one stderr line
naming the key, no traceback and no run folder.
"""

import re
import textwrap

import pytest

from tokeff.cli import main

SWEEP = """
import ml_collections
from tokeff.train.defaults import base_config

def get_config(arg=None):
    c = ml_collections.ConfigDict()
    c.train = base_config()
    c.train.data.source = "arithmetic"
    c.train.data.pool_size = 100
    c.train.data.row_len = 32
    c.grid = ml_collections.ConfigDict()
    c.grid.models = ("tiny",)
    c.grid.budgets = (2e9,)
    c.grid.compositions = (dict(strategy="few_long"),)
    c.eval = ml_collections.ConfigDict(dict(max_questions=8))
{extra}
    return c
"""


def write_config(tmp_path, extra: str = "") -> str:
    path = tmp_path / "sweep_config.py"
    path.write_text(SWEEP.format(extra=textwrap.indent(textwrap.dedent(extra), "    ")))
    return str(path)


def refused(capsys, tmp_path, argv, key):
    workdir = tmp_path / "run"
    code = main([*argv, "--workdir", str(workdir)])
    out, err = capsys.readouterr()
    assert code == 2, (out, err)
    assert err.count("\n") == 1 and key in err and "Traceback" not in err, err
    assert not workdir.exists(), "nothing may be written for a refused config"


@pytest.mark.parametrize("extra, overrides, key", [
    ("del c['grid']", [], "config.grid.budgets: missing"),
    ("del c['eval']", [], "config.eval.max_questions: missing"),
    ("c.eval.max_questons = 5", [], "config.eval.max_questons: unknown config key"),
    ("", ["--config.eval.max_questons=5"], "config.eval.max_questons: unknown config key"),
    ("", ["--config.eval.max_questions=0"], "config.eval.max_questions: must be positive"),
    ("c.grid = ml_collections.ConfigDict(dict(models=('tiny',), budgets='2e9', compositions=()))", [],
     "config.grid.budgets"),
    ("", ["--config.eval.batch_size=many"], "config.eval.batch_size: could not convert"),
    ("", ["--config.train.optim.lr=-1"], "config.train.optim.lr"),
    ("c.grid.budgets = (2e9, 1e5)", [], "config.grid.budgets: point tiny_1e05_few_long_s0"),
])
def test_sweep_config_refused_before_anything_runs(tmp_path, capsys, extra, overrides, key):
    refused(capsys, tmp_path, ["sweep", "--config", write_config(tmp_path, extra), *overrides], key)


def test_sweep_runner_has_its_default(tmp_path, capsys):
    code = main(["sweep", "--config", write_config(tmp_path), "--workdir", str(tmp_path / "run"), "--dry-run"])
    out, err = capsys.readouterr()
    assert code == 0 and out.startswith("pending  tiny_2e09_few_long_s0"), err


@pytest.mark.parametrize("overrides, key", [
    (["--config.fit.chanis=2"], "config.fit.chanis: unknown config key"),
    (["--config.check.interval=1.5"], "config.check.interval: must be in (0, 1)"),
    (["--config.grid.budgets=(1e9, 2e9)"], "config.grid.budgets: the prediction check needs at least 3 budgets"),
    (["--config.eval.max_questions=0"], "config.eval.max_questions: must be positive"),
])
def test_demo_config_refused_before_anything_runs(tmp_path, capsys, overrides, key):
    refused(capsys, tmp_path, ["demo", "--config", ":smoke", *overrides], key)



@pytest.mark.parametrize("body, message", [
    # a lazy reference that fails when read, and a section that holds itself: the generic message
    ("c.n = 1\n    c.d = 1\n    c.a = c.get_ref('n') // c.get_ref('d')\n    c.d = 0\n", "get_config failed (TypeError"),
    ("c.loop = c\n", "get_config failed (TypeError"),
    # a placeholder holds None: the message gives its declared type
    ("c.optim.lr = ml_collections.FieldReference(None, field_type=float)\n", "config.optim.lr: must be a float, got str"),
])
def test_a_mistyped_value_is_one_line_whatever_else_the_config_holds(tmp_path, body, message):
    from tokeff.configfile import _call_get_config
    from tokeff.errors import UserError

    file = tmp_path / "cfg.py"
    file.write_text("import ml_collections\n\ndef get_config():\n    c = ml_collections.ConfigDict()\n"
                    "    c.optim = ml_collections.ConfigDict()\n    c.optim.lr = 0.1\n    " + body
                    + "    c.optim.lr = 'fast'\n    return c\n")
    with pytest.raises(UserError, match=re.escape(message)):
        _call_get_config(str(file), None, "--config")
