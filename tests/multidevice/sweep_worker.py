"""Runs tiny sweeps on simulated CPU devices; spawned by tests/test_sweep_concurrent.py.

The device count must be set before JAX starts (XLA_FLAGS=--xla_force_host_platform_device_count=N
in the environment), hence a process of its own. Prints one JSON line.

    sweep_worker.py lanes ROOT               8 points at once on 8 devices, then the same one by one
    sweep_worker.py host I PORT ROOT         one of two processes sharing one sweep (gloo)
"""

import json
import os
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)


def tiny_config():
    from tokeff.train.config import load_config

    config = load_config(os.path.join(ROOT, "configs", "sweep_tiny.py"),
                         ["--config.grid.budgets=(2e9,)", "--config.eval.max_questions=16",
                          "--config.train.checkpoint.every_steps=0"])
    with config.unlocked():  # 8 points of one model and seed: one initialisation per device
        config.grid.compositions = tuple(dict(strategy=s, token_budget=t) for s in ("few_long", "many_short")
                                         for t in (900, 1000, 1100, 1200))
    return config


class Watched:
    """The warm engine, recording which devices each point ran on and how many ran at once."""

    def __init__(self):
        from tokeff.sweep.engine import WarmEngine

        self.engine = WarmEngine()
        self.lanes = self.engine.lanes
        self.lock = threading.Lock()
        self.running = self.most = 0
        self.devices = {}

    def __call__(self, point, config, workdir, eval_config, devices=None):
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        try:
            metrics = self.engine(point, config, workdir, eval_config, devices=devices)
            time.sleep(0.2)  # hold the lane a moment, so that the overlap shows even on 2 cores
            return metrics
        finally:
            with self.lock:
                self.running -= 1
                self.devices[point.run_id] = [d.id for d in devices] if devices else None


def summary(rows):
    keys = ("run_id", "n_examples", "flops_used", "steps", "eval_loss", "accuracy")
    return {r["run_id"]: {k: r[k] for k in keys} | {"loss": r["extra"]["final_train_loss"]} for r in rows}


def lanes(root):
    from tokeff import sweep
    from tokeff.sweep.engine import WarmEngine

    config = tiny_config()
    watched = Watched()
    together = sweep.run_sweep(config, os.path.join(root, "together"), runner=watched, progress=False)
    engine = WarmEngine()

    def one_by_one(*args):  # no `lanes`: the runner runs the points in turn, on the config's mesh
        return engine(*args)

    with config.unlocked():
        config.train.mesh.num_devices = 1
    alone = sweep.run_sweep(config, os.path.join(root, "alone"), runner=one_by_one, progress=False)
    print(json.dumps({"together": summary(together), "alone": summary(alone), "most": watched.most,
                      "devices": watched.devices}))


def host(index, port, root):
    import jax

    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    jax.distributed.initialize(coordinator_address=f"127.0.0.1:{port}", num_processes=2, process_id=index)
    from tokeff import sweep

    watched = Watched()
    rows = sweep.run_sweep(tiny_config(), os.path.join(root, "sweep"), runner=watched, progress=False)
    print(json.dumps({"process": index, "rows": summary(rows), "ran": sorted(watched.devices),
                      "most": watched.most}))


if __name__ == "__main__":
    if sys.argv[1] == "lanes":
        lanes(sys.argv[2])
    else:
        host(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
