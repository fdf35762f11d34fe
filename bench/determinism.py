"""Determinism across a code change: the same small runs on the same generated data, old code against new code.

A fixed list of short runs (2-3 epochs per stage, one CPU thread, ``use_cache=False``) covering every model
path: MF, LightGCN and SGL alone and + DDRM, MF + T-CE / R-CE / DeCA, and the standalone Mult-VAE, CDAE, DiffRec,
AdaGCL, EASE, ItemKNN and MostPop. Each run's final validation and test metrics are recorded; ``compare``
requires them byte-identical (``repr`` of every float equal, so also ``==``) between every pair of sides.

The configs exist in two shapes: the old one (sections ``backend`` + a catch-all ``model``, read by the code
before the config refactor, 44d13f1, and through ``ddrm.legacy`` by the code after it) and the new one
(``{data, model, denoise, ddrm, train, seed}``, read by the new code only). A side is one package root and one
shape; the data are generated here (seeded, a few hundred users and items) and written with the side's own
``write_prepared``, their hash recorded so that every side is seen to read the same arrays.

    git worktree add ../ddrm-44d13f1 44d13f1
    python bench/determinism.py all --old-root ../ddrm-44d13f1/platform --new-root platform \\
        --json docs/results/benchmarks/determinism_config_refactor.json

or one side at a time (``run --package-root ROOT --shape old|new --json SIDE.json``), then ``compare SIDE.json
... --json OUT.json``. Exit status 1 when any metric differs.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

DATASET = "generated"
N_USERS, N_ITEMS, PER_USER, DATA_SEED = 300, 200, 20, 0
TRAIN = {"epochs": 3, "batch_size": 128, "patience": 100, "threads": 1, "device": "cpu"}
DDRM = {"steps": 5, "hidden_dims": [16, 32], "epochs": 2, "lr": 0.01}
SEED = 0

# name -> (old-shape sections, new-shape sections); data, train and seed are added to both
BACKENDS = {"mf": {"lr": 0.01}, "lightgcn": {"lr": 0.01, "layers": 2},
            "sgl": {"lr": 0.01, "layers": 2, "ssl_reg": 0.01}}
STANDALONE = {
    "multivae": {"hidden_dims": [64, 32], "batch_size": 64},
    "cdae": {"hidden_dims": [32], "batch_size": 64},
    "diffrec": {"hidden_dims": [64], "batch_size": 64, "diffusion_steps": 5},
    "adagcl": {"dim": 32, "batch_size": 512},
    "ease": {"ease_lambda": 100.0},
    "itemknn": {"knn_k": 50, "knn_shrink": 10.0},
    "mostpop": {},
}
DENOISERS = {"tce": {"tce_max_rate": 0.2, "tce_num_gradual": 100}, "rce": {"rce_beta": 0.25},
             "deca": {"deca_c1": 1000.0, "deca_c2": 10.0, "deca_alpha": 0.5}}
NEW_DENOISE_KEYS = {"tce_max_rate": "max_rate", "tce_num_gradual": "num_gradual", "rce_beta": "beta",
                    "deca_c1": "c1", "deca_c2": "c2", "deca_alpha": "alpha"}


def runs() -> dict[str, tuple[dict[str, Any], dict[str, Any]]]:
    """``{run name: (old-shape sections, new-shape sections)}`` in a fixed order."""
    out: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {}
    for name, keys in BACKENDS.items():
        out[name] = ({"backend": {"name": name, **keys}, "ddrm": {"enabled": False}},
                     {"model": {"name": name, **keys}, "ddrm": {"enabled": False}})
        out[f"{name}+ddrm"] = ({"backend": {"name": name, **keys}, "ddrm": dict(DDRM)},
                               {"model": {"name": name, **keys}, "ddrm": dict(DDRM)})
    for plugin, keys in DENOISERS.items():
        out[f"mf+{plugin}"] = (
            {"backend": {"name": "mf", **BACKENDS["mf"], "denoise": plugin, **keys}, "ddrm": {"enabled": False}},
            {"model": {"name": "mf", **BACKENDS["mf"]},
             "denoise": {"name": plugin, **{NEW_DENOISE_KEYS[k]: v for k, v in keys.items()}},
             "ddrm": {"enabled": False}})
    for name, keys in STANDALONE.items():
        # old shape: a standalone model beside the (ignored) backend section, as old runs logged it
        out[name] = ({"backend": {"name": "mf"}, "model": {"name": name, **keys}}, {"model": {"name": name, **keys}})
    return out


def generate(seed: int = DATA_SEED):
    """Disjoint train/valid/test pairs with a planted cluster structure: the tests' generator
    (tests/conftest.py ``make_interactions``) at this script's size, so every side reads the same arrays."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from conftest import make_interactions

    return make_interactions(N_USERS, N_ITEMS, PER_USER, seed)


def _git(root: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else ""


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):
        return value.item()
    return value


def run_side(package_root: str, shape: str, only: list[str] | None = None) -> dict[str, Any]:
    """Every run of :func:`runs` with the package at ``package_root``, configs in ``shape``."""
    root = Path(package_root).resolve()
    sys.path.insert(0, str(root))
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import ddrm
    from ddrm.config import config_from_dict
    from ddrm.data import load_prepared, write_prepared
    from ddrm.host import host_tags
    from ddrm.train import run

    if not Path(ddrm.__file__).resolve().is_relative_to(root):
        raise SystemExit(f"ddrm was imported from {ddrm.__file__}, not from {root}")
    arrays = generate()
    digest = hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()
    shown = os.path.relpath(root) if root.is_relative_to(Path.cwd().resolve()) else f"<checkout>/{root.name}"
    out: dict[str, Any] = {"package_root": shown, "commit": _git(root, "rev-parse", "HEAD"),
                           "dirty": bool(_git(root, "status", "--porcelain", "--", ".")), "shape": shape,
                           "host": host_tags(), "torch": torch.__version__, "numpy": np.__version__,
                           "python": sys.version.split()[0], "data": {"users": N_USERS, "items": N_ITEMS,
                           "train": len(arrays[0]), "valid": len(arrays[1]), "test": len(arrays[2]),
                           "sha256": digest}, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["DDRM_CACHE_DIR"] = str(Path(tmp) / "cache")  # nothing read from or left in a real cache
        write_prepared(Path(tmp) / DATASET, *arrays)
        data = load_prepared(DATASET, tmp)
        for name, (old, new) in runs().items():
            if only and name not in only:
                continue
            sections = old if shape == "old" else new
            nested = {"data": {"name": DATASET}, "train": dict(TRAIN), "seed": SEED, **sections}
            config = config_from_dict(nested)
            start = time.perf_counter()
            result = run(config, data=data, progress=False, use_cache=False)
            stages = {"first": result.backend, "ddrm": result.ddrm}
            out["runs"][name] = {
                "input": nested, "config": _plain(config.to_flat_dict()),
                "valid": _plain(result.valid), "test": _plain(result.test),
                "epochs_run": {k: s.epochs_run for k, s in stages.items() if s is not None},
                "seconds": round(time.perf_counter() - start, 2)}
            print(f"{name}: valid R@20 {result.valid['recall_at_20']!r}, test R@20 {result.test['recall_at_20']!r}",
                  file=sys.stderr, flush=True)
    return out


def _differences(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    """Metrics whose floats are not byte-identical (``repr`` differs), as ``{split.metric: [a, b]}``."""
    diff = {}
    for split in ("valid", "test"):
        for key in sorted(set(a[split]) | set(b[split])):
            x, y = a[split].get(key), b[split].get(key)
            if repr(x) != repr(y) or x != y:
                diff[f"{split}.{key}"] = [x, y]
    return diff


def compare(sides: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Every run of the first side against the same run of each other side."""
    labels = list(sides)
    reference = labels[0]
    table: dict[str, Any] = {}
    for name in sides[reference]["runs"]:
        row = {}
        for other in labels[1:]:
            if name not in sides[other]["runs"]:
                row[other] = {"identical": False, "missing": True}
                continue
            diff = _differences(sides[reference]["runs"][name], sides[other]["runs"][name])
            row[other] = {"identical": not diff, **({"differing": diff} if diff else {})}
        table[name] = row
    same_data = len({s["data"]["sha256"] for s in sides.values()}) == 1
    return {"reference": reference, "same_data": same_data, "runs": table,
            "all_identical": same_data and all(c["identical"] for row in table.values() for c in row.values())}


def _print_table(comparison: dict[str, Any]) -> None:
    others = list(next(iter(comparison["runs"].values())))
    print(f"| run | {' | '.join(others)} |")
    print("|---|" + "---|" * len(others))
    for name, row in comparison["runs"].items():
        print(f"| {name} | " + " | ".join("identical" if row[o]["identical"] else "DIFFERS" for o in others) + " |")
    print(f"\nsame generated data on every side: {comparison['same_data']}; "
          f"all identical: {comparison['all_identical']}")


def _write(path: str, record: dict[str, Any]) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_text(json.dumps(record, indent=1) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    one = sub.add_parser("run", help="one side: one package root, one config shape")
    one.add_argument("--package-root", required=True, help="the folder holding the ddrm package (PYTHONPATH)")
    one.add_argument("--shape", choices=["old", "new"], required=True)
    one.add_argument("--only", nargs="+", help="these runs only")
    one.add_argument("--json", required=True)
    both = sub.add_parser("compare", help="side JSONs -> the comparison (the first side is the reference)")
    both.add_argument("sides", nargs="+")
    both.add_argument("--json")
    every = sub.add_parser("all", help="old code/old shape, new code/old shape, new code/new shape, compared")
    every.add_argument("--old-root", required=True)
    every.add_argument("--new-root", required=True)
    every.add_argument("--json", required=True)
    args = parser.parse_args(argv)

    if args.command == "run":
        _write(args.json, run_side(args.package_root, args.shape, args.only))
        return 0
    if args.command == "compare":
        sides = {Path(p).stem: json.loads(Path(p).read_text()) for p in args.sides}
    else:
        sides = {}
        with tempfile.TemporaryDirectory() as tmp:
            for label, root, shape in (("old_code/old_shape", args.old_root, "old"),
                                       ("new_code/old_shape", args.new_root, "old"),
                                       ("new_code/new_shape", args.new_root, "new")):
                side_json = Path(tmp) / "side.json"
                print(f"== {label} ({root})", file=sys.stderr, flush=True)
                subprocess.run([sys.executable, __file__, "run", "--package-root", root, "--shape", shape,
                                "--json", str(side_json)], check=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": ""})
                sides[label] = json.loads(side_json.read_text())
    comparison = compare(sides)
    _print_table(comparison)
    if args.json:
        _write(args.json, {"command": "python bench/determinism.py " + " ".join(sys.argv[1:] if argv is None else argv),
                           "host": next(iter(sides.values()))["host"], "comparison": comparison, "sides": sides})
    return 0 if comparison["all_identical"] else 1


if __name__ == "__main__":
    sys.exit(main())
