#!/usr/bin/env bash
# Build the device machine's carry folder (at most 64 MiB together with the repository): the
# pinned ComfyUI + node packs (data files of models this workflow never loads left out), the
# wheels the device image lacks unpacked into one site folder, a static ffmpeg for
# VHS_VideoCombine's mp4, and these scripts. The caller adds manifests.json.xz (manifest.py),
# the plans to run (`zr4 plan --json ...` as plan-*.json) and inputs/ (the example clip cut to
# 6 s at 16 fps and 480x832, the reference photo scaled to 832 px high).
#   bench/sampler/pack.sh SOURCES WHEELS FFMPEG DEST
#   SOURCES: folder holding ComfyUI/ (bench/sources.py); WHEELS: folder of cp312 manylinux wheels
#   (see bench/results/sampler.md for the list); FFMPEG: a static x86-64 ffmpeg binary;
#   DEST: the carry folder (keep it out of git).
set -euo pipefail
SOURCES=$1 WHEELS=$2 FFMPEG=$3 DEST=$4
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$DEST/bench"
tar -C "$SOURCES" -cf - --exclude=.git --exclude=tests --exclude=tests-unit --exclude=.github \
  --exclude=example_workflows --exclude='*.png' --exclude='*.jpg' --exclude='*.gif' --exclude='*.mp4' \
  --exclude='*.webp' --exclude='*.safetensors' --exclude='*.onnx' --exclude='*.ttf' --exclude='*.otf' \
  --exclude='ComfyUI/comfy/text_encoders/*_tokenizer' --exclude='ComfyUI/comfy/sd1_tokenizer' \
  --exclude='ComfyUI/custom_nodes/ComfyUI-WanVideoWrapper/qwen/tokenizer' ComfyUI \
  | xz -9e -T0 > "$DEST/comfy.tar.xz"
site=$(mktemp -d)
mkdir -p "$site/site12"
for w in "$WHEELS"/*.whl; do python3 -m zipfile -e "$w" "$site/site12"; done
tar -C "$site" -cf - site12 | xz -9e -T0 > "$DEST/site.tar.xz"
rm -rf "$site"
xz -9e -T0 -c "$FFMPEG" > "$DEST/ffmpeg.xz"
cp "$HERE"/*.py "$HERE"/device.sh "$DEST/bench/"
du -cb "$DEST" | tail -1
