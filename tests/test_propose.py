"""Proposal math: importance reweighting, expected information on a case with a known answer."""

import numpy as np
import pytest

from tokeff.decide import proposals as pr
from tokeff.laws.model import Likelihood

NORMAL = Likelihood()


def test_reweight_matches_conjugate_posterior():
    # mu ~ N(0, 1); one observation y ~ N(mu, 1) (as log loss with mean exp(mu), sigma 1):
    # posterior mean y / 2, sd 1/sqrt(2).
    rng = np.random.default_rng(0)
    mu_P = rng.standard_normal(200_000)
    y = 1.2
    ll = pr.outcome_log_likelihood("loss", NORMAL, np.array([y]), mu_P, sigma_P=np.ones_like(mu_P))
    w = pr.reweight(np.full(mu_P.size, 1 / mu_P.size), ll)[0]
    mean = np.sum(w * mu_P)
    assert mean == pytest.approx(0.6, abs=0.01)
    assert np.sqrt(np.sum(w * (mu_P - mean) ** 2)) == pytest.approx(1 / np.sqrt(2), abs=0.01)


@pytest.mark.parametrize("noise_sd", [0.5, 1.0, 3.0])
def test_expected_width_reduction_matches_gaussian_answer(noise_sd):
    # Decision x = mu, 90% width before = 2 * 1.645; after one observation with noise s the
    # posterior sd is 1 / sqrt(1 + 1/s^2) whatever y is, so the expected reduction is exact.
    rng = np.random.default_rng(1)
    mu_P = rng.standard_normal(4000)
    eig = pr.expected_information(np.exp(mu_P)[:, None], "loss", NORMAL, pr.interval_width(mu_P),
                                  sigma_P=np.full(mu_P.size, noise_sd), n_sims=200, seed=2)
    expected = 2 * 1.6449 * (1 - 1 / np.sqrt(1 + 1 / noise_sd**2))
    assert eig[0] == pytest.approx(expected, abs=0.08)


def test_replicates_act_as_less_noise():
    rng = np.random.default_rng(1)
    mu_P = rng.standard_normal(4000)
    kw = dict(sigma_P=np.full(mu_P.size, 2.0), n_sims=200, seed=3)
    four = pr.expected_information(np.exp(mu_P)[:, None], "loss", NORMAL, pr.interval_width(mu_P),
                                   replicates_C=np.array([4.0]), **kw)
    expected = 2 * 1.6449 * (1 - 1 / np.sqrt(1 + 4 / 2.0**2))  # 4 runs at sd 2 = one at sd 1
    assert four[0] == pytest.approx(expected, abs=0.08)
    np.testing.assert_array_equal(pr.replicates(np.array([1.0, 30.0, 1e9]), 100.0), [100, 3, 1])


def test_option_entropy_and_binomial_information():
    # Two options; which is best depends on the sign of a parameter t ~ U(-1, 1).
    rng = np.random.default_rng(4)
    t_P = rng.uniform(-1, 1, 4000)
    utility_PxO = np.stack([0.5 + 0.1 * t_P, np.full_like(t_P, 0.5)], axis=1)
    entropy = pr.option_entropy(utility_PxO)
    assert entropy(np.full((1, 4000), 1 / 4000))[0] == pytest.approx(np.log(2), abs=0.01)
    # An accuracy run whose mean is 0.5 + 0.1 t: 1000 questions nearly settle the sign of t,
    # 10 questions barely move it.
    acc_PxC = np.stack([0.5 + 0.1 * t_P, 0.5 + 0.1 * t_P], axis=1)
    eig = pr.expected_information(acc_PxC, "accuracy", NORMAL, entropy,
                                  n_eval_C=np.array([10, 1000]), n_sims=64, seed=5)
    assert 0 <= eig[0] < 0.15 < 0.45 < eig[1] <= np.log(2) + 1e-9


def test_uninformative_candidate_scores_zero_and_rank_is_per_flop():
    rng = np.random.default_rng(6)
    mu_P = rng.standard_normal(2000)
    flat = pr.expected_information(np.ones((2000, 1)), "loss", NORMAL, pr.interval_width(mu_P),
                                   sigma_P=np.full(2000, 0.1), n_sims=32)
    assert flat[0] == pytest.approx(0.0, abs=1e-9)
    ranked = pr.rank(np.array([1.0, 1.0, 0.3, -0.01]), np.array([10.0, 2.0, 1.0, 1.0]))
    assert [r.index for r in ranked] == [1, 2, 0, 3]
    assert ranked[-1].eig == 0.0  # Monte Carlo noise below zero is clipped


def test_the_laws_miss_counts_as_noise_the_run_cannot_remove():
    # With a discrepancy (what the law misses at the candidate, shared by its replicates) of sd 1
    # on top of noise sd 1, one run informs mu as one observation with noise sd sqrt(2) would.
    rng = np.random.default_rng(8)
    mu_P = rng.standard_normal(4000)
    shift_P = rng.standard_normal(4000)
    eig = pr.expected_information(np.exp(mu_P + shift_P)[:, None], "loss", NORMAL, pr.interval_width(mu_P),
                                  sigma_P=np.ones(4000), n_sims=200, seed=9)
    expected = 2 * 1.6449 * (1 - 1 / np.sqrt(1 + 1 / 2.0))
    assert eig[0] == pytest.approx(expected, abs=0.08)


def test_a_simulated_outcome_is_drawn_as_the_fit_predicts_it():
    # One predictive distribution: what `propose` simulates for a run (the law, the noise and
    # the discrepancy draws) is distributed as Fit.predictive(kind="observed") draws a new observation.
    from tokeff.laws.forms import get_form
    from tokeff.laws.model import predictive

    form, lik = get_form("chinchilla"), Likelihood()
    rng = np.random.default_rng(10)
    n_draws = 20_000
    samples = {k: v * np.exp(0.02 * rng.standard_normal(n_draws))
               for k, v in dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28, sigma=0.01).items()}
    x = {"N": np.array([7e10]), "D": np.array([1.4e12])}
    sd = np.full((n_draws, 1), 0.05)  # tau x distance: five times the noise
    reference = np.log(predictive(form, lik, samples, x, "observed", discrepancy_sd=sd, seed=1))[:, 0]
    location = np.log(predictive(form, lik, samples, x, "new_run", discrepancy_sd=sd, seed=3))[:, 0]
    simulated = pr.simulate_outcomes("loss", lik, location, sigma_M=samples["sigma"], seed=2)
    qs = [0.05, 0.25, 0.5, 0.75, 0.95]
    np.testing.assert_allclose(np.quantile(simulated, qs), np.quantile(reference, qs), atol=0.004)
