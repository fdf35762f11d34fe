#!/usr/bin/env bash
# The searches of the tuned ML-1M comparison (issue 19, DESIGN §4a), each a real `ddrm tune` study into ONE
# tracking store, docs/results/tuned_ml1m/mlruns.db (not committed: a database stays out of git). Every call
# resumes: a search whose Tune folder is gone continues from that store, never training a finished trial twice.
# After each search its report (table, runs.csv = the committed per-run record, best_config.yaml) is rewritten
# under docs/results/tuned_ml1m/<search>/, and every SNAPSHOT_MINUTES (10) while it runs, so its finished trials
# can be committed as they land. On a machine without the store, the committed runs.csv is imported first
# (--import-runs): a search cut off by a session's end continues from what is committed.
#
#   bash bench/tuned_ml1m.sh ../shared/datasets ease_ml1m itemknn_ml1m mf_ml1m_ddrm ...   # named searches
#   bash bench/tuned_ml1m.sh ../shared/datasets                                           # all, in order
#
# Two 1-CPU trials at a time (the machine's 2 cores). Order: the cheap baselines, then the backends (their best
# configs feed the DDRM searches), then the DDRM and loss-side searches, then the standalone models.
set -euo pipefail
cd "$(dirname "$0")/.."
DATA_DIR=${1:?usage: bench/tuned_ml1m.sh DATA_DIR [SEARCH ...]}
shift
OUT=docs/results/tuned_ml1m
STORE="sqlite:///$OUT/mlruns.db"
mkdir -p "$OUT"
SEARCHES=("$@")
if [ ${#SEARCHES[@]} -eq 0 ]; then
  SEARCHES=(ease_ml1m itemknn_ml1m mf_ml1m_backend lightgcn_ml1m_backend sgl_ml1m_backend mf_ml1m_mean
            lightgcn_ml1m_mean sgl_ml1m_mean mf_ml1m_ddrm lightgcn_ml1m_ddrm sgl_ml1m_ddrm mf_ml1m_tce
            lightgcn_ml1m_tce sgl_ml1m_tce mf_ml1m_rce lightgcn_ml1m_rce sgl_ml1m_rce multivae_ml1m diffrec_ml1m)
fi
SNAPSHOT_MINUTES=${SNAPSHOT_MINUTES:-10}
for name in "${SEARCHES[@]}"; do
  echo "=== $name ($(date -u +%H:%M:%S))"
  start=$(date +%s)
  committed=()
  if [ -f "$OUT/$name/runs.csv" ]; then committed=(--import-runs "$OUT/$name/runs.csv"); fi
  (  # the report of the running search, now and then: its finished trials, ready to commit
    while sleep $(( SNAPSHOT_MINUTES * 60 )); do
      ddrm report "$name" --tracking-uri "$STORE" --out "$OUT/$name" > /dev/null 2>&1 || true
    done
  ) &
  snapshots=$!
  status=0
  ddrm tune "search_spaces/$name.yaml" --data-dir "$DATA_DIR" --tracking-uri "$STORE" \
      --storage ray_results/tuned_ml1m --num-cpus 2 --cpus-per-trial 1 --max-concurrent 2 --resume \
      "${committed[@]}" || status=$?
  kill "$snapshots" 2>/dev/null || true
  echo "=== $name took $(( $(date +%s) - start )) s (exit $status)"
  ddrm report "$name" --tracking-uri "$STORE" --out "$OUT/$name"
  [ "$status" -eq 0 ] || exit "$status"
done
