"""One loader for the user's own modules (`--module`), and one check of the forms they register.

A user module is the user's code: whatever goes wrong in it (a syntax error, an exception or a
`sys.exit` while it imports, a form that returns NaN) is bad input, reported as one line naming
the module and the error, never a traceback and never a silent exit 0. `--module` takes an
importable name (the current directory is searched first, as `python -m` does) or a path to a
`.py` file.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import sys
from collections.abc import Iterable, Mapping

import numpy as np

from tokeff.errors import UserError


def load_user_modules(modules: Iterable[str], field: str = "--module") -> None:
    """Import each module the user named (a dotted name or a path to a .py file)."""
    for spec in modules:
        load_user_module(spec, field)


def load_user_module(spec: str, field: str = "--module") -> None:
    """Import one user module; any failure is a UserError naming it and the error."""
    if not spec or not spec.strip():
        raise UserError(f"{field}: the module name is empty; name a module (my_forms) or a file (./my_forms.py)")
    spec = spec.strip()
    is_path = spec.endswith(".py") or os.sep in spec or (os.altsep or os.sep) in spec
    try:
        if is_path:
            _import_file(spec, field)
        else:
            _import_name(spec, field)
    except UserError as e:
        message = str(e)
        raise UserError(message if message.startswith(field) else f"{field}: {spec}: {message}") from None
    except SyntaxError as e:
        where = f"{e.filename}:{e.lineno}" if e.filename else spec
        raise UserError(f"{field}: {spec}: syntax error at {where} ({e.msg})") from None
    except SystemExit as e:
        raise UserError(f"{field}: {spec} called sys.exit({e.code!r}) while being imported") from None
    except Exception as e:  # noqa: BLE001 - any failure of the user's module is bad input
        raise UserError(f"{field}: {spec} failed to import ({type(e).__name__}: {_first_line(e)})") from None


def _import_name(name: str, field: str) -> None:
    if not all(part.isidentifier() for part in name.split(".")):
        raise UserError(f"{field}: {name!r} is not a module name or a path to a .py file")
    try:
        cwd = os.getcwd()
    except OSError:
        cwd = None
    added = cwd is not None and cwd not in sys.path and "" not in sys.path
    if added:
        sys.path.insert(0, cwd)  # `--module my_forms` finds ./my_forms.py, as `python -m` would
    try:
        importlib.import_module(name)
    except ModuleNotFoundError as e:
        if e.name and (name == e.name or name.startswith(e.name + ".")):
            raise UserError(f"{field}: cannot import '{name}': no module named {e.name!r} (on the Python path "
                            "or in the current directory); a file can be named by its path, e.g. ./my_forms.py") from None
        raise
    finally:
        if added:
            sys.path.remove(cwd)


def _import_file(path: str, field: str) -> None:
    from tokeff.inputs import check_input_file

    if not path.endswith(".py"):
        raise UserError(f"{field}: {path} is not a .py file")
    check_input_file(path, field)
    name = os.path.splitext(os.path.basename(path))[0]
    if not name.isidentifier():
        raise UserError(f"{field}: {path}: the file name must be a Python identifier (e.g. my_forms.py)")
    module_name = f"tokeff_user_{name}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise UserError(f"{field}: {path} is not a Python file")
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module  # dataclasses and pickling look modules up by name
    try:
        spec.loader.exec_module(module)
    except BaseException:
        sys.modules.pop(module_name, None)
        raise


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else "no message"


# Where a user's form is evaluated before a fit: its priors' medians and this many draws from the
# central 80% of each prior (fixed seed), on every data row. A NaN only away from the medians, or
# only on some rows, would otherwise reach the sampler as divergences or a LinAlgError.
N_PRIOR_DRAWS = 8
_DRAW_RANGE = (0.1, 0.9)


def check_form_outputs(form, inputs: Mapping[str, np.ndarray], *, n_draws: int = N_PRIOR_DRAWS) -> None:
    """Evaluate `form`'s mean on every data row at its priors' medians and at `n_draws` prior
    draws, before any fit. A form with no parameters, or whose mean is not one finite number per
    row (a scalar, a wrong shape, NaN or inf on some row), or (loss forms) not positive on every
    row, is refused in one line naming the form, the first bad row with its inputs, and where in
    the priors."""
    if not form.params:
        raise UserError(f"form {form.name}: declares no parameters; a form needs at least one to fit")
    x = {k: np.asarray(v, np.float64) for k, v in inputs.items()}
    n = len(next(iter(x.values()))) if x else 0
    for where, p in _parameter_points(form, n_draws):
        mean = _evaluate(form, p, x, where)
        if mean.shape != (n,):
            raise UserError(f"form {form.name}: its mean function returned shape {mean.shape} for {n} rows {where}; "
                            "it must return one value per row (broadcast the inputs)")
        bad = ~np.isfinite(mean)
        problem = "NaN or infinite"
        if not bad.any() and form.target == "loss":
            bad, problem = mean <= 0, "<= 0 (a loss must be positive)"
        if bad.any():
            row = int(np.argmax(bad))
            values = ", ".join(f"{k}={v[row]:.4g}" for k, v in x.items())
            raise UserError(f"form {form.name}: its mean is {problem} on {int(bad.sum())} of {n} rows {where}, first "
                            f"row {row} ({values}: {mean[row]:.4g})")


def _parameter_points(form, n_draws: int):
    """('at the priors' medians', params), then ('at a prior draw (E=..., ...)', params) x n_draws."""
    yield "at the priors' medians", {k: np.float64(pr.quantiles([0.5])[0]) for k, pr in form.params.items()}
    rng = np.random.default_rng(0)
    for _ in range(n_draws):
        u = rng.uniform(*_DRAW_RANGE, size=len(form.params))
        p = {k: np.float64(pr.quantiles([q])[0]) for (k, pr), q in zip(form.params.items(), u)}
        yield "at a prior draw (" + ", ".join(f"{k}={v:.4g}" for k, v in p.items()) + ")", p


def _evaluate(form, p, x, where: str) -> np.ndarray:
    try:
        return np.asarray(form.mean(p, x), np.float64)
    except UserError:
        raise
    except Exception as e:  # noqa: BLE001 - the user's mean function failed
        raise UserError(f"form {form.name}: its mean function failed on the data {where} "
                        f"({type(e).__name__}: {_first_line(e)})") from None
