"""The terms of a backend's training loss over the first batches of training, printed every few batches.

Shows which term moves when a backend does not learn: for SGL, the BPR term against the contrastive
(InfoNCE) term; for the other backends, the BPR term alone. Trains exactly like ``ddrm.train.fit``
(same sampler, ``start_epoch`` hook, Adam on the summed loss), without evaluation.

    python bench/loss_terms.py --data-dir ../shared/datasets --set model.name=sgl
    python bench/loss_terms.py --data-dir ../shared/datasets --set model.name=sgl --set model.pooling=mean

Output: one line per ``--every`` batches: batch index, BPR term, extra term (SGL's InfoNCE sum before its
weight ``model.ssl_reg``; 0 for backends without one), seconds so far.
"""

from __future__ import annotations

import argparse
import time

import torch

from ddrm.config import load_config, parse_override
from ddrm.data import load_prepared
from ddrm.data.sampling import BPRSampler
from ddrm.train import build_backend


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--dataset", default="ml-1m_noisy")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="config override")
    parser.add_argument("--batches", type=int, default=160)
    parser.add_argument("--every", type=int, default=40)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    overrides = dict(parse_override(item) for item in args.set)
    config = load_config(None, {"data.name": args.dataset, **overrides})
    data = load_prepared(args.dataset, args.data_dir)
    torch.manual_seed(config.seed)
    backend = build_backend(config, data, torch.device("cpu"))
    optimizer = torch.optim.Adam(backend.parameters(), lr=config.model.lr)
    sampler = BPRSampler(data.csr("train"), seed=config.seed, mode=config.model.sampling)
    backend.start_epoch(1, torch.Generator().manual_seed(config.seed))
    ssl = getattr(backend, "ssl_loss", None)
    print(f"backend {config.model.name}, layers {config.model.layers}, pooling {config.model.pooling}, "
          f"lr {config.model.lr}, batch {config.train.batch_size}, seed {config.seed}")
    print("batch  bpr_term  extra_term  seconds")
    start = time.perf_counter()
    for index, (users, pos, neg) in enumerate(sampler.batches(config.train.batch_size, torch.device("cpu"))):
        bpr = backend.bpr_loss(users, pos, neg)
        extra = ssl(users, pos) if ssl is not None and config.model.ssl_reg > 0 else torch.zeros(())
        loss = bpr + config.model.ssl_reg * extra
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if index % args.every == 0:
            print(f"{index:5d}  {bpr.item():8.4f}  {extra.item():10.4f}  {time.perf_counter() - start:7.1f}", flush=True)
        if index >= args.batches:
            break


if __name__ == "__main__":
    main()
