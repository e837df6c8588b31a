"""The multi-device checks, in processes of their own; spawned by tests/test_multidevice.py.

The device count must be set before JAX starts (XLA_FLAGS=--xla_force_host_platform_device_count=N
in the environment), hence a process of its own. Each run does everything that needs its device
layout in one interpreter (one JAX start, one distributed join) and prints one JSON line.

    worker.py devices ROOT          8 devices: the tiny run on several meshes and a resume onto another
                                    mesh; then four sweep points at once, one device each, and the same one by one
    worker.py host I PORT ROOT      one of two processes x 4 devices (gloo): one training over both
                                    processes, then one sweep whose points they split, then a
                                    sweep into ROOT/users (a user's folder), which both refuse
"""

import json
import os
import shutil
import sys
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)

STEPS = 6
MESHES = {  # name -> (data, fsdp, tensor)
    "1": (1, 1, 1),
    "data8": (8, 1, 1),
    "data2_fsdp4": (2, 4, 1),
    "data2_fsdp2_tensor2": (2, 2, 2),
}
# Sweep points of one model and seed (one initialisation per device), told apart by composition:
# four for the lanes (one device each, of eight), the first two for the two-process split (one
# each). Each lane compiles its own step, so every point more in the lanes costs a compile more.
COMPOSITIONS = tuple(dict(strategy=s, token_budget=t) for s in ("few_long", "many_short") for t in (900, 1100))


# ----------------------------------------------------------------------------- training on meshes

def train_config(data, fsdp, tensor):
    from tokeff.flops import step_training_flops
    from tokeff.models.config import get_preset
    from tokeff.train.defaults import base_config

    c = base_config()
    c.budget.flops = STEPS * step_training_flops(get_preset("tiny"), 8, 64)
    c.mesh.data, c.mesh.fsdp, c.mesh.tensor = data, fsdp, tensor
    c.checkpoint.every_steps = 3
    c.log.progress = False
    return c


def losses(workdir):
    with open(os.path.join(workdir, "metrics.jsonl")) as f:
        return [json.loads(line)["loss"] for line in f]


def meshes(root) -> dict:
    from tokeff.train import train

    out = {}
    for name, mesh in MESHES.items():
        workdir = os.path.join(root, name)
        config = train_config(*mesh)
        config.mesh.num_devices = 1 if name == "1" else 0
        train(config, workdir)
        out[name] = losses(workdir)
    # Preemption onto another mesh: drop the run's last checkpoint and summary (as if it had
    # stopped after step 3), then resume it on a different mesh.
    source = os.path.join(root, "data2_fsdp4")
    resumed = os.path.join(root, "resumed_on_2x2x2")
    shutil.copytree(source, resumed)
    shutil.rmtree(os.path.join(resumed, "checkpoints", str(STEPS)))
    os.remove(os.path.join(resumed, "summary.json"))
    run = train(train_config(*MESHES["data2_fsdp2_tensor2"]), resumed)
    out["resumed_on_2x2x2"] = losses(resumed)
    out["resumed_mesh"] = run.mesh
    return out


# ----------------------------------------------------------------------------- sweeps

def sweep_config(n_points: int):
    from tokeff.train.config import load_config

    config = load_config(os.path.join(ROOT, "configs", "sweep_tiny.py"),
                         ["--config.grid.budgets=(2e9,)", "--config.eval.max_questions=16",
                          "--config.train.checkpoint.every_steps=0"])
    with config.unlocked():
        config.grid.compositions = COMPOSITIONS[:n_points]
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


def lanes(root) -> dict:
    from tokeff import sweep
    from tokeff.sweep.engine import WarmEngine

    config = sweep_config(len(COMPOSITIONS))
    watched = Watched()
    together = sweep.run_sweep(config, os.path.join(root, "together"), runner=watched, progress=False)
    engine = WarmEngine()

    def one_by_one(*args):  # no `lanes`: the runner runs the points in turn, on the config's mesh
        return engine(*args)

    with config.unlocked():
        config.train.mesh.num_devices = 1
    alone = sweep.run_sweep(config, os.path.join(root, "alone"), runner=one_by_one, progress=False)
    return {"together": summary(together), "alone": summary(alone), "most": watched.most,
            "devices": watched.devices}


# ----------------------------------------------------------------------------- entry points

def devices(root):
    print(json.dumps({"meshes": meshes(os.path.join(root, "meshes")), "lanes": lanes(os.path.join(root, "lanes"))}))


def host(index, port, root):
    from tokeff import sweep
    from tokeff.errors import UserError
    from tokeff.train import train

    config = train_config(8, 1, 1)  # joins the processes (gloo) before its first JAX computation
    config.distributed.enabled = True
    config.distributed.coordinator = f"127.0.0.1:{port}"
    config.distributed.num_processes = 2
    config.distributed.process_id = index
    config.distributed.cpu_collectives = "gloo"
    trained = train(config, os.path.join(root, "run"))
    watched = Watched()
    rows = sweep.run_sweep(sweep_config(2), os.path.join(root, "sweep"), runner=watched, progress=False)
    try:  # a folder of the user's (the test wrote notes.txt there): every process must be refused
        sweep.run_sweep(sweep_config(2), os.path.join(root, "users"), runner=watched, progress=False)
        refused = None
    except UserError as e:
        refused = str(e)
    print(json.dumps({"process": index, "refused": refused, "devices": trained.devices, "losses": losses(os.path.join(root, "run")),
                      "flops_used": trained.flops_used, "rows": summary(rows), "ran": sorted(watched.devices),
                      "most": watched.most}))


if __name__ == "__main__":
    if sys.argv[1] == "devices":
        devices(sys.argv[2])
    else:
        host(int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
