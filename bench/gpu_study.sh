#!/usr/bin/env bash
# The DDRM-MF search (search_spaces/mf_ml1m_ddrm.yaml: seeded TPE + ASHA) on ONE GPU, 8 trials at a time
# sharing it (--gpus-per-trial 0.125 --cpus-per-trial 1 --max-concurrent 8), on a local Ray. It finishes
# inside 9 minutes: NUM_SAMPLES trials (24), every training stage capped by train.time_budget_minutes
# (BUDGET_MINUTES, 1.5), and a 510 s watchdog that interrupts the study (Tune stops it cleanly; the JSON
# then says "interrupted": true and counts what ran).
#
#   bash bench/gpu_study.sh DATA_DIR OUT.json        # DATA_DIR holds ml-1m_noisy
#
# OUT.json: trials (started / finished / stopped early by ASHA), wall seconds (whole command and the tuning
# window), trials per hour, the most trials seen running at once, GPU memory per trial (torch's
# max_memory_allocated as each trial reports it, and each trial process's memory in nvidia-smi, which adds
# the CUDA context), the device's peak memory in use, the best trial, and the host (GPU, driver, torch, CPUs).
# Needs an NVIDIA GPU and the CUDA build of torch; without them it stops with one `error:` line, exit 2.
# The backend (MF) is pretrained once by the driver on the CPU, as in every study; GPU kernels are not
# deterministic, so reruns agree on throughput and memory, not on the last digit of the metrics.
set -euo pipefail
usage="usage: bench/gpu_study.sh DATA_DIR OUT.json"
DATA_DIR=${1:?$usage}; OUT_JSON=${2:?$usage}
NUM_SAMPLES=${NUM_SAMPLES:-24}; BUDGET_MINUTES=${BUDGET_MINUTES:-1.5}; WATCHDOG_S=${WATCHDOG_S:-510}
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(dirname "$HERE")
source "$HERE/gpu_common.sh"
require_gpu "$DATA_DIR"  # sets GPU_NAME and DDRM, or one `error:` line, exit 2

WORK=$(mktemp -d)
SAMPLER=""
cleanup() { [ -n "$SAMPLER" ] && kill "$SAMPLER" 2>/dev/null; rm -rf "$WORK"; }
trap cleanup EXIT
# each second: memory per process on the GPU (a trial is one process) and in use on the whole device
( while true; do
    nvidia-smi --query-compute-apps=pid,used_memory --format=csv,noheader,nounits 2>/dev/null | sed "s/^/app,/"
    nvidia-smi --query-gpu=memory.used --format=csv,noheader,nounits 2>/dev/null | head -n 1 | sed "s/^/gpu,/"
    sleep 1
  done ) > "$WORK/smi.csv" &
SAMPLER=$!

START=$(date +%s.%N)
status=0
(cd "$ROOT" && env -u RAY_ADDRESS timeout --signal=INT --kill-after=60 "$WATCHDOG_S" \
  "${DDRM[@]}" tune search_spaces/mf_ml1m_ddrm.yaml --data-dir "$DATA_DIR" --num-samples "$NUM_SAMPLES" \
    --num-cpus "$(nproc)" --cpus-per-trial 1 --gpus-per-trial 0.125 --max-concurrent 8 \
    --set train.time_budget_minutes="$BUDGET_MINUTES" \
    --storage "$WORK/ray_results" --tracking-uri "sqlite:///$WORK/mlflow.db") > "$WORK/study.log" 2>&1 || status=$?
END=$(date +%s.%N)
tail -n 25 "$WORK/study.log"
[ -d "$WORK/ray_results/mf_ml1m_ddrm" ] || { echo "error: the study wrote no results (exit $status); its log ends above" >&2; exit 1; }

python - "$OUT_JSON" "$WORK" "$START" "$END" "$status" "$GPU_NAME" "$NUM_SAMPLES" "$BUDGET_MINUTES" <<'PY'
import glob, json, os, statistics, sys
import torch

out, work, start, end, status, gpu_name, num_samples, budget = sys.argv[1:]
trials = []
for path in sorted(glob.glob(f"{work}/ray_results/mf_ml1m_ddrm/*/result.json")):
    lines = [json.loads(line) for line in open(path) if line.strip()]
    if not lines:
        continue
    first, last = lines[0], lines[-1]
    trials.append({"trial_id": first.get("trial_id"), "pid": first.get("pid"), "epochs": last.get("epoch"),
                   "finished": bool(last.get("done") and "best_epoch" in last),
                   "start": first["timestamp"] - first.get("time_this_iter_s", 0.0), "end": last["timestamp"],
                   "device": first.get("device"), "valid_recall_at_20": last.get("best_recall_at_20"),
                   "gpu_max_memory_mb": max((l.get("gpu_max_memory_mb") or 0.0) for l in lines)})
apps, device_peak = {}, 0.0
for line in open(f"{work}/smi.csv"):
    parts = [p.strip() for p in line.split(",")]
    try:
        if parts[0] == "app" and len(parts) == 3:
            apps[parts[1]] = max(apps.get(parts[1], 0.0), float(parts[2]))
        elif parts[0] == "gpu" and len(parts) == 2:
            device_peak = max(device_peak, float(parts[1]))
    except ValueError:
        continue
window = (max(t["end"] for t in trials) - min(t["start"] for t in trials)) if trials else 0.0
events = sorted([(t["start"], 1) for t in trials] + [(t["end"], -1) for t in trials])
running = peak = 0
for _, step in events:
    running += step
    peak = max(peak, running)
torch_mb = [t["gpu_max_memory_mb"] for t in trials if t["gpu_max_memory_mb"]]
smi_mb = [apps[str(t["pid"])] for t in trials if str(t["pid"]) in apps]
summary = lambda xs: ({"min": min(xs), "median": statistics.median(xs), "max": max(xs), "n": len(xs)} if xs else None)
wall = float(end) - float(start)
best = max((t for t in trials if t["valid_recall_at_20"] is not None), key=lambda t: t["valid_recall_at_20"],
           default=None)
payload = {
    "study": "search_spaces/mf_ml1m_ddrm.yaml", "settings": {"num_samples": int(num_samples), "cpus_per_trial": 1,
               "gpus_per_trial": 0.125, "max_concurrent": 8, "train.time_budget_minutes": float(budget)},
    "exit_status": int(status), "interrupted": int(status) in (124, 130, 137),
    "trials": len(trials), "finished": sum(t["finished"] for t in trials),
    "stopped_early": sum(not t["finished"] for t in trials), "epochs": sum(t["epochs"] or 0 for t in trials),
    "wall_seconds": round(wall, 1), "tuning_window_seconds": round(window, 1),
    "trials_per_hour": round(len(trials) / (wall / 3600), 1) if wall else None,
    "trials_per_hour_tuning": round(len(trials) / (window / 3600), 1) if window else None,
    "max_trials_running_at_once": peak, "devices": sorted({t["device"] for t in trials if t["device"]}),
    "gpu_memory_per_trial_mb": {"torch_max_allocated": summary(torch_mb), "nvidia_smi_process": summary(smi_mb)},
    "gpu_memory_peak_in_use_mb": device_peak,
    "best": best and {"trial_id": best["trial_id"], "valid_recall_at_20": best["valid_recall_at_20"]},
    "host": {"gpu": gpu_name, "torch": torch.__version__, "cuda": torch.version.cuda, "cpus": os.cpu_count()},
    "per_trial": trials,
}
with open(out, "w") as handle:
    json.dump(payload, handle, indent=2)
print(json.dumps({k: payload[k] for k in ("trials", "finished", "wall_seconds", "trials_per_hour",
                                          "max_trials_running_at_once", "gpu_memory_per_trial_mb")}, indent=2))
PY
echo "wrote $OUT_JSON"
