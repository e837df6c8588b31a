"""numpyro's sampling loop compiles once per sampler (`tokeff.laws.sampling_loop`).

The saving rests on numpyro looking `maybe_jit` up in `numpyro.util` at run time; a numpyro that
stops doing so would silently bring back one compile per chain. This test fails then.
"""

import jax
import numpyro
import numpyro.distributions as dist
from jax import monitoring
from numpyro.infer import MCMC, NUTS

import pytest

from tokeff.laws.sampling_loop import share_sampling_loop


@pytest.fixture
def no_persistent_cache():
    """A program loaded from the suite's on-disk cache is not compiled, so it would hide a miss."""
    before = jax.config.jax_enable_compilation_cache
    jax.config.update("jax_enable_compilation_cache", False)
    yield
    jax.config.update("jax_enable_compilation_cache", before)


def _model():
    numpyro.sample("x", dist.Normal(0.0, 1.0))


def _backend_compiles(run) -> int:
    events = []

    def listener(event, duration, **kwargs):
        if event.endswith("backend_compile_duration"):
            events.append(event)

    monitoring.register_event_duration_secs_listener(listener)
    try:
        run()
    finally:
        monitoring.unregister_event_duration_listener(listener)
    return len(events)


def test_a_second_run_of_the_same_sampler_compiles_nothing(no_persistent_cache):
    share_sampling_loop()
    mcmc = MCMC(NUTS(_model), num_warmup=20, num_samples=20, num_chains=2, chain_method="sequential",
                progress_bar=False)
    assert _backend_compiles(lambda: mcmc.run(jax.random.PRNGKey(0))) > 0  # the listener sees compiles
    assert _backend_compiles(lambda: mcmc.run(jax.random.PRNGKey(1))) == 0
    assert mcmc.get_samples()["x"].shape == (40,)


def test_installing_twice_keeps_one_wrapper():
    share_sampling_loop()
    installed = numpyro.util.maybe_jit
    share_sampling_loop()
    assert numpyro.util.maybe_jit is installed and installed._tokeff_shared
