#!/usr/bin/env bash
# On the device machine (one H200, no network), from the repository root, with the pack that
# bench/sampler/pack.sh made in .devcarry/: unpack ComfyUI + node packs and wheels, write random
# weights of the true shapes, then run zr4's workflow under each planned card in RUNS.
#   RUNS="q4km-16g:16376:plan-16g.json:Q4_K_M q4km-16g-b:16376:plan-16g.json:Q4_K_M" bash .devcarry/bench/device.sh
# Each entry: name:card MiB:plan file:GGUF level. A run starts only if enough of BUDGET_S is left.
set -euo pipefail
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
T0=$(date +%s)
BUDGET_S=${BUDGET_S:-560}
CARRY=$(pwd)/.devcarry
W=/tmp/zr4-sampler
OUT=${OUT:-/tmp/zr4-out}
mkdir -p "$W" "$OUT"
left() { echo $((BUDGET_S - ($(date +%s) - T0))); }
echo "== $(date -u +%FT%TZ) unpack"
if [ ! -d "$W/ComfyUI" ]; then
  tar -xJf "$CARRY/comfy.tar.xz" -C "$W"
  tar -xJf "$CARRY/site.tar.xz" -C "$W"
  mkdir -p "$W/bin" && xz -dc "$CARRY/ffmpeg.xz" > "$W/bin/ffmpeg" && chmod +x "$W/bin/ffmpeg"
  xz -dc "$CARRY/manifests.json.xz" > "$W/manifests.json"
fi
export PYTHONPATH="$W/site12" PATH="$W/bin:$PATH" VHS_FORCE_FFMPEG_PATH="$W/bin/ffmpeg"
B="$CARRY/bench"
{
  nvidia-smi --query-gpu=name,memory.total,driver_version,compute_cap --format=csv,noheader
  python3 -c "import torch, transformers, sys; print('torch', torch.__version__, 'cuda', torch.version.cuda, 'python', sys.version.split()[0], 'transformers', transformers.__version__)"
  "$W/bin/ffmpeg" -version 2>&1 | sed -n 1p
} 2>&1 | tee "$OUT/env.txt"
echo "== $(date -u +%FT%TZ) tokenizer + weights ($(left) s left)"
python3 "$B/tokenizer.py" --into "$W/ComfyUI/custom_nodes/ComfyUI-WanVideoWrapper/configs/T5_tokenizer"
LEVELS=$(for r in $RUNS; do echo "$r" | cut -d: -f4; done | sort -u)
ARGS=()
for l in $LEVELS; do [ -f "$W/ComfyUI/models/diffusion_models/.done-$l" ] || ARGS+=(--gguf "$l"); done
if [ -f "$W/ComfyUI/models/.done-others" ]; then ARGS+=(--skip-others); fi
if [ ${#ARGS[@]} -gt 0 ] && [ "${ARGS[*]}" != "--skip-others" ]; then
  (cd "$B" && python3 make_weights.py --manifests "$W/manifests.json" --models "$W/ComfyUI/models" "${ARGS[@]}") \
    | tee "$OUT/weights.json"
  for l in $LEVELS; do touch "$W/ComfyUI/models/diffusion_models/.done-$l"; done
  touch "$W/ComfyUI/models/.done-others"
fi
df -h /tmp | tail -1
seed=106060
for r in $RUNS; do
  IFS=: read -r name card plan level <<<"$r"
  remaining=$(left)
  if [ "$remaining" -lt 150 ]; then echo "== skip $name: $remaining s left"; continue; fi
  model=$(python3 -c "import sys; sys.path.insert(0, '$B'); from make_weights import FILES; print(FILES['$level'])")
  echo "== $(date -u +%FT%TZ) run $name (card $card MiB, $plan, $level; $remaining s left)"
  python3 "$B/run.py" --comfyui "$W/ComfyUI" --workflow docker/workflows/steadydancer-gguf.json \
    --plan "$CARRY/$plan" --model "$model" --video "$CARRY/inputs/driving.mp4" --image "$CARRY/inputs/reference.png" \
    --card-mib "$card" --name "$name" --seed "$seed" --run-timeout $((remaining - 40)) \
    --out "$W/$name.json" || echo "run $name failed: $?"
  if [ -f "$W/$name.json" ]; then cp "$W/$name.json" "$OUT/"; fi
  seed=$((seed + 1))
done
echo "== $(date -u +%FT%TZ) done ($(left) s left)"
(cd "$W" && tar -czf "$OUT/comfyui-logs.tgz" ./*.comfyui.log ./*.stats.jsonl 2>/dev/null) || echo "no ComfyUI logs"
