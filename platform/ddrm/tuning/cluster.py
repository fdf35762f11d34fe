"""Where a study's trials run: a local Ray with pinned CPUs, or a cluster joined under ``ray job submit``.

:func:`init_ray` starts or joins Ray; :func:`fit_resources` shrinks a trial's request to what a local Ray has,
and on a cluster :func:`check_cluster_fits` refuses (one line) a request no node, present or addable by an
autoscaler, can hold — otherwise Tune would wait forever.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import yaml

from .spec import Resources


def init_ray(num_cpus: int | None = None) -> None:
    """Join a running cluster when ``RAY_ADDRESS`` is set, else start a local Ray with pinned CPUs.

    The local case passes ``address="local"``: a bare ``ray.init()`` would instead join whatever cluster
    ``<ray temp dir>/ray_current_cluster`` names (the last ``ray start`` or test cluster on this machine,
    alive or long dead) and then refuse ``num_cpus``.
    """
    import ray

    if ray.is_initialized():
        return
    if os.environ.get("RAY_ADDRESS"):
        ray.init(log_to_driver=True)
    else:
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count() or 1, include_dashboard=False,
                 log_to_driver=True)


def fit_resources(resources: Resources) -> Resources:
    """Per-trial resources that a *local* Ray can schedule.

    A trial asking for more CPUs (or GPUs) than the local Ray has would stay pending forever, so on a local
    Ray the request is shrunk to what exists (with a notice); on a cluster (``RAY_ADDRESS`` set) it is kept,
    since nodes may join, but must fit some node there is or that an autoscaler can add
    (:func:`check_cluster_fits`). Returns ``resources`` unchanged when Ray is not initialised.
    """
    import ray

    if not ray.is_initialized():
        return resources
    if os.environ.get("RAY_ADDRESS"):
        check_cluster_fits(resources)
        return resources
    total = ray.cluster_resources()
    cpu = min(resources.cpu, float(total.get("CPU", resources.cpu)))
    gpu = min(resources.gpu, float(total.get("GPU", 0.0)))
    if (cpu, gpu) != (resources.cpu, resources.gpu):
        print(f"resources: the spec asks for cpu={resources.cpu:g}, gpu={resources.gpu:g} per trial; this local Ray "
              f"has CPU={total.get('CPU', 0):g}, GPU={total.get('GPU', 0):g}, so each trial gets cpu={cpu:g}, "
              f"gpu={gpu:g}", flush=True)
    return replace(resources, cpu=cpu, gpu=gpu)


WAIT_ENV = "DDRM_WAIT_FOR_RESOURCES"  # "1": start a study whose trials fit no node yet (nodes will be added by hand)
BOOTSTRAP_CONFIG = "~/ray_bootstrap_config.yaml"  # where `ray up` leaves the cluster config on the head


def _autoscaler_node_types() -> list[dict[str, float] | None]:
    """Resources of each node type an autoscaler may add (``None``: a type whose resources are not stated).

    From the cluster config in the GCS (autoscaler v2, KubeRay), else from the cluster launcher's
    ``~/ray_bootstrap_config.yaml`` on this node (``ray up``; a job's driver runs on the head). Empty when
    no autoscaler is configured.
    """
    import ray._private.state

    try:
        config = ray._private.state.state.get_cluster_config()
    except Exception:  # an older GCS without the key, or no GCS access
        config = None
    if config is not None and config.node_group_configs:
        return [dict(g.resources) or None for g in config.node_group_configs if g.max_count != 0]
    path = Path(BOOTSTRAP_CONFIG).expanduser()
    if not path.is_file():
        return []
    try:
        launcher = yaml.safe_load(path.read_text()) or {}
    except (OSError, yaml.YAMLError):
        return []
    head = launcher.get("head_node_type")
    return [dict(t.get("resources") or {}) or None for name, t in (launcher.get("available_node_types") or {}).items()
            if name != head and t.get("max_workers", launcher.get("max_workers", 0))]


def check_cluster_fits(resources: Resources) -> None:
    """On a cluster: one :class:`ConfigError` line when no alive node, and no node type an autoscaler may add,
    has ``resources`` (e.g. GPUs asked for on a CPU-only cluster) — otherwise Tune would wait forever.

    ``DDRM_WAIT_FOR_RESOURCES=1`` skips the check (nodes to be added by hand with ``ray start --address``).
    """
    import ray

    from ..errors import ConfigError

    if os.environ.get(WAIT_ENV) == "1":
        return
    need = {"CPU": resources.cpu, "GPU": resources.gpu}

    def fits(have: dict[str, float] | None) -> bool:
        return have is None or all(float(have.get(k, 0.0)) >= v for k, v in need.items() if v > 0)

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if any(fits(n) for n in nodes):
        return
    types = _autoscaler_node_types()
    if any(fits(t) for t in types):
        print(f"resources: no node has cpu={resources.cpu:g}, gpu={resources.gpu:g} yet; trials wait for the "
              f"autoscaler to add one", flush=True)
        return
    have = ", ".join(sorted({f"CPU {n.get('CPU', 0):g} GPU {n.get('GPU', 0):g}" for n in nodes})) or "none"
    raise ConfigError(
        f"each trial asks for cpu={resources.cpu:g}, gpu={resources.gpu:g}, but no node of the Ray cluster at "
        f"{os.environ.get('RAY_ADDRESS')} has that (nodes: {have}) and no autoscaler is configured to add one; "
        f"lower resources (--cpus-per-trial / --gpus-per-trial), add such a node, or set {WAIT_ENV}=1 to wait for "
        f"one")


