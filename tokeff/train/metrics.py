"""Per-step metrics: metrics.jsonl, a tqdm bar, optional TensorBoard events, MFU.

The loop hands over step t's metrics (device arrays) right after dispatching step t+1, so
reading them (`jax.device_get`) waits only for a step that is already finished or about to
be: the host never makes the device idle. Step time is the gap between two consecutive
step completions, which in steady state is the device time per step.
"""

from __future__ import annotations

import json
import os
import time

import jax

from tokeff.io import write_text


class MetricsLog:
    """Writes one JSON line per step (process 0 only); appends across resumes."""

    def __init__(self, workdir: str, *, total_steps: int, first_step: int, peak_flops: float | None,
                 n_devices: int, progress: bool, tensorboard: bool, writer: bool | None = None):
        self.primary = jax.process_index() == 0 if writer is None else writer
        self.peak = peak_flops * n_devices if peak_flops else None
        self._last_done = time.perf_counter()
        self._file = self._bar = self._tb = None
        if not self.primary:
            return
        self._file = open(os.path.join(workdir, "metrics.jsonl"), "a", buffering=1)
        if progress:
            from tqdm import tqdm

            self._bar = tqdm(total=total_steps, initial=first_step, unit="step", dynamic_ncols=True)
        if tensorboard:
            from tensorboardX import SummaryWriter

            self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def record(self, step: int, device_metrics: dict, host: dict) -> dict:
        """Pull one step's metrics from the device, time it, and write it out."""
        values = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        now = time.perf_counter()
        step_time, self._last_done = now - self._last_done, now
        row = {"step": step, **values, **host, "step_time": step_time,
               "flops_per_second": host["step_flops"] / step_time if step_time > 0 else None}
        if self.peak:
            row["mfu"] = row["flops_per_second"] / self.peak
        if self.primary:
            self._file.write(json.dumps(row) + "\n")
            if self._bar is not None:
                self._bar.update(1)
                self._bar.set_postfix(loss=f"{row['loss']:.4f}", refresh=False)
            if self._tb is not None:
                for key, value in row.items():
                    if key != "step" and isinstance(value, (int, float)):
                        self._tb.add_scalar(f"train/{key}", value, step)
        return row

    def restart_clock(self) -> None:
        """Exclude pauses (compilation, checkpoint waits) from the next step time."""
        self._last_done = time.perf_counter()

    def close(self) -> None:
        for handle in (self._bar, self._tb, self._file):
            if handle is not None:
                handle.close()


def truncate_metrics(workdir: str, last_step: int, *, writer: bool | None = None) -> None:
    """Drop metric lines past `last_step` (written before a crash, recomputed after resume)."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not (jax.process_index() == 0 if writer is None else writer) or not os.path.exists(path):
        return
    keep = []
    with open(path) as f:
        for line in f:
            try:
                if json.loads(line)["step"] <= last_step:
                    keep.append(line)
            except (ValueError, KeyError):  # a line cut short by a kill
                continue
    write_text(path, "".join(keep))
