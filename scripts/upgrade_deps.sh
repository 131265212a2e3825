#!/usr/bin/env bash
# make upgrade-deps: re-resolve moesaic[all,dev] to the newest versions pyproject.toml allows, install them in a
# throw-away venv exactly as `make setup` would, run the whole test suite there, and replace the lock file only
# when the suite passes. Usage: upgrade_deps.sh PYTHON TORCH_SPEC LOCK
set -euo pipefail
py=${1:-python3.11}; torch_spec=${2:-torch==2.13.0}; lock=${3:-requirements/lock.txt}
cd "$(dirname "$0")/.."
work=$(mktemp -d "${TMPDIR:-/tmp}/moesaic-upgrade.XXXXXX")
trap 'rm -rf "$work"' EXIT
cp "$lock" "$work/lock.txt"
bash scripts/lock_deps.sh "$work/lock.txt" --upgrade
echo "[upgrade-deps] changes against $lock:"; diff <(grep -v '^#' "$lock") <(grep -v '^#' "$work/lock.txt") || true
"$py" -m venv "$work/venv"
bin=$work/venv/bin
"$bin/python" -m pip install -q --upgrade pip
"$bin/python" -m pip install -q "$torch_spec" "uv>=0.5"
"$bin/uv" pip install -q --python "$bin/python" --no-deps -r "$work/lock.txt"
"$bin/uv" pip install -q --python "$bin/python" --no-deps -e .
"$bin/python" -m pip check
if ! PATH="$bin:$PATH" "$bin/python" -m pytest -q -p no:cacheprovider; then
  echo "[upgrade-deps] the suite failed with the new versions: $lock left unchanged" >&2
  "$bin/uv" pip install -q --python "$bin/python" --no-deps -e . >/dev/null 2>&1 || true
  exit 1
fi
mv "$work/lock.txt" "$lock"
echo "[upgrade-deps] the suite passed; wrote $lock"
