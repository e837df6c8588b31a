"""MAP/Laplace compiled once and reused: padding rows of weight zero must not move the fit."""

import numpy as np

from tokeff.laws import laplace
from tokeff.laws.data import FitData
from tokeff.laws.fit import _model_args
from tokeff.laws.forms import get_form
from tokeff.laws.model import Likelihood, make_model
from tokeff.laws.simulate import CHINCHILLA_PUBLISHED, design, simulate


def test_bucket_is_the_next_power_of_two_from_32():
    assert [laplace.bucket(n) for n in (1, 32, 33, 64, 65, 200)] == [32, 32, 64, 64, 128, 256]


def test_padded_mode_is_the_unpadded_mode_and_one_program_serves_every_size():
    import jax
    from jax.flatten_util import ravel_pytree
    from numpyro.infer.util import initialize_model, unconstrain_fn

    form, lik = get_form("chinchilla"), Likelihood("student_t")
    d = simulate(form, CHINCHILLA_PUBLISHED, design(form, 24, seed=0), sigma=0.01, seed=1)
    data = FitData({"N": d["N"], "D": d["D"]}, d["y"], None, {})
    _, point, diag = laplace.run_laplace(form, lik, data, draws=100, seed=0)  # 24 rows -> 32
    assert diag["converged"] and diag["hessian_ok"]
    # The unpadded model's own potential (numpyro's, not the Laplace programs') is flat at the padded
    # fit's mode. Its derivatives are jitted: eager, every operation of the Hessian compiles alone.
    args = _model_args(form, data)
    info, potential, _, _ = initialize_model(jax.random.PRNGKey(0), make_model(form, lik), model_args=args)
    mode = unconstrain_fn(make_model(form, lik), args, {}, {k: point[k] for k in info.z})
    flat, unravel = ravel_pytree(mode)
    grad = jax.jit(jax.grad(lambda f: potential(unravel(f))))(flat)
    hessian = jax.jit(jax.hessian(lambda f: potential(unravel(f))))(flat)
    assert float(np.sqrt(np.abs(grad @ np.linalg.solve(hessian, grad)))) < 0.1  # Newton step < 0.1 sd

    programs = laplace._CACHE[laplace._key(form, lik)]
    compiled = programs.solve._cache_size()  # jax.jit's count of compiled shapes
    samples, _, _ = laplace.run_laplace(form, lik, data.take(np.arange(20)), draws=100, seed=1)
    assert programs.solve._cache_size() == compiled and samples["alpha"].shape == (1, 100)


def test_nuts_starts_from_laplace_for_loss_forms():
    """Loss forms start NUTS from overdispersed Laplace draws (one per chain, in numpyro's
    unconstrained space); accuracy forms keep their prior starts; a bad --init is a UserError."""
    import pytest

    from tokeff.errors import UserError
    from tokeff.laws.data import FitData
    from tokeff.laws.fit import resolve_init
    from tokeff.laws.forms import get_form
    from tokeff.laws.laplace import laplace_starts
    from tokeff.laws.model import Likelihood
    from tokeff.laws.settings import FitSettings
    from tokeff.laws.simulate import isoflop_table

    form = get_form("chinchilla")
    assert resolve_init("auto", form) == "laplace"
    assert resolve_init("auto", get_form("volume")) == "prior"
    with pytest.raises(UserError, match="--init"):
        FitSettings(init="median")
    t = isoflop_table("chinchilla", seed=0)
    data = FitData({"N": np.asarray(t["params"], float), "D": np.asarray(t["tokens_seen"], float)},
                   np.asarray(t["eval_loss"], float), None, {})
    starts = laplace_starts(form, Likelihood(kind="failures"), data, 4, seed=0)
    assert starts is not None and "sigma" in starts and "failure_prob" in starts
    assert all(np.shape(v)[0] == 4 and np.isfinite(v).all() for v in starts.values())
    assert np.std(starts["beta"]) > 0  # chains start apart, so r-hat still compares them
