"""numpyro's sampling loop compiled once per sampler, not once per chain.

numpyro's `fori_collect` (numpyro 0.22) wraps its loop body in a new `jax.jit` object on every call
and hands it to the jitted loop as a static argument. jit objects compare by identity, so every
call misses JAX's cache and the whole NUTS loop compiles again: once per chain when chains run one
after another (`chain_method="sequential"`, what a single CPU device gets), each 5-10 s on a 2-core
CPU against well under a second of sampling at test sizes. `share_sampling_loop` has numpyro's
`maybe_jit` hand back the jit object it made before for the same function and options, so the
second chain, and a later run of the same `MCMC`, run the first chain's program. Nothing else
changes: it is the same program, so the draws are the same.
"""

from __future__ import annotations

from collections import OrderedDict

# Recently made jit objects, by (function, options). numpyro's own cache of loop bodies keeps 8;
# a few more cover the loop itself and the bodies of SVI runs, which are new functions every run.
_MAX_KEPT = 16
_made: OrderedDict = OrderedDict()


def share_sampling_loop() -> None:
    """Install the shared `maybe_jit` in `numpyro.util` (once; a numpyro without it is left alone)."""
    import numpyro.util as util

    original = getattr(util, "maybe_jit", None)
    if original is None or getattr(original, "_tokeff_shared", False):
        return

    def maybe_jit(fn, *args, **kwargs):
        try:
            key = (fn, args, tuple(sorted(kwargs.items())))
            made = _made.get(key)
        except TypeError:  # unhashable options: numpyro's own behaviour
            return original(fn, *args, **kwargs)
        if made is None:
            made = _made[key] = original(fn, *args, **kwargs)
            if len(_made) > _MAX_KEPT:
                _made.popitem(last=False)
        else:
            _made.move_to_end(key)
        return made

    maybe_jit._tokeff_shared = True
    util.maybe_jit = maybe_jit
