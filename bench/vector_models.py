#!/usr/bin/env python
"""Mult-VAE and DiffRec on one prepared dataset: what the sparse encoder and bf16 buy, and what bf16 costs.

    # speed: one training epoch and one validation pass per variant (1 thread, medians of 3 interleaved reps)
    python bench/vector_models.py --data-dir data --dataset yelp-hin_noisy   # JSON: see --json
    # accuracy: each model trained to its end at fp32 and at bf16 on 3 seeds, paired differences
    python bench/vector_models.py --data-dir ../shared/datasets --dataset ml-1m_noisy --accuracy --seeds 0 1 2
    # smoke run on generated data (what CI-like checks run; its timings mean nothing)
    python bench/vector_models.py --quick --generated 300 200 6000
    python bench/vector_models.py --quick --generated 300 200 6000 --accuracy --seeds 0 1 --set train.epochs=2

Speed (default mode). Per model, every variant is built from the same seed (same initial weights) with its own
Adam optimiser and user-batch sampler, exactly as ``ddrm.train.fit_model`` builds it, and each repetition
times, per variant, one training epoch (``--fraction`` of one: every user batch, ``training_step`` as the loop
runs it; one untimed warm-up batch per variant before the first repetition) and then one full validation pass
(``ddrm.evaluation.evaluate`` of the model's scorer, as the loop scores an epoch). Repetitions are interleaved
(the variant order rotates each repetition) and medians are reported; every ratio is formed within this run.

- ``multivae``: the encoder ``dense`` (the code before the sparse encoder: the L2-normalised 0/1 row as a dense
  ``(B, I)`` tensor, input dropout on it, ``(B, I) @ (I, h1)``, likelihood ``-(log_probs * x).sum(1)``; kept
  here only, as :class:`DenseMultiVAE`) vs ``sparse`` (what ships: ``embedding_bag`` over the users' nonzeros),
  each at fp32 and bf16 (``train.precision``; the MLPs after the sparse first layer under bf16 autocast);
  ratios: sparse vs dense at fp32, bf16 vs fp32 on the sparse encoder, and both levers together;
- ``diffrec``: fp32 vs bf16 (the denoiser under bf16 autocast in training and at every reverse step).

Accuracy (``--accuracy``): each model trained to its end by ``ddrm.train.run`` (its config's epochs, patience
and evaluation period, validation Recall@20 chooses the epoch) at fp32 and at bf16 (Mult-VAE also with its dense
encoder at fp32: the code before the sparse encoder, the same computation but for dropout's random draws), for
each ``--seeds`` seed, the order rotating per seed; per seed valid/test Recall@20 and NDCG@20, the paired
differences against fp32 (bf16 - fp32; dense - sparse), their mean ± std, a paired t-test, and the fp32
seed-to-seed std beside them ("within seed noise, paired over the seeds"). Decide on the validation columns
(test is reported beside them, never used to choose). A seed's runs start from the same initial weights.

The models' settings: ``--config-multivae`` / ``--config-diffrec`` (default: the tuned ML-1M configs,
``docs/results/tuned_ml1m/<model>_ml1m/best_config.yaml``), ``data.name`` set to ``--dataset``, then ``--set``
overrides (both models). ``--generated USERS ITEMS PAIRS``: instead of a prepared split, generated interactions
(power-law item popularity, 7:1:2 random split; e.g. ``16239 14108 140172``, Yelp's shape). The JSON records the host
(CPU model, bf16 flags, torch, threads), the dataset's shape and the settings; by default it goes to
``docs/results/benchmarks/vector_models_<dataset>.json`` (``--accuracy``: ``vector_models_accuracy_<dataset>.json``);
``--quick``: 2 repetitions, at most 3 batches per epoch, JSON under ``bench_results/`` unless ``--json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Iterator

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "platform"))  # this checkout's package, whatever ``pip install -e`` points at
sys.path.insert(1, str(Path(__file__).resolve().parent))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from ddrm.baselines.multivae import MultiVAE  # noqa: E402

MODELS = ("multivae", "diffrec")
PRECISIONS = ("fp32", "bf16")
METRICS = ("recall_at_20", "ndcg_at_20")
VARIANTS = {"multivae": [("dense", "fp32"), ("sparse", "fp32"), ("dense", "bf16"), ("sparse", "bf16")],
            "diffrec": [("dense", "fp32"), ("dense", "bf16")]}


class DenseMultiVAE(MultiVAE):
    """Mult-VAE as it was before the sparse encoder (the bench's baseline only): the dense ``(B, I)`` row through
    the whole encoder and the dense likelihood; same parameters, and bf16 autocast as the shipped model."""

    def dense_encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = nn.functional.normalize(x, dim=1)
        x = nn.functional.dropout(x, self.config.dropout, training=self.training)
        with self.autocast(x.device):
            h = self.encoder(x)
        h = h.float()
        return h[:, :self.latent], h[:, self.latent:]

    def loss(self, users: torch.Tensor) -> torch.Tensor:
        x = self.rows(users)
        mu, logvar = self.dense_encode(x)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar)
        log_probs = torch.log_softmax(self.decode(z), dim=1)
        nll = -(log_probs * x).sum(dim=1).mean()
        kl = (-0.5 * (1 + logvar - mu.pow(2) - logvar.exp()).sum(dim=1)).mean()
        beta = self.kl_weight()
        self.anneal_step += 1
        return nll + beta * kl

    @torch.no_grad()
    def scorer(self):
        return lambda users: self.decode(self.dense_encode(self.rows(users))[0])


def variant_name(model: str, encoder: str, precision: str) -> str:
    return f"{encoder} {precision}" if model == "multivae" else precision


def generated(n_users: int, n_items: int, n_pairs: int, seed: int = 0):
    """Interactions with power-law item popularity, a random 7:1:2 split (valid/test users all have train)."""
    from ddrm.data.prepared import InteractionData

    rng = np.random.default_rng(seed)
    popularity = 1.0 / np.arange(1, n_items + 1) ** 0.8
    popularity /= popularity.sum()
    users = rng.integers(0, n_users, size=2 * n_pairs)
    items = rng.choice(n_items, size=2 * n_pairs, p=popularity)
    keys = np.unique(users.astype(np.int64) * n_items + items)
    keys = rng.permutation(keys)[:n_pairs]
    pairs = np.stack([keys // n_items, keys % n_items], axis=1)
    slot = rng.random(len(pairs))
    train, valid, test = pairs[slot < 0.7], pairs[(slot >= 0.7) & (slot < 0.8)], pairs[slot >= 0.8]
    valid, test = valid[np.isin(valid[:, 0], train[:, 0])], test[np.isin(test[:, 0], train[:, 0])]
    return InteractionData(name="generated", path=Path("."), n_users=n_users, n_items=n_items,
                           train=train, valid=valid, test=test)


def model_config(name: str, dataset: str, path: str | None, overrides: list[str]):
    """The config of ``name``: its file (default: the tuned ML-1M one), ``data.name`` = ``dataset``, overrides."""
    from ddrm.config import load_config, parse_override

    path = path or REPO / "docs" / "results" / "tuned_ml1m" / f"{name}_ml1m" / "best_config.yaml"
    values = dict(parse_override(item) for item in overrides)
    return load_config(path, {"data.name": dataset, **values, "model.name": name})


def settings(config) -> dict:
    return {"model": config.model.settings(), "train": {k: getattr(config.train, k) for k in
                                                        ("epochs", "patience", "eval_every", "eval_batch_size")},
            "seed": config.seed}


def build(name: str, config, data, encoder: str, precision: str, device: torch.device):
    """The model and optimiser as ``ddrm.train.fit_model`` builds them (``encoder`` dense: :class:`DenseMultiVAE`)."""
    from ddrm.registry import get_model

    torch.manual_seed(config.seed)
    cls = DenseMultiVAE if encoder == "dense" and name == "multivae" else get_model(name)
    model = cls(config.model, data.n_users, data.n_items, data.csr("train")).to(device)
    model.precision = precision
    optimizer = torch.optim.Adam(model.parameters(), lr=config.model.lr, weight_decay=config.model.weight_decay)
    return model, optimizer


def speed(name: str, config, data, reps: int, fraction: float, max_batches: int | None,
          device: torch.device) -> dict:
    """Training-epoch and validation-pass seconds of each variant of ``name``, interleaved; medians and ratios."""
    from ddrm.data.sampling import UserBatchSampler
    from ddrm.evaluation import evaluate

    batch_size = config.model.batch_size
    variants = VARIANTS[name]
    built = {}
    for encoder, precision in variants:
        model, optimizer = build(name, config, data, encoder, precision, device)
        sampler = UserBatchSampler(data.csr("train"), seed=config.seed)
        model.train()
        model.training_step(next(sampler.batches(batch_size, device)), optimizer)  # warm-up, not timed
        built[variant_name(name, encoder, precision)] = (model, optimizer, sampler)
    n_batches = max(1, math.ceil(fraction * math.ceil(next(iter(built.values()))[2].n_train / batch_size)))
    if max_batches:
        n_batches = min(n_batches, max_batches)
    rows = {key: {"train_s": [], "eval_s": [], "loss": [], "valid_recall_at_20": []} for key in built}
    keys = list(built)
    for rep in range(reps):
        for key in keys[rep % len(keys):] + keys[:rep % len(keys)]:
            model, optimizer, sampler = built[key]
            model.train()
            total, start = 0.0, time.perf_counter()
            for index, batch in enumerate(sampler.batches(batch_size, device)):
                if index >= n_batches:
                    break
                total += float(model.training_step(batch, optimizer))
            rows[key]["train_s"].append(time.perf_counter() - start)
            rows[key]["loss"].append(total / n_batches)
            model.eval()
            start = time.perf_counter()
            valid = evaluate(model.scorer(), data, "valid", batch_size=config.train.eval_batch_size, device=device)
            rows[key]["eval_s"].append(time.perf_counter() - start)
            rows[key]["valid_recall_at_20"].append(valid["recall_at_20"])
        print(f"  {name}: repetition {rep + 1}/{reps} done", file=sys.stderr, flush=True)
    for row in rows.values():
        row["median_train_s"] = statistics.median(row["train_s"])
        row["median_eval_s"] = statistics.median(row["eval_s"])
    n_train = next(iter(built.values()))[2].n_train
    share = min(1.0, n_batches * batch_size / n_train)
    for row in rows.values():
        row["est_epoch_s"] = row["median_train_s"] / share

    def ratio(slow: str, fast: str) -> dict:
        return {"train": rows[slow]["median_train_s"] / rows[fast]["median_train_s"],
                "eval": rows[slow]["median_eval_s"] / rows[fast]["median_eval_s"]}

    if name == "multivae":
        ratios = {"sparse_vs_dense_fp32": ratio("dense fp32", "sparse fp32"),
                  "sparse_vs_dense_bf16": ratio("dense bf16", "sparse bf16"),
                  "bf16_vs_fp32_sparse": ratio("sparse fp32", "sparse bf16"),
                  "bf16_vs_fp32_dense": ratio("dense fp32", "dense bf16"),
                  "both_vs_dense_fp32": ratio("dense fp32", "sparse bf16")}
    else:
        ratios = {"bf16_vs_fp32": ratio("fp32", "bf16")}
    return {"variants": rows, "speedup": ratios, "batches": n_batches, "batch_size": batch_size,
            "epoch_fraction": share, "users_trained": n_train, "settings": settings(config)}


@contextlib.contextmanager
def dense_multivae() -> Iterator[None]:
    """``ddrm.train`` builds :class:`DenseMultiVAE` for ``multivae`` (the code before the sparse encoder)."""
    import ddrm.train as train_module

    real = train_module.get_model
    train_module.get_model = lambda model: DenseMultiVAE if model == "multivae" else real(model)
    try:
        yield
    finally:
        train_module.get_model = real


def arms(name: str) -> tuple[str, ...]:
    """What ``--accuracy`` trains per seed: fp32 and bf16 (what ships), and for Mult-VAE the dense encoder at fp32
    (the code before the sparse encoder: the same computation but for dropout's random draws)."""
    return ("fp32", "bf16", "dense_fp32") if name == "multivae" else ("fp32", "bf16")


def accuracy(name: str, config, data, seeds: list[int]) -> dict:
    """Each seed trained to its end per arm (``ddrm.train.run``); per-seed metrics, paired differences against fp32
    (bf16 - fp32; for Mult-VAE also dense fp32 - sparse fp32). The arms' order rotates with the seed."""
    from scipy import stats as scipy_stats

    from ddrm.stats import seed_stats
    from ddrm.train import run

    order = arms(name)
    runs: dict[str, dict[int, dict]] = {arm: {} for arm in order}
    for index, seed in enumerate(seeds):
        for arm in order[index % len(order):] + order[:index % len(order)]:
            precision = arm.removeprefix("dense_")
            start = time.perf_counter()
            with (dense_multivae() if arm.startswith("dense_") else contextlib.nullcontext()):
                result = run(config.replace({"seed": seed, "train.precision": precision}), data=data, progress=False)
            runs[arm][seed] = {
                **{f"valid_{m}": result.valid[m] for m in METRICS}, **{f"test_{m}": result.test[m] for m in METRICS},
                "best_epoch": result.backend.best_epoch, "epochs": result.backend.epochs_run,
                "stop_reason": result.backend.stop_reason, "wall_s": time.perf_counter() - start,
                "precision_stages": result.info["precision_stages"]}
            print(f"  {name} seed {seed} {arm}: valid R@20 {result.valid['recall_at_20']:.4f}, "
                  f"test R@20 {result.test['recall_at_20']:.4f} ({runs[arm][seed]['epochs']} epochs)",
                  file=sys.stderr, flush=True)
    paired: dict[str, dict] = {}
    for arm in order[1:]:
        for key in [f"{split}_{m}" for split in ("valid", "test") for m in METRICS]:
            base = [runs["fp32"][s][key] for s in seeds]
            other = [runs[arm][s][key] for s in seeds]
            diffs = [b - f for f, b in zip(base, other)]
            test = scipy_stats.ttest_rel(other, base) if len(seeds) > 1 and any(diffs) else None
            paired.setdefault(f"{arm}_minus_fp32", {})[key] = {
                "fp32": seed_stats(base), arm: seed_stats(other), "diff": seed_stats(diffs),
                "paired_t_p": None if test is None or math.isnan(test.pvalue) else float(test.pvalue)}
    return {"seeds": seeds, "arms": list(order), "runs": {a: {str(s): r for s, r in v.items()} for a, v in runs.items()},
            "paired": paired, "settings": settings(config)}


def summary_lines(results: dict) -> list[str]:
    lines = []
    for name, row in results.get("speed", {}).items():
        lines += [f"\n{name} ({row['batches']} batches of {row['batch_size']} users = {row['epoch_fraction']:.2f} "
                  f"of an epoch; valid pass over all validation users)",
                  "| variant | training epoch (est.) | validation pass | mean loss (last rep) |", "|---|---|---|---|"]
        for key, v in row["variants"].items():
            lines.append(f"| {key} | {v['est_epoch_s']:.2f} s | {v['median_eval_s']:.2f} s | {v['loss'][-1]:.4g} |")
        lines += ["| speed-up | training | validation |", "|---|---|---|"]
        lines += [f"| {key} | {r['train']:.2f}x | {r['eval']:.2f}x |" for key, r in row["speedup"].items()]
    def fmt(stats: dict) -> str:
        return f"{stats['mean']:.4f}" + (f" ± {stats['std']:.4f}" if stats["std"] is not None else "")

    for name, row in results.get("accuracy", {}).items():
        for comparison, metrics in row["paired"].items():
            arm = comparison.removesuffix("_minus_fp32")
            lines += [f"\n{name}: {arm} - fp32, paired over seeds {row['seeds']}",
                      f"| metric | fp32 mean ± std | {arm} mean ± std | {arm} - fp32 (per seed) | mean diff | paired p |",
                      "|---|---|---|---|---|---|"]
            for key, v in metrics.items():
                per_seed = ", ".join(f"{d:+.4f}" for d in v["diff"]["values"])
                p = "–" if v["paired_t_p"] is None else f"{v['paired_t_p']:.2f}"
                lines.append(f"| {key} | {fmt(v['fp32'])} | {fmt(v[arm])} | {per_seed} | {v['diff']['mean']:+.4f} | {p} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", default=os.environ.get("DDRM_DATA_DIR", "../shared/datasets"))
    parser.add_argument("--dataset", default="ml-1m_noisy")
    parser.add_argument("--generated", nargs=3, type=int, metavar=("USERS", "ITEMS", "PAIRS"),
                        help="generated interactions instead of --data-dir/--dataset")
    parser.add_argument("--models", nargs="+", default=list(MODELS), choices=MODELS)
    parser.add_argument("--config-multivae", help="config file (default: the tuned ML-1M one)")
    parser.add_argument("--config-diffrec", help="config file (default: the tuned ML-1M one)")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="override (both models)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--reps", type=int, help="speed: repetitions per variant (default 3, --quick 2)")
    parser.add_argument("--fraction", type=float, default=1.0, help="speed: share of an epoch timed (default 1)")
    parser.add_argument("--accuracy", action="store_true", help="train to the end at fp32 and bf16 per seed instead")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], help="--accuracy: seeds (default 0 1 2)")
    parser.add_argument("--quick", action="store_true", help="2 repetitions, at most 3 batches per epoch")
    parser.add_argument("--json", help="output (default: the benchmarks folder of docs/results, "
                                       "vector_models[_accuracy]_<dataset>.json; --quick: bench_results/)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    device = torch.device("cpu")

    import warnings

    import ddrm
    from ddrm.data import load_prepared
    from ddrm.precision import PrecisionWarning
    from precision import host_facts, host_kind  # bench/precision.py

    warnings.simplefilter("ignore", PrecisionWarning)  # whether the host has native bf16 is in the JSON
    if args.generated:
        data = generated(*args.generated)
        dataset, data_dir = "generated_{}x{}x{}".format(*args.generated), None
    else:
        data = load_prepared(args.dataset, args.data_dir)
        dataset, data_dir = args.dataset, os.path.relpath(args.data_dir, REPO)
    overrides = list(args.set) + [f"train.threads={args.threads}"]
    configs = {name: model_config(name, data.name, getattr(args, f"config_{name}"), overrides) for name in args.models}
    results: dict = {"host": host_facts(), "host_kind": host_kind(), "package": os.path.relpath(Path(ddrm.__file__).parent, REPO),
                     "command": "python bench/vector_models.py " + " ".join(argv if argv is not None else sys.argv[1:]),
                     "dataset": dataset, "data_dir": data_dir, "quick": args.quick,
                     "shape": {"users": data.n_users, "items": data.n_items, "train": len(data.train),
                               "valid": len(data.valid), "test": len(data.test)}}
    start = time.perf_counter()
    if args.accuracy:
        results["accuracy"] = {}
        for name, config in configs.items():
            results["accuracy"][name] = accuracy(name, config, data, args.seeds)
    else:
        reps = args.reps or (2 if args.quick else 3)
        results.update(reps=reps, speed={})
        for name, config in configs.items():
            results["speed"][name] = speed(name, config, data, reps, args.fraction, 3 if args.quick else None, device)
    results["wall_s"] = time.perf_counter() - start
    results["table"] = summary_lines(results)
    host = results["host"]
    print(f"\n{host['cpu_model']}, bf16 flags {host['bf16_flags'] or 'none'}, torch {host['torch']}, "
          f"{args.threads} thread(s), {dataset} ({data.n_users} users x {data.n_items} items, {len(data.train)} train)")
    print("\n".join(results["table"]))
    folder = Path("bench_results") if args.quick else Path("docs/results/benchmarks")
    default = folder / f"vector_models{'_accuracy' if args.accuracy else ''}_{dataset}.json"
    target = Path(args.json) if args.json else REPO / default
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(results, indent=2, default=str))
    print(f"\nwrote {os.path.relpath(target, Path.cwd())}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
