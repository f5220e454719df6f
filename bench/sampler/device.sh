#!/usr/bin/env bash
# On the device machine (one H100/H200, no network), from the repository root, with the carry
# folder pack.sh and workflows.py made in .devcarry/: unpack ComfyUI + node packs and wheels,
# write random weights of the true shapes, then run zr4's workflow for each imitated card in RUNS.
#   RUNS="q4km-16g:16376 q4km-16g.2:16376 q4km-12g:12288" bash .devcarry/bench/device.sh
# Each entry: name:card MiB, with .devcarry/plan-NAME.json and workflow-NAME.json beside it; a
# repeat of a run is NAME.2 (same plan and workflow, its own results).
# A run starts only if MIN_RUN_S of BUDGET_S is left. Each run's result, per-node stats and ComfyUI
# log go into $OUT/runs.tar as soon as it ends, so a call cut off at its limit brings back what ran.
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-570}
MIN_RUN_S=${MIN_RUN_S:-200}
CARRY=$(pwd)/.devcarry
W=/tmp/zr4-sampler
OUT=${OUT:-/tmp/zr4-out}
mkdir -p "$W" "$OUT"
left() { echo $((BUDGET_S - ($(date +%s) - T0))); }
echo "== $(date -u +%FT%TZ) unpack"
if [ ! -d "$W/ComfyUI" ]; then
  tar -xJf "$CARRY/comfy.tar.xz" -C "$W" &
  tar -xJf "$CARRY/site.tar.xz" -C "$W" &
  wait
  xz -dc "$CARRY/manifests.json.xz" > "$W/manifests.json"
fi
export PYTHONPATH="$W/site12"
B="$CARRY/bench"
{
  date -u +%FT%TZ
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader
  python3 -c "import torch, transformers, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', sys.version.split()[0], 'transformers', transformers.__version__)"
  python3 -c "import imageio_ffmpeg, subprocess; print(subprocess.run([imageio_ffmpeg.get_ffmpeg_exe(), '-version'], capture_output=True, text=True).stdout.splitlines()[0])"
  grep MemTotal /proc/meminfo; nproc
} 2>&1
echo "== $(date -u +%FT%TZ) tokenizer + weights ($(left) s left)"
python3 "$B/tokenizer.py" --into "$W/ComfyUI/custom_nodes/ComfyUI-WanVideoWrapper/configs/T5_tokenizer"
# One GGUF file at a time (Q4_K_M 10.7 GB, Q8_0 17.4 GB and the other four 13.6 GB do not fit the
# device's free disk together): the first run's level is written beside the other four models by a
# second process (disk-bound), a later run's level replaces it when that run starts.
level_of() { python3 -c "import json; print(json.load(open('$CARRY/plan-${1%%.*}.json'))['gguf_level'])"; }
gguf() {
  if [ ! -f "$W/ComfyUI/models/diffusion_models/.done-$1" ]; then
    rm -f "$W"/ComfyUI/models/diffusion_models/*.gguf "$W"/ComfyUI/models/diffusion_models/.done-*
    (cd "$B" && python3 make_weights.py --manifests "$W/manifests.json" --models "$W/ComfyUI/models" \
      --gguf "$1" --skip-others > "$W/weights-$1.json") && touch "$W/ComfyUI/models/diffusion_models/.done-$1"
  fi
}
first=${RUNS%% *}
gguf "$(level_of "${first%%:*}")" &
PIDS=($!)
if [ ! -f "$W/ComfyUI/models/.done-others" ]; then
  (cd "$B" && python3 make_weights.py --manifests "$W/manifests.json" --models "$W/ComfyUI/models" \
    > "$W/weights-others.json" && touch "$W/ComfyUI/models/.done-others") &
  PIDS+=($!)
fi
for p in "${PIDS[@]}"; do wait "$p"; done
cat "$W"/weights-*.json
echo "weights written at $(date -u +%FT%TZ) ($(left) s left)"
df -h /tmp | tail -1
for r in $RUNS; do
  IFS=: read -r name card <<<"$r"
  remaining=$(left)
  if [ "$remaining" -lt "$MIN_RUN_S" ]; then echo "== skip $name: $remaining s left"; continue; fi
  gguf "$(level_of "$name")"
  remaining=$(left)
  echo "== $(date -u +%FT%TZ) run $name (card $card MiB; $remaining s left)"
  python3 "$B/run.py" --comfyui "$W/ComfyUI" --workflow "$CARRY/workflow-${name%%.*}.json" --plan "$CARRY/plan-${name%%.*}.json" \
    --video "$CARRY/inputs/driving.mp4" --image "$CARRY/inputs/reference.png" \
    --card-mib "$card" --name "$name" --run-timeout $((remaining - 45)) \
    --out "$OUT/$name.json" || echo "run $name failed: $?"
  # A call brings back at most 8 files: each run's result, stats and log go into one tar as soon as
  # it ends. The first run's mp4 comes back too; later runs' are described in their JSON.
  tar -rf "$OUT/runs.tar" -C "$OUT" --remove-files "$name.json" "$name.stats.jsonl" "$name.comfyui.log" \
    || echo "could not add $name's files to runs.tar"
  mp4=$(find "$W/ComfyUI/output" -maxdepth 1 -name '*.mp4' -printf '%T@ %p\n' 2>/dev/null | sort -rn | head -1 | cut -d' ' -f2-)
  if [ -n "$mp4" ] && [ "$(stat -c %s "$mp4")" -lt 12000000 ] && ! ls "$OUT"/*.mp4 >/dev/null 2>&1; then
    cp "$mp4" "$OUT/$name.mp4"
  fi
done
echo "== $(date -u +%FT%TZ) done ($(left) s left)"
