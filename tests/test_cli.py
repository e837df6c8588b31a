"""The `tokeff` dispatcher: every command is importable and documents itself; errors are one line."""

import subprocess
import sys

import pytest

from tokeff.cli import COMMANDS, main


def test_top_level_help_lists_every_command(capsys):
    with pytest.raises(SystemExit) as e:
        main(["--help"])
    assert e.value.code == 0
    out = capsys.readouterr().out
    for name in COMMANDS:
        assert name in out


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_has_help(name, capsys):
    with pytest.raises(SystemExit) as e:
        main([name, "--help"])
    assert e.value.code == 0
    assert "usage: tokeff " + name in capsys.readouterr().out


def test_unknown_flag_is_one_line_exit_2(capsys):
    with pytest.raises(SystemExit) as e:
        main(["flops", "--model", "tiny", "--seq-len", "8", "--no-such-flag"])
    assert e.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1].startswith("tokeff: error:") and "--no-such-flag" in err[-1]


def test_console_script_user_error_has_no_traceback():
    proc = subprocess.run([sys.executable, "-m", "tokeff.cli", "flops", "--model", "nope", "--seq-len", "8"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "unknown preset 'nope'" in proc.stderr and "smollm2-135m" in proc.stderr


def test_python_dash_m_tokeff_runs_the_cli():
    """`python -m tokeff` (from a checkout, without the console script) is the same CLI, exit codes included."""
    proc = subprocess.run([sys.executable, "-m", "tokeff", "flops", "--model", "nope", "--seq-len", "8"],
                          capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("tokeff flops: error:"), proc.stderr


def test_a_positional_after_a_map_list_is_found_behind_an_abbreviated_flag():
    """argparse takes `--lik` for `--likelihood`: its value is a value, not the table."""
    from tokeff.cli import _hoist_positionals, build_parser

    parser = build_parser()
    argv = ["fit", "--form", "chinchilla", "--out", "o", "--lik", "normal", "--map", "N=params", "data.csv"]
    assert parser.parse_args(_hoist_positionals(argv, parser)).data == "data.csv"
