"""Train the backends several trials share once, before the trials start (into the study's backend cache).

A backend that trials load instead of training makes their per-epoch curves start at DDRM and keeps two
trials from training the same backend side by side. With Ray up, each backend is a Ray task holding a trial's
CPU share, so several train in parallel on the study's CPUs.
"""

from __future__ import annotations

from typing import Any

from ..config import Config
from ..data.fetch import ensure_dataset
from .plan import StudyContext


def pretrain_backends(configs: list[Config], ctx: StudyContext, threads: int | None = None,
                      min_uses: int = 1, evaluate_test: bool = True, device: str | None = None,
                      gpus: float = 0.0) -> int:
    """Train each distinct backend among ``configs`` once (into the shared cache); returns how many were new.

    Skipped: standalone models (they train no backend), reference checkpoints, backends already cached, and
    backends fewer than ``min_uses`` of ``configs`` need (an ablation passes 2: a backend only one trial uses
    is trained inside that trial, in parallel with the others, and reports its own per-epoch curve).
    ``threads``: torch threads per training (a trial's CPU share). With Ray up and several backends to
    train, each is a Ray task holding ``threads`` CPUs, so they run side by side on the study's CPUs.
    ``evaluate_test``: false for a search (its backends are not scored on test either; a later run that needs
    test scores the cached backend then, :func:`ddrm.train.fit_backend`). ``device``: where they train (a study's
    ``--device``, :func:`ddrm.train.select_device`; None: the CPU), each Ray task then holding ``gpus`` of a GPU
    (the trials' share). The cache key has no device: a backend trained on a GPU serves CPU trials and back.
    """
    from .. import cache
    from .. import train as training

    datasets: dict[Any, Any] = {}  # DataConfig -> its loaded split: one load per distinct split, not per trial
    first: dict[str, Config] = {}
    uses: dict[str, int] = {}
    for config in configs:
        ensure_dataset(config.data.name, ctx.data_dir)  # built here once, not raced by the trials
        if config.final_stage == "model" or config.model.checkpoint:
            continue
        if config.data not in datasets:
            datasets[config.data] = training.load_dataset(config, ctx.data_dir)
        key = training.backend_cache_key(config, datasets[config.data])
        first.setdefault(key, config)
        uses[key] = uses.get(key, 0) + 1
    todo = [c for k, c in first.items() if uses[k] >= min_uses and not cache.has_entry(k, ctx.cache_dir)]
    if todo:
        print(f"pretraining {len(todo)} backend(s) shared by several trials before the trials start", flush=True)
    trained = done = 0

    def finished(config: Config, message: str, ok: bool) -> None:
        nonlocal trained, done
        trained, done = trained + ok, done + 1
        print(f"{'pretrained' if ok else 'warning: pretraining'} backend {config.model.name} seed "
              f"{config.seed}{'' if ok else ' failed'} ({done}/{len(todo)}): {message}", flush=True)

    if len(todo) > 1 and _ray_up():
        import ray

        task = ray.remote(num_cpus=max(1, threads or 1), num_gpus=gpus if device else 0.0,  # on the CPU: none
                          max_retries=0)(_pretrain_one)
        pending = {task.remote(c, str(ctx.data_dir), str(ctx.cache_dir), threads, None, evaluate_test, device): c
                   for c in todo}
        while pending:  # report each backend as it finishes, not all at the end
            (ready,), _ = ray.wait(list(pending), num_returns=1)
            finished(pending.pop(ready), *ray.get(ready))
    else:
        for config in todo:
            finished(config, *_pretrain_one(config, str(ctx.data_dir), str(ctx.cache_dir), threads,
                                            datasets[config.data], evaluate_test, device))
    return trained


def _ray_up() -> bool:
    import ray

    return ray.is_initialized()


def _pretrain_one(config: Config, data_dir: str, cache_dir: str, threads: int | None,
                  data: Any = None, evaluate_test: bool = True, device: str | None = None) -> tuple[str, bool]:
    """Train one backend into the cache (a Ray task or in the driver); ``(message, trained)``."""
    import torch

    from .. import train as training
    from .progress import evaluation_printer

    previous_threads = torch.get_num_threads()
    if threads:
        torch.set_num_threads(threads)
    try:
        data = data if data is not None else training.load_dataset(config, data_dir)
        shown = evaluation_printer(f"pretraining-{config.model.name}-seed{config.seed}")  # a line per evaluation
        where = training.select_device(device) if device else torch.device("cpu")
        _, result = training.fit_backend(config, data, where, callback=shown, progress=False,
                                         cache_dir=cache_dir, evaluate_test=evaluate_test)
    except training.TrainingDiverged as exc:  # the trials that need it will fail on their own
        return str(exc), False
    finally:
        torch.set_num_threads(previous_threads)
    return (f"valid recall_at_20 {result.valid.get('recall_at_20', float('nan')):.4f} ({result.seconds:.0f}s)",
            not result.from_cache)


