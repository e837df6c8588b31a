"""Facts about devices, written once: vendor peak FLOP/s (for MFU and cost estimates), the XLA
options tokeff compiles with per platform, and splitting the host CPU into several XLA devices
so independent NUTS chains run side by side.

Compiler options (`compiler_options`, `backend_jit`): on CPU, jaxlib 0.10 hands dots,
reductions and elementwise fusions to YNNPACK. A YNNPACK fusion that absorbs an exp into a
reduction (the softmax sums of attention and of the loss) ran about 6x slower than XLA's own
loop (0.39 s against 0.07 s per loss chunk of 1024 x 49k on 2 cores), so elementwise work stays
with XLA. Plain reductions go to YNNPACK: a sum of squares over 135M parameters (the step's
gradient and parameter norms) takes 24 ms there against 170 ms in XLA's loop, and the 4 x 512
train step ran 4% faster (docs/speed.md). Other platforms get no options.

XLA runs a small computation (a NUTS step on a few hundred points) on one thread, so chains run one
after another on a single CPU device. With one device per chain, numpyro runs all chains in one
`pmap` (one compilation); the OS spreads the threads over the cores. Measured on 2 cores, 4 chains x
2000 steps on 250 Chinchilla points: 9 s with 4 devices against 24 s on one, compilation included.
Must run before JAX executes anything; afterwards, or when XLA_FLAGS already sets a device count,
it does nothing.

Host memory after compiling (`release_host_memory`): XLA's compiler frees its working memory when it
is done, but glibc keeps the freed pages in its heap, and the step's own buffers (large, so mapped
afresh) do not reuse them. Handing them back to the OS between compiling and running the train step
lowered the peak RSS of the SmolLM2-135M step at 4 x 128 tokens from 3.42 to 3.13 GiB (docs/speed.md).
"""

from __future__ import annotations

import functools
import os
from typing import Any, Callable

# XLA CPU: YNNPACK for dots and reductions, not for elementwise fusions (module doc).
CPU_COMPILER_OPTIONS = {"xla_cpu_experimental_ynn_fusion_type": "LIBRARY_FUSION_TYPE_DOT,LIBRARY_FUSION_TYPE_REDUCE"}

# Dense peak FLOP/s per chip by compute dtype (vendor datasheets, no sparsity). Keys are
# substrings of `jax.Device.device_kind`.
PEAK_FLOPS = {
    ("TPU v4", "bfloat16"): 275e12,
    ("TPU v5 lite", "bfloat16"): 197e12,
    ("TPU v5e", "bfloat16"): 197e12,
    ("TPU v5p", "bfloat16"): 459e12,
    ("TPU v5", "bfloat16"): 459e12,
    ("TPU v6 lite", "bfloat16"): 918e12,
    ("TPU v6e", "bfloat16"): 918e12,
    ("H100", "bfloat16"): 989e12,
    ("H100", "float32"): 67e12,
    ("H200", "bfloat16"): 989e12,
    ("H200", "float32"): 67e12,
    ("A100", "bfloat16"): 312e12,
    ("A100", "float32"): 19.5e12,
    ("L4", "bfloat16"): 121e12,
}
# Memory per chip in GiB (vendor datasheets; the A100 as the 40 GB part, the lesser of two):
# the memory plan's limit when it is made away from the device (tokeff.train.memory).
DEVICE_MEMORY_GIB = {"TPU v4": 32, "TPU v5e": 16, "TPU v5p": 95, "TPU v6e": 32, "A100": 40, "H100": 80,
                     "H200": 141, "L4": 24}
# The short names cost estimates use (`experiments/estimate_cost.py --device`).
DEVICE_NAMES = {"v4": "TPU v4", "v5e": "TPU v5e", "v5p": "TPU v5p", "v6e": "TPU v6e", "a100": "A100",
                "h100": "H100", "h200": "H200", "l4": "L4"}


def peak_flops(device_kind: str, dtype: str = "bfloat16") -> float | None:
    """Peak FLOP/s of one chip whose device_kind (or short name) is given, or None if unknown."""
    kind = DEVICE_NAMES.get(device_kind, device_kind)
    matches = [(name, peak) for (name, d), peak in PEAK_FLOPS.items() if d == dtype and name in kind]
    return max(matches, key=lambda m: len(m[0]))[1] if matches else None


def device_peak_flops(device, dtype: str) -> float | None:
    """Peak FLOP/s of one `jax.Device` for `dtype` compute, or None when unknown (e.g. CPUs)."""
    return peak_flops(device.device_kind, dtype)


def split_cpu_for_chains(chains: int, max_devices: int = 64) -> int | None:
    """Ask JAX for max(chains, cores) CPU devices (at most `max_devices`); returns the count set,
    or None when it is too late (JAX already running) or XLA_FLAGS decides."""
    if "xla_force_host_platform_device_count" in os.environ.get("XLA_FLAGS", ""):
        return None
    import jax

    count = max(1, min(max(chains, os.cpu_count() or 1), max_devices))
    try:
        jax.config.update("jax_num_cpu_devices", count)
    except RuntimeError:  # backends already initialised: keep what exists
        return None
    return count


def release_host_memory() -> bool:
    """Return the host heap's free pages to the OS (glibc `malloc_trim`); False where there is no
    glibc (macOS, musl), where it does nothing."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        libc.malloc_trim(0)
    except (OSError, AttributeError):
        return False
    return True


@functools.cache
def compiler_options(platform: str) -> dict[str, str]:
    """The XLA compiler options for jitted model code on `platform` ("cpu", "gpu", "tpu"): the
    CPU options above where this jaxlib knows them (checked once by compiling a tiny
    function), else none."""
    if platform != "cpu":
        return {}
    import jax
    import jax.numpy as jnp

    try:
        jax.jit(lambda x: jnp.sum(jnp.exp(x @ x)), compiler_options=CPU_COMPILER_OPTIONS).lower(
            jax.ShapeDtypeStruct((8, 8), jnp.float32)).compile()
    except Exception:  # an older or newer jaxlib without the option: its defaults then
        return {}
    return dict(CPU_COMPILER_OPTIONS)


def backend_jit(fun: Callable | None = None, **jit_kwargs: Any) -> Callable:
    """`jax.jit` with `compiler_options` of the default backend, chosen at the first call and
    not at import (asking for the backend at import would initialise it before
    `jax.distributed.initialize` could run). Usable as `@backend_jit(static_argnames=...)`."""
    if fun is None:
        return functools.partial(backend_jit, **jit_kwargs)
    jitted: dict[str, Callable] = {}

    @functools.wraps(fun)
    def call(*args, **kwargs):
        import jax

        backend = jax.default_backend()
        if backend not in jitted:
            jitted[backend] = jax.jit(fun, compiler_options=compiler_options(backend) or None, **jit_kwargs)
        return jitted[backend](*args, **kwargs)

    return call
