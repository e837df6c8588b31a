"""Fitting scaling laws: forms and their priors, likelihoods, NUTS / MAP-Laplace / classic fits,
diagnostics, LOO comparison, out-of-sample backtests, simulations and plots."""
