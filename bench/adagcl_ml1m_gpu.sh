#!/bin/bash
# AdaGCL on ml-1m_noisy (docs/RESULTS.md, "AdaGCL on a GPU"): one bench/seed_table.py process per
# (variant, seed), all at once on one GPU, each stage capped by train.time_budget_minutes (no run of the
# reported one reached it: all stopped on patience), then one JSON in seed_table's format.
#
#   bash bench/adagcl_ml1m_gpu.sh DATA_DIR OUT.json [SEEDS...]      # default seeds 0 1 2
#   python bench/seed_table.py --table-only --json OUT.json        # the table
#
# Needs CUDA (train.device=cuda fails clearly without it); on CPU one epoch takes ~16 min (RESULTS).
# (DATASET=NAME DEVICE=cpu BUDGET_MINUTES=M: a smoke run on other data.)
# GPU scatter-adds are not deterministic, so a rerun gives the same numbers only up to seed-level noise.
set -euo pipefail
DATA_DIR=${1:?usage: adagcl_ml1m_gpu.sh DATA_DIR OUT.json [SEEDS...]}; OUT_JSON=${2:?usage: adagcl_ml1m_gpu.sh DATA_DIR OUT.json [SEEDS...]}
shift 2; SEEDS=${*:-0 1 2}
HERE=$(cd "$(dirname "$0")" && pwd)
WORK=$(mktemp -d); trap 'rm -rf "$WORK"' EXIT
REF="model.name=adagcl,model.dim=64,model.layers=2,model.lr=1e-3,model.batch_size=4096,model.ssl_reg=0.1"
REF="$REF,model.ib_reg=0.1,model.ssl_temperature=0.5,model.l0_reg=1e-4"
declare -A VARIANTS=(
  [ref]="AdaGCL (reference settings, weight decay 2e-5 in the BPR update only)=$REF,model.weight_decay=2e-5"
  [nowd]="AdaGCL (weight decay 0)=$REF,model.weight_decay=0"
)
for key in ref nowd; do
  for seed in $SEEDS; do
    python "$HERE/seed_table.py" --dataset "${DATASET:-ml-1m_noisy}" --data-dir "$DATA_DIR" --seeds "$seed" \
      --set train.device="${DEVICE:-cuda}" --set train.threads=3 --set train.epochs=100 --set train.patience=10 \
      --set train.time_budget_minutes="${BUDGET_MINUTES:-5}" --variant "${VARIANTS[$key]}" \
      --json "$WORK/$key$seed.json" --checkpoint-dir "$WORK/ck_$key$seed" 2> "$WORK/$key$seed.log" &
  done
done
status=0; for job in $(jobs -p); do wait "$job" || status=1; done
tail -n 2 "$WORK"/*.log
[ "$status" -eq 0 ] || { echo "a run failed (its log's end is above); $OUT_JSON not written" >&2; exit 1; }
python - "$OUT_JSON" "$WORK" "$HERE" "${DATASET:-ml-1m_noisy}" <<'PY'
import glob, json, sys
sys.path.insert(0, sys.argv[3])
from seed_table import write_json  # the file format seed_table writes and reads
rows = {}
for path in sorted(glob.glob(sys.argv[2] + "/*.json")):
    for name, runs in json.load(open(path))["rows"].items():
        rows.setdefault(name, []).extend(runs)
write_json(sys.argv[1], sys.argv[4], [], {name: sorted(runs, key=lambda r: r["seed"]) for name, runs in rows.items()})
PY
python "$HERE/seed_table.py" --table-only --json "$OUT_JSON"
