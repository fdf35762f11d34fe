"""Training throughput of each backend: BPR interactions per second over one epoch.

Times exactly what ``ddrm.train.fit`` does per epoch — ``start_epoch`` (SGL redraws its two views),
drawing the epoch's BPR triples, then forward + backward + Adam step per batch — and excludes
evaluation. One warm-up batch runs before the clock starts. Default rows: MF (no propagation),
LightGCN with 3 layers, SGL with 3 layers (the paper settings, DESIGN §4), batch 2048.

    python bench/backend_throughput.py --data-dir ../shared/datasets               # full epoch each
    python bench/backend_throughput.py --data-dir ../shared/datasets --quick       # ~3 % of an epoch
    python bench/backend_throughput.py --data-dir ../shared/datasets --threads 2 --json out.json
    python bench/backend_throughput.py --data-dir ../shared/datasets --backends adagcl --batch-size 4096 --fraction 0.05

Throughput depends heavily on threads and on what else runs on the machine (DESIGN §6): pin
``--threads`` and compare numbers from the same machine only.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import time

import torch

from ddrm.config import load_config, parse_override
from ddrm.data import load_prepared
from ddrm.data.sampling import BPRSampler
from ddrm.registry import get_model
from ddrm.train import backend_optimizer, build_backend, select_device

DEFAULT_ROWS = {"mf": {"model.layers": 0}, "lightgcn": {"model.layers": 3}, "sgl": {"model.layers": 3}}
# opt-in rows: standalone models trained on BPR triples (``--backends adagcl``)
MODEL_ROWS = {"adagcl": {"model.name": "adagcl"}}


def measure(backend_name: str, overrides: dict, data, *, batch_size: int, fraction: float, device: torch.device,
            seed: int = 0) -> dict:
    """Train ``fraction`` of one epoch; return interactions/s and timings."""
    backend_key = {} if "model.name" in overrides else {"model.name": backend_name}
    config = load_config(None, {"data.name": data.name, **backend_key, "seed": seed,
                                "train.batch_size": batch_size, **overrides})
    torch.manual_seed(seed)
    if config.final_stage == "model":  # a standalone model on BPR triples (its own update rule, if it has one)
        backend = get_model(config.model.name)(config.model, data.n_users, data.n_items, data.csr("train")).to(device)
        optimizer = torch.optim.Adam(backend.parameters(), lr=config.model.lr, weight_decay=config.model.weight_decay)
    else:
        backend = build_backend(config, data, device)
        optimizer = backend_optimizer(backend, config)  # Adam, or SparseAdam with model.sparse_grad
    # a backend samples by its config, a standalone model by its class (as ddrm.train.fit_model does)
    mode = config.model.sampling if config.final_stage != "model" else backend.bpr_sampling
    sampler = BPRSampler(data.csr("train"), seed=seed, mode=mode)
    custom_step = getattr(backend, "training_step", None)
    generator = torch.Generator().manual_seed(seed)
    n_batches = max(1, math.ceil(fraction * math.ceil(sampler.n_train / batch_size)))

    def step(users, pos, neg) -> float:
        if custom_step is not None:
            return custom_step((users, pos, neg), optimizer).item()
        loss = backend.loss(users, pos, neg)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        return loss.item()

    backend.train()
    backend.start_epoch(0, generator)  # warm-up (not timed)
    step(*next(iter(sampler.batches(batch_size, device))))
    if device.type == "cuda":
        torch.cuda.synchronize()

    start = time.perf_counter()
    backend.start_epoch(1, generator)
    setup = time.perf_counter() - start
    seen, losses = 0, []
    for index, (users, pos, neg) in enumerate(sampler.batches(batch_size, device)):
        if index >= n_batches:
            break
        losses.append(step(users, pos, neg))
        seen += len(users)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    layers = config.model.layers
    return {"backend": backend_name, "overrides": overrides, "layers": layers, "batches": len(losses), "interactions": seen,
            "epoch_fraction": seen / sampler.n_train, "seconds": seconds, "start_epoch_seconds": setup,
            "interactions_per_s": seen / seconds, "ms_per_batch": 1000 * seconds / max(1, len(losses)),
            "est_epoch_seconds": seconds * sampler.n_train / max(1, seen), "mean_loss": sum(losses) / len(losses)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", default="ml-1m_noisy")
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--backends", nargs="+", default=list(DEFAULT_ROWS), choices=sorted({**DEFAULT_ROWS, **MODEL_ROWS}),
                        help="rows to time (default: the three backends; adagcl is opt-in)")
    parser.add_argument("--batch-size", type=int, default=2048)
    parser.add_argument("--fraction", type=float, default=1.0, help="fraction of an epoch to time (default 1)")
    parser.add_argument("--quick", action="store_true", help="time ~3%% of an epoch (a smoke run)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1)")
    parser.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--set", dest="common", action="append", default=[],
                        help="extra override for every backend, e.g. model.pooling=normalized_sum")
    parser.add_argument("--json", help="also write the rows (and the machine settings) here")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    fraction = 0.03 if args.quick else args.fraction
    if not 0 < fraction <= 1:
        parser.error("--fraction must be in (0, 1]")
    device = select_device(args.device)
    data = load_prepared(args.dataset, args.data_dir)
    common = dict(parse_override(o) for o in args.common)
    rows = []
    for name in args.backends:
        overrides = {**{**DEFAULT_ROWS, **MODEL_ROWS}[name], **common}
        row = measure(name, overrides, data, batch_size=args.batch_size, fraction=fraction, device=device)
        rows.append(row)
        print(f"{name}: {row['interactions_per_s']:.0f} interactions/s", file=sys.stderr, flush=True)

    print(f"\n{args.dataset}, {len(data.train)} train interactions, batch {args.batch_size}, "
          f"{torch.get_num_threads()} thread(s), {device}, {fraction:g} epoch timed\n")
    print("| backend | layers | interactions/s | ms/batch | est. s/epoch | start_epoch s |")
    print("|---|---|---|---|---|---|")
    for row in rows:
        print(f"| {row['backend']} | {row['layers']} | {row['interactions_per_s']:,.0f} | "
              f"{row['ms_per_batch']:.1f} | {row['est_epoch_seconds']:.1f} | {row['start_epoch_seconds']:.2f} |")
    if args.json:
        with open(args.json, "w") as handle:
            json.dump({"dataset": args.dataset, "batch_size": args.batch_size, "threads": torch.get_num_threads(),
                       "device": str(device), "torch": torch.__version__, "machine": platform.node(),
                       "epoch_fraction": fraction, "rows": rows}, handle, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
