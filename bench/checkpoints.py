"""The reference code's released backends (``ml-1m_noisy/ddrm_pretrained_backends``) scored by this platform.

No training: each checkpoint is loaded (``model.checkpoint``) and evaluated on the test split, scored directly
(user · item) and by DDRM's inference start with no denoiser (mean of liked items, ``ddrm.inference_steps: 0``).
``tests/test_checkpoints.py`` asserts the same numbers against DESIGN §4; this writes them to a JSON that
docs/RESULTS.md points at:

    python bench/checkpoints.py --data-dir ../shared/datasets --json docs/results/benchmarks/reference_checkpoints.json
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

CHECKPOINTS = {"mf": "ml-1m_MF_checkpoint", "lightgcn": "ml-1m_LightGCN_checkpoint.tar",
               "sgl": "ml-1m_SGL_checkpoint"}
# (label, backend, layers, pooling, DDRM-time propagation layers)
ROWS = [
    ("LightGCN, 3 layers, mean", "lightgcn", 3, "mean", None),
    ("LightGCN, 2 layers, mean", "lightgcn", 2, "mean", None),
    ("SGL, 3 layers, per-layer L2-normalised sum", "sgl", 3, "normalized_sum", None),
    ("MF", "mf", 0, "mean", None),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data-dir", required=True)
    parser.add_argument("--json", required=True)
    args = parser.parse_args(argv)

    from ddrm.config import Config
    from ddrm.data import load_prepared
    from ddrm.train import run

    data = load_prepared("ml-1m_noisy", args.data_dir)
    folder = Path(args.data_dir) / "ml-1m_noisy" / "ddrm_pretrained_backends"
    rows = []
    for label, backend, layers, pooling, propagation in ROWS:
        config = Config().replace({"data.name": "ml-1m_noisy", "model.name": backend, "model.layers": layers,
                                   "model.pooling": pooling, "model.checkpoint": str(folder / CHECKPOINTS[backend]),
                                   "ddrm.inference_steps": 0, "ddrm.propagation_layers": propagation})
        start = time.perf_counter()
        result = run(config, data=data, progress=False, use_cache=False)
        rows.append({"checkpoint": label, "file": f"ml-1m_noisy/ddrm_pretrained_backends/{CHECKPOINTS[backend]}",
                     "direct_test": result.backend.test, "mean_of_liked_items_test": result.test,
                     "seconds": round(time.perf_counter() - start, 1)})
        print(f"{label}: direct R@20 {result.backend.test['recall_at_20']:.4f}, mean of liked items R@20 "
              f"{result.test['recall_at_20']:.4f}", flush=True)
    Path(args.json).parent.mkdir(parents=True, exist_ok=True)
    Path(args.json).write_text(json.dumps({"dataset": "ml-1m_noisy", "split": "test", "rows": rows}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
