"""Published constants the code compares against, written once (sources in each name)."""

from __future__ import annotations

import math

# Chinchilla, L(N, D) = E + A / N^alpha + B / D^beta: as printed (Hoffmann et al. 2022), and
# the replication that refit its data points (Besiroglu et al. 2024, Epoch AI).
PUBLISHED_CHINCHILLA = {
    "Chinchilla (Hoffmann et al. 2022)": dict(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28),
    "Epoch AI replication (Besiroglu et al. 2024)": dict(E=1.82, A=482.0, B=2085.0, alpha=0.348, beta=0.366),
}
# Hoffmann et al.'s parameters unrounded (as Besiroglu et al. 2024 recovered them).
CHINCHILLA_UNROUNDED = {
    "E": math.exp(0.5267228),
    "A": math.exp(6.0073404),
    "B": math.exp(6.0179186),
    "alpha": 0.33917084,
    "beta": 0.2849083,
}
# The model Chinchilla trained at Gopher's budget: 70B parameters on 1.4T tokens.
CHINCHILLA_RUN = dict(C=5.76e23, N=70e9, D=1.4e12)
