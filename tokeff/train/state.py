"""The train state, created already sharded on the mesh.

The state is a plain dict `{step, params, opt_state, rng}` (a pytree orbax saves as is).
Parameters are split from the NNX module: `graphdef` (the static structure) stays out of the
state, so the jitted step sees only arrays. A from-scratch model is initialised by a jitted
function whose `out_shardings` place every parameter on its shards: no host ever holds the
whole model. A pretrained model is read on the host and then `device_put` onto its shards.
"""

from __future__ import annotations

import dataclasses
from typing import Callable

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from tokeff.train.sharding import LOGICAL_RULES, state_shardings

NamedSharding = jax.sharding.NamedSharding
P = jax.sharding.PartitionSpec


@dataclasses.dataclass(frozen=True)
class StateLayout:
    """Everything about the state but its values: module structure, shapes, dtypes, shardings."""

    graphdef: nnx.GraphDef
    shardings: dict  # the state's tree, NamedSharding leaves
    abstract: dict  # the state's tree, ShapeDtypeStruct leaves with their sharding (orbax restore target)


def _split_params(model: nnx.Module):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    if jax.tree.leaves(rest):
        raise ValueError("train: the model has non-parameter state, which the train step does not carry")
    return graphdef, params


def _init_from(params, tx: optax.GradientTransformation, seed: int) -> dict:
    return {
        "step": jnp.zeros((), jnp.int32),
        "params": params,
        "opt_state": tx.init(params),
        "rng": jax.random.key_data(jax.random.key(seed)),
    }


def state_layout(model_factory: Callable[[], nnx.Module], tx: optax.GradientTransformation,
                 mesh: jax.sharding.Mesh) -> StateLayout:
    """The layout of the state, from abstract evaluation only (nothing is allocated)."""
    # Under a global mesh, nnx.eval_shape resolves the logical names itself: give it the rules.
    with nnx.logical_axis_rules(list(LOGICAL_RULES.items())):
        graphdef, abstract_params = _split_params(nnx.eval_shape(model_factory))
    params_shardings = state_shardings(abstract_params, mesh)
    replicated = NamedSharding(mesh, P())
    abstract = jax.eval_shape(lambda p: _init_from(p, tx, 0), abstract_params)
    shardings = {
        "step": replicated,
        "params": params_shardings,
        "opt_state": optax.tree_map_params(tx, lambda _, s: s, abstract["opt_state"], params_shardings,
                                           transform_non_params=lambda _: replicated),
        "rng": replicated,
    }
    abstract = jax.tree.map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                            abstract, shardings)
    return StateLayout(graphdef=graphdef, shardings=shardings, abstract=abstract)


def init_state(layout: StateLayout, model_factory: Callable[[], nnx.Module],
               tx: optax.GradientTransformation, seed: int, *, pretrained: nnx.Module | None = None) -> dict:
    """A fresh state on its shards: params initialised on device from `model_factory`, or `pretrained`'s."""
    if pretrained is None:
        init = jax.jit(lambda: _init_from(_split_params(model_factory())[1], tx, seed),
                       out_shardings=layout.shardings)
        # Runs once: XLA:CPU's optimising passes over dozens of threefry calls cost more
        # (~4x compile time) than they save.
        options = {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else None
        return init.lower().compile(compiler_options=options)()
    params = jax.device_put(_split_params(pretrained)[1], layout.shardings["params"])
    init = jax.jit(lambda p: _init_from(p, tx, seed), in_shardings=(layout.shardings["params"],),
                   out_shardings=layout.shardings)
    return init(params)


def fresh_state_fn(layout: StateLayout, tx: optax.GradientTransformation) -> Callable[[dict, int], dict]:
    """`fresh(params, seed) -> state`: a new state starting from a copy of `params`, compiled once.

    What the warm sweep engine resets to between points: the pretrained (or initial) parameters
    stay on device, untouched, while the step donates and overwrites the copy.
    """
    def fresh(params, seed):
        return _init_from(jax.tree.map(jnp.copy, params), tx, seed)

    return jax.jit(fresh, in_shardings=(layout.shardings["params"], NamedSharding(layout.shardings["step"].mesh, P())),
                   out_shardings=layout.shardings)
