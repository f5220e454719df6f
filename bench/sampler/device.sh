#!/usr/bin/env bash
# On the device machine (one H100/H200, no network), from the repository root, with the carry
# folder pack.sh and workflows.py made in .devcarry/: unpack ComfyUI + node packs and wheels,
# write random weights of the true shapes, then run zr4's workflow for each imitated card in RUNS.
#   RUNS="q4km-16g:16384 q4km-12g:12288" bash .devcarry/bench/device.sh
# Each entry: name:card MiB, with .devcarry/plan-NAME.json and workflow-NAME.json beside it.
# A run starts only if MIN_RUN_S of BUDGET_S is left. Results, the per-node stats and ComfyUI's log
# are written straight into $OUT, so a call cut off at its limit still brings back what ran.
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
# The GGUF files and the four other models are written by two processes at once (disk-bound).
PIDS=()
for r in $RUNS; do
  level=$(python3 -c "import json; print(json.load(open('$CARRY/plan-${r%%:*}.json'))['gguf_level'])")
  if [ ! -f "$W/ComfyUI/models/diffusion_models/.done-$level" ]; then
    (cd "$B" && python3 make_weights.py --manifests "$W/manifests.json" --models "$W/ComfyUI/models" \
      --gguf "$level" --skip-others > "$W/weights-$level.json" && touch "$W/ComfyUI/models/diffusion_models/.done-$level") &
    PIDS+=($!)
  fi
done
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
  echo "== $(date -u +%FT%TZ) run $name (card $card MiB; $remaining s left)"
  python3 "$B/run.py" --comfyui "$W/ComfyUI" --workflow "$CARRY/workflow-$name.json" --plan "$CARRY/plan-$name.json" \
    --video "$CARRY/inputs/driving.mp4" --image "$CARRY/inputs/reference.png" \
    --card-mib "$card" --name "$name" --run-timeout $((remaining - 45)) \
    --out "$OUT/$name.json" || echo "run $name failed: $?"
  # The first run's mp4 comes back (a call returns at most 8 files); later runs' are described in
  # their JSON (bytes, frames).
  mp4=$(ls -t "$W"/ComfyUI/output/*.mp4 2>/dev/null | head -1 || true)
  if [ -n "$mp4" ] && [ "$(stat -c %s "$mp4")" -lt 12000000 ] && ! ls "$OUT"/*.mp4 >/dev/null 2>&1; then
    cp "$mp4" "$OUT/$name.mp4"
  fi
done
echo "== $(date -u +%FT%TZ) done ($(left) s left)"
