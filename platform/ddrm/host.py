"""What a run's numbers depend on besides code, config and seed: the host's CPU and the torch build.

The same code and seed give bit-identical results on one host, but fp32 kernels round differently across CPU
models (torch picks its vector kernels by ``cpu_capability``), and a long training run can carry a last-bit
difference into a different trajectory. Every trial run is tagged with :func:`host_tags` (and ``runs.csv``
carries them), so a number that does not reproduce elsewhere says where it was measured.
"""

from __future__ import annotations

import functools
import platform

HOST_TAGS = ("cpu_model", "cpu_capability", "torch_version")  # the keys of host_tags(): tags, runs.csv columns
# where a trial ran (tags its trainable reports; runs.csv columns): the torch device (cpu, cuda:0) and the CPU and
# GPU shares Ray assigned it (1, 0.125: eight trials on one GPU)
PLACEMENT_COLUMNS = ("device", "trial_cpus", "trial_gpus")


@functools.lru_cache(maxsize=1)
def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``; ``platform.processor()`` where that cannot be read)."""
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def cpu_capability() -> str:
    """The vector instruction set torch's CPU kernels were dispatched for (e.g. ``AVX512``, ``AVX2``)."""
    import torch  # here, not at the top: the report reads HOST_TAGS without loading torch

    try:
        return str(torch.backends.cpu.get_cpu_capability())
    except (AttributeError, RuntimeError):  # very old torch builds
        return "unknown"


def host_tags() -> dict[str, str]:
    """:data:`HOST_TAGS` of this process's host, as MLflow tag values."""
    import torch

    return dict(zip(HOST_TAGS, (cpu_model(), cpu_capability(), torch.__version__)))
