"""tokeff: fine-tune language models under exact FLOP budgets, fit Bayesian scaling laws,
and decide how to spend the next budget.

Tensor names carry their axes as a suffix (`logits_BxSxV`, `utility_PxO`), one letter an axis,
with one legend for the whole package:

    B  batch rows                      V  vocabulary
    S  sequence positions (tokens)     D  model width (d_model)
    H  query heads                     G  key/value heads (grouped-query attention)
    K  head dimension                  F  MLP width (d_ff)
    P  posterior draws                 O  options (things a decision chooses between)
    C  candidate runs (proposals)      E  examples in a data pool
    M  simulated outcomes              Q  questions (evaluation)
    U  budgets (a sweep over budgets)
"""

__version__ = "0.1.0"
