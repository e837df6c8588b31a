"""Orbax checkpoints of a run: the train state plus the JSON bookkeeping that makes resume exact.

A checkpoint holds `state` (params, optimizer state, step, RNG — arrays, saved shard by shard)
and `meta` (data-stream position, FLOPs/tokens spent, epoch; JSON). Saves are asynchronous:
orbax copies the arrays to host memory before `save` returns, so the step may donate them
right after, and writes in the background. Orbax commits a step by renaming its temporary
directory, so a run killed mid-save leaves the previous checkpoint as the latest.

Restoring takes an abstract state (ShapeDtypeStructs with shardings): the arrays land directly
on the shards of the *current* mesh, whatever mesh saved them.
"""

from __future__ import annotations

import os

import orbax.checkpoint as ocp


class Checkpoints:
    """The checkpoint directory of one run (`workdir/checkpoints`)."""

    def __init__(self, directory: str, *, keep: int = 2, async_save: bool = True, local: bool = False):
        """`local`: this process saves alone (a multi-host sweep's own point), with no cross-host barrier."""
        extra = {}
        if local:
            import jax

            me = jax.process_index()
            extra["multiprocessing_options"] = ocp.options.MultiprocessingOptions(
                primary_host=me, active_processes={me}, barrier_sync_key_prefix=f"p{me}")
            extra["create"] = False  # orbax cannot create the root for a subset of processes
            os.makedirs(directory, exist_ok=True)
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max(int(keep), 1),
            enable_async_checkpointing=async_save,
            save_interval_steps=1,  # the loop decides when to save
            **extra,
        )
        self._manager = ocp.CheckpointManager(os.path.abspath(directory), options=options)

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def save(self, step: int, state: dict, meta: dict) -> None:
        self._manager.save(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)),
            force=True,
        )

    def restore(self, step: int, abstract_state: dict) -> tuple[dict, dict]:
        """(state on the shardings of `abstract_state`, meta) of checkpoint `step`."""
        restored = self._manager.restore(
            step,
            args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state), meta=ocp.args.JsonRestore()),
        )
        return restored["state"], restored["meta"]

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()
