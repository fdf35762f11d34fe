"""torch.profiler view of one slice of a DDRM training epoch and of one DDRM evaluation pass.

    python bench/profile_ddrm.py --data-dir ../shared/datasets [--batches N] [--threads 2]

MF backend (random embeddings: the cost does not depend on their values), the released MF settings.
Prints the top operators by self CPU time for each phase (docs/PERFORMANCE.md quotes them).
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.profiler import ProfilerActivity, profile

from ddrm.config import load_config, parse_override
from ddrm.data import load_prepared
from ddrm.data.sampling import BPRSampler
from ddrm.diffusion.ddrm import DDRM
from ddrm.evaluation import evaluate
from ddrm.train import build_backend


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--batches", type=int, default=0, help="batches to profile (default 0: one whole epoch)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", type=int, default=15)
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    data = load_prepared("ml-1m_noisy", args.data_dir)
    config = load_config(None, {"data.name": data.name, **dict(parse_override(o) for o in args.overrides)})
    torch.manual_seed(0)
    model = DDRM(config.ddrm, build_backend(config, data, torch.device("cpu")), data.csr("train"), seed=0)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.ddrm.lr)
    sampler = BPRSampler(data.csr("train"), seed=0, mode=config.ddrm.sampling)
    model.train()

    def train_slice() -> int:
        seen = 0
        for index, (users, pos, neg) in enumerate(sampler.batches(config.train.batch_size, torch.device("cpu"))):
            if args.batches and index >= args.batches:
                break
            loss = model.loss(users, pos, neg)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            seen += len(users)
        return seen

    for index, (users, pos, neg) in enumerate(sampler.batches(config.train.batch_size, torch.device("cpu"))):
        model.loss(users, pos, neg).backward()  # warm-up: two batches
        if index == 1:
            break
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        seen = train_slice()
        seconds = time.perf_counter() - start
    print(f"## training: {args.batches or 'all'} batches, {seen / seconds:,.0f} interactions/s "
          f"(est. {seconds * sampler.n_train / seen:.1f} s/epoch)\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))

    model.eval()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        start = time.perf_counter()
        evaluate(model.scorer(), data, "valid")
        evaluate(model.scorer(), data, "test")
        seconds = time.perf_counter() - start
    print(f"\n## evaluation pass (valid + test, DDRM inference T' = {config.ddrm.reverse_steps}): {seconds:.2f} s\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=args.rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
