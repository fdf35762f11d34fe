#!/usr/bin/env bash
# The ML-1M tuned campaign (campaigns/tuned.yaml on ml-1m_noisy: ~20 searches, then the 5-seed table) on ONE GPU,
# 8 trials at a time sharing it (--gpus-per-trial 0.125 --cpus-per-trial 1 --max-concurrent 8 --device cuda), on
# a local Ray, under a watchdog: after SECONDS (default 510) it sends SIGINT (the running studies end, whose
# finished trials are in their runs.csv already, and the campaign stops there), then KILL GRACE_S (60) later.
#
#   bash bench/gpu_campaign.sh DATA_DIR OUT_DIR [SECONDS]     # DATA_DIR holds ml-1m_noisy
#
# The campaign folder is OUT_DIR/campaign (--out) and the shared backends' cache OUT_DIR/backend_cache; the
# tracking store and Tune's folder are scratch, so each call resumes from the campaign folder's runs.csv files
# alone, as a new machine does: call it again with the same OUT_DIR (copied back) to go on, training no
# finished trial again. OUT_DIR/gpu_campaign.json: the device (GPU, driver, torch, CUDA), the settings, the wall
# seconds, per stage and table the trials finished so far (and how many in this call) with their recorded cost
# (sums of the cost_wall_seconds / cost_cpu_seconds / cost_epochs columns of its runs.csv) and the devices they
# ran on, whether the campaign finished, the command that resumes it, and one line per call so far. The
# campaign's log goes to OUT_DIR/gpu_campaign.log. The plan's CPU probe is skipped (--no-probe: minutes of CPU).
# Env: GPUS_PER_TRIAL, CPUS_PER_TRIAL, MAX_CONCURRENT, DEVICE, GRACE_S, NUM_CPUS (default: all cores).
# Needs an NVIDIA GPU, the CUDA build of torch and DATA_DIR/ml-1m_noisy; without them it stops with one `error:`
# line, exit 2. GPU kernels are not deterministic: a resumed campaign agrees on what ran, not on the last digit.
set -euo pipefail
usage="usage: bench/gpu_campaign.sh DATA_DIR OUT_DIR [SECONDS]"
DATA_DIR=${1:?$usage}; OUT_DIR=${2:?$usage}; LIMIT_S=${3:-510}
GPUS_PER_TRIAL=${GPUS_PER_TRIAL:-0.125}; CPUS_PER_TRIAL=${CPUS_PER_TRIAL:-1}; MAX_CONCURRENT=${MAX_CONCURRENT:-8}
DEVICE=${DEVICE:-cuda}; GRACE_S=${GRACE_S:-60}
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$(dirname "$HERE")
source "$HERE/gpu_common.sh"
[[ "$LIMIT_S" =~ ^[1-9][0-9]*$ ]] || fail "SECONDS '$LIMIT_S': expected a whole number of seconds > 0 ($usage)"
require_gpu "$DATA_DIR"  # sets GPU_NAME and DDRM, or one `error:` line, exit 2
NUM_CPUS=${NUM_CPUS:-$(nproc)}
DATA_DIR=$(cd "$DATA_DIR" && pwd)
mkdir -p "$OUT_DIR"; OUT_DIR=$(cd "$OUT_DIR" && pwd)

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
ARGS=(campaign run campaigns/tuned.yaml --dataset ml-1m_noisy --data-dir "$DATA_DIR" --out "$OUT_DIR/campaign"
      --num-cpus "$NUM_CPUS" --gpus-per-trial "$GPUS_PER_TRIAL" --cpus-per-trial "$CPUS_PER_TRIAL"
      --max-concurrent "$MAX_CONCURRENT" --device "$DEVICE" --no-probe  # the probe: CPU epochs, minutes
      --storage "$WORK/ray_results" --tracking-uri "sqlite:///$WORK/mlflow.db")
START=$(date +%s.%N)
status=0
(cd "$ROOT" && env -u RAY_ADDRESS DDRM_CACHE_DIR="$OUT_DIR/backend_cache" \
  timeout --signal=INT --kill-after="$GRACE_S" "$LIMIT_S" "${DDRM[@]}" "${ARGS[@]}") \
  > "$OUT_DIR/gpu_campaign.log" 2>&1 || status=$?
END=$(date +%s.%N)
tail -n 25 "$OUT_DIR/gpu_campaign.log"
[ -d "$OUT_DIR/campaign" ] || { echo "error: the campaign wrote nothing (exit $status); its log ends above" >&2; exit 1; }

python - "$ROOT/campaigns/tuned.yaml" "$OUT_DIR" "$START" "$END" "$status" "$GPU_NAME" "$LIMIT_S" "$1 $2" \
  "$GPUS_PER_TRIAL" "$CPUS_PER_TRIAL" "$MAX_CONCURRENT" "$DEVICE" "$NUM_CPUS" "${DDRM[*]} ${ARGS[*]}" <<'PY'
import csv, json, os, subprocess, sys
import torch, yaml

(spec_path, out_dir, start, end, status, gpu_name, limit, places, gpus, cpus, concurrent, device, num_cpus,
 command) = sys.argv[1:]
status = int(status)
spec = yaml.safe_load(open(spec_path))
campaign = os.path.join(out_dir, "campaign")
COST = ("cost_wall_seconds", "cost_cpu_seconds", "cost_epochs")


def number(text):
    try:
        return float(text)
    except (TypeError, ValueError):
        return 0.0


def part(kind, name):
    """One stage's or table's finished trials and their recorded cost, from its runs.csv."""
    path = os.path.join(campaign, kind, name, "runs.csv")
    rows = list(csv.DictReader(open(path))) if os.path.isfile(path) else []
    here = [r for r in rows if not r.get("imported_from")]  # each call starts a new store: others are imported
    cost = lambda rs: {c: round(sum(number(r.get(c)) for r in rs), 1) for c in COST}
    return {"trials_finished": len(rows), "trials_finished_this_call": len(here), "cost": cost(rows),
            "cost_this_call": cost(here), "devices": sorted({r.get("device") or "?" for r in rows}) if rows else [],
            "complete": os.path.isfile(os.path.join(campaign, kind, name, "chosen_config.yaml"))
            if kind == "stages" else status == 0}


smi = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version,memory.total", "--format=csv,noheader"],
                     capture_output=True, text=True).stdout.strip().splitlines()
name, driver, memory = ([p.strip() for p in smi[0].split(",")] + ["", "", ""])[:3] if smi else (gpu_name, "", "")
stages = {s: part("stages", s) for s, stage in spec["stages"].items() if "fixed" not in stage}
tables = {t: part("tables", t) for t in spec.get("tables") or {}}
wall = float(end) - float(start)
record_path = os.path.join(out_dir, "gpu_campaign.json")
try:  # the earlier calls on this OUT_DIR, one line each
    calls = json.load(open(record_path)).get("calls", [])
except (OSError, ValueError, AttributeError):
    calls = []
trained = sum(p["trials_finished_this_call"] for p in [*stages.values(), *tables.values()])
calls.append({"wall_seconds": round(wall, 1), "exit_status": status, "trials_finished": trained})
payload = {
    "campaign": "campaigns/tuned.yaml", "dataset": "ml-1m_noisy",
    "device": {"gpu": name, "driver": driver, "memory_total": memory, "torch": torch.__version__,
               "cuda": torch.version.cuda, "cpus": os.cpu_count()},
    "settings": {"gpus_per_trial": float(gpus), "cpus_per_trial": float(cpus), "max_concurrent": int(concurrent),
                 "device": device, "num_cpus": int(num_cpus), "watchdog_seconds": int(limit)},
    "exit_status": status, "interrupted": status in (124, 130, 137), "finished": status == 0,
    "wall_seconds": round(wall, 1), "trials_finished_this_call": trained,
    "stages": stages, "tables": tables,
    "cost_total": {c: round(sum(p["cost"][c] for p in [*stages.values(), *tables.values()]), 1) for c in COST},
    "command": command,
    "resume": f"bash bench/gpu_campaign.sh {places} {limit}  # with OUT_DIR as this call left it (copied back)",
    "calls": calls,
}
with open(record_path, "w") as handle:
    json.dump(payload, handle, indent=2)
print(json.dumps({k: payload[k] for k in ("exit_status", "finished", "wall_seconds", "trials_finished_this_call",
                                          "cost_total")}, indent=2))
PY
echo "wrote $OUT_DIR/gpu_campaign.json"
case $status in  # finished, finished with failed trials, stopped by the watchdog: the JSON says which
  0|1|124|130|137) ;;
  *) echo "error: the campaign stopped with exit $status; its log: $OUT_DIR/gpu_campaign.log" >&2; exit 1 ;;
esac
