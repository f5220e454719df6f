#!/usr/bin/env bash
# Build the device machine's carry folder (at most 64 MiB together with the repository): the
# pinned ComfyUI + node packs (tests, images and model files they never load left out), the
# wheels the device image lacks unpacked into one site folder (imageio-ffmpeg among them: the
# static ffmpeg VHS_VideoCombine finds through imageio_ffmpeg.get_ffmpeg_exe(), as in the image),
# the tensor manifests, the inputs and these scripts. Plans and workflows come from workflows.py.
#   bench/sampler/pack.sh SOURCES WHEELS MANIFESTS INPUTS DEST
#   SOURCES: folder holding ComfyUI/ (bench/sources.py); WHEELS: folder of cp312 manylinux wheels
#   (bench/results/sampler.md lists them); MANIFESTS: manifest.py's output; INPUTS: driving.mp4 and
#   reference.png; DEST: the carry folder (keep it out of git).
set -euo pipefail
SOURCES=$1 WHEELS=$2 MANIFESTS=$3 INPUTS=$4 DEST=$5
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$DEST/bench" "$DEST/inputs"
tar -C "$SOURCES" -cf - --exclude=.git --exclude=__pycache__ --exclude=tests --exclude=tests-unit \
  --exclude=.github --exclude=example_workflows --exclude='*.png' --exclude='*.jpg' --exclude='*.gif' \
  --exclude='*.mp4' --exclude='*.webp' --exclude='*.safetensors' --exclude='*.onnx' --exclude='*.ttf' \
  --exclude='*.otf' --exclude='ComfyUI/comfy/text_encoders/*_tokenizer' --exclude='ComfyUI/comfy/sd1_tokenizer' \
  --exclude='ComfyUI/custom_nodes/ComfyUI-WanVideoWrapper/qwen/tokenizer' ComfyUI \
  | xz -9e -T2 > "$DEST/comfy.tar.xz"
site=$(mktemp -d)
mkdir -p "$site/site12"
for w in "$WHEELS"/*.whl; do python3 -m zipfile -e "$w" "$site/site12"; done
# zipfile drops the executable bit
chmod +x "$site"/site12/imageio_ffmpeg/binaries/ffmpeg-*
find "$site/site12" -name __pycache__ -prune -exec rm -rf {} +
tar -C "$site" -cf - site12 | xz -9e -T2 > "$DEST/site.tar.xz"
rm -rf "$site"
xz -9e -T2 -c "$MANIFESTS" > "$DEST/manifests.json.xz"
cp "$INPUTS/driving.mp4" "$INPUTS/reference.png" "$DEST/inputs/"
cp "$HERE"/*.py "$HERE"/device.sh "$DEST/bench/"
du -cb "$DEST" | tail -1
