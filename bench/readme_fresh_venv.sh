#!/usr/bin/env bash
# The README's commands as a new user runs them: a fresh clone of this checkout's HEAD, a fresh venv
# holding only `pip install .` (no extras, not editable), then each command with its exit status and
# time. Docker itself needs a daemon; where there is none its line says so and buildah builds the
# network-free stage of the same context instead. Results: bench/results/readme.md.
#   bash bench/readme_fresh_venv.sh [PYTHON]
set -uo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
python="${1:-python3}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/zr4"
cd "$work/zr4" || exit 1
run() {
  echo "\$ $*"
  local start=$SECONDS code=0
  "$@" || code=$?
  echo "(exit $code, $((SECONDS - start)) s)"
  echo
}
"$python" -m venv "$work/venv"
export PATH="$work/venv/bin:$PATH"
echo "checkout $(git rev-parse --short HEAD), $("$python" --version)"
run pip install -q .
run zr4 render --profile 4080super
run zr4 render --profile 4080super --check
run zr4 validate --profile 4080super
run zr4 render --profile 4080super --out build/my-4080
run zr4 validate build/my-4080
run zr4 plan --profile 4080super
run zr4 build --profile 4080super --dry-run
run zr4 build --profile 4080super --engine buildah --out build/my-4080 --target context-files --tag zr4-readme:context-files
if command -v buildah >/dev/null; then buildah rmi zr4-readme:context-files >/dev/null 2>&1; fi
if docker info >/dev/null 2>&1; then
  run docker build -t zr4:4080super-zr4-0.1.0 build/my-4080
else
  echo "(docker build build/my-4080: no Docker daemon here; the buildah build of the same context is above)"
fi
