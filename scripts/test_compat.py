"""Run moesaic's transformers-facing tests against several transformers releases and print a table.

Usage (from the repository root, after ``make setup``)::

    .venv/bin/python scripts/test_compat.py                       # the versions in VERSIONS + the newest
    .venv/bin/python scripts/test_compat.py 5.23.0 5.24.0        # chosen versions

For each version a throw-away venv is made under ``$TMPDIR/moesaic-compat/``: it sees the project's venv
(every other package at its locked version) but has that transformers release installed in front of it
(``--no-deps``, so a release whose new dependencies are missing is still tested and the table says so).
Exit status 1 when any version fails, so ``make test-compat`` can gate a pin change.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shlex
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
VERSIONS = ["5.23.0", "5.24.0", "5.25.0"]
# tests that call transformers' models, generation, processors, cache or experts interfaces
TESTS = [
    "tests/moe",
    "tests/test_backend_hf.py",
    "tests/test_backend_vilt_git.py",
    "tests/test_factories.py",
    "tests/test_experts_llm.py",
    "tests/finetune",
    "tests/serve/test_serve_hf.py",
    "tests/eval/test_eval_tiny_vlms.py",
    "tests/eval/test_quality_study.py",
    "tests/tasks/test_tasks_vlm.py",
]


def newest_release() -> str | None:
    """The newest transformers on the index (``pip index versions``), or None when it cannot be asked."""
    out = subprocess.run([sys.executable, "-m", "pip", "index", "versions", "transformers"],
                         capture_output=True, text=True, check=False).stdout
    match = re.search(r"transformers \(([^)]+)\)", out)
    return match.group(1) if match else None


def missing_requirements(python: Path, version: str) -> list[str]:
    """Requirements of that transformers release that the venv does not satisfy (from its metadata)."""
    code = (
        "import importlib.metadata as md, json\n"
        "from packaging.requirements import Requirement\n"
        "bad = []\n"
        "for r in md.requires('transformers') or []:\n"
        "    req = Requirement(r)\n"
        "    if req.marker and not req.marker.evaluate({'extra': ''}): continue\n"
        "    try: v = md.version(req.name)\n"
        "    except md.PackageNotFoundError: bad.append(f'{req} (absent)'); continue\n"
        "    if not req.specifier.contains(v, prereleases=True): bad.append(f'{req} (have {v})')\n"
        "print(json.dumps(bad))\n"
    )
    out = subprocess.run([str(python), "-c", code], capture_output=True, text=True, check=False)
    return json.loads(out.stdout) if out.returncode == 0 else [out.stderr.strip()[-200:]]


def _link_scripts(project_bin: Path, python: Path) -> None:
    """Copies of the project venv's console scripts (torchrun, moesaic, ...) that run under ``python``, so
    tests that start them as subprocesses use this venv's transformers too."""
    for script in project_bin.iterdir():
        target = python.parent / script.name
        if target.exists() or not script.is_file():
            continue
        try:
            first, _, rest = script.read_text(encoding="utf-8").partition("\n")
        except (UnicodeDecodeError, OSError):
            continue  # a binary (uv, ...): not a Python entry point
        if first.startswith("#!") and "python" in first:
            target.write_text(f"#!{python}\n{rest}", encoding="utf-8")
            target.chmod(0o755)


def make_venv(version: str, root: Path) -> Path:
    """A venv seeing the project's packages, with transformers==version installed in front."""
    venv = root / f"transformers-{version}"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
        site = Path(subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   capture_output=True, text=True, check=True).stdout.strip())
        base = sysconfig.get_paths()["purelib"]  # the project venv's site-packages (its .pth files too)
        (site / "_moesaic_project.pth").write_text(f"import site; site.addsitedir({base!r})\n")
        _link_scripts(Path(sys.executable).parent, python)
    subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps",
                    "--upgrade", f"transformers=={version}"], check=True)
    return python


def run_tests(python: Path, tests: list[str], extra: list[str], log_path: Path) -> dict[str, object]:
    """pytest in that venv; its whole output goes to ``log_path`` (follow it with tail -f)."""
    started = time.monotonic()
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    with log_path.open("w", encoding="utf-8") as log:
        proc = subprocess.run([str(python), "-m", "pytest", "-q", "-rfE", "-p", "no:cacheprovider", *extra, *tests],
                              cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT, text=True, check=False)
    lines = log_path.read_text(encoding="utf-8", errors="replace").strip().splitlines()
    tail = lines[-1] if lines else "no output"
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped)", tail)}
    failed = [line.split()[1] for line in lines if line.startswith(("FAILED ", "ERROR "))]
    return {"rc": proc.returncode, "summary": tail, "counts": counts, "failed": failed,
            "seconds": round(time.monotonic() - started, 1)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("versions", nargs="*", help="transformers versions (default: %s + the newest)" % VERSIONS)
    parser.add_argument("--pytest-args", default="", help="extra pytest arguments, e.g. '-m \"not slow\"'")
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--tests", nargs="+", default=TESTS, help="test paths (default: the transformers-facing ones)")
    args = parser.parse_args()
    versions = args.versions or VERSIONS + [v for v in [newest_release()] if v and v not in VERSIONS]
    root = Path(os.environ.get("MOESAIC_COMPAT_DIR", Path(tempfile.gettempdir()) / "moesaic-compat"))
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    for version in versions:
        print(f"[compat] transformers {version}: installing", flush=True)
        try:
            python = make_venv(version, root)
        except subprocess.CalledProcessError as err:
            rows.append({"version": version, "rc": 2, "summary": f"install failed: {err}", "counts": {},
                         "failed": [], "seconds": 0.0, "missing": []})
            continue
        missing = missing_requirements(python, version)
        log_path = root / f"transformers-{version}.log"
        print(f"[compat] transformers {version}: running {len(args.tests)} test paths (output: {log_path})", flush=True)
        result = run_tests(python, args.tests, shlex.split(args.pytest_args), log_path)
        rows.append({"version": version, "missing": missing, **result})
        print(f"[compat] transformers {version}: {result['summary']}", flush=True)
    print()
    print("| transformers | passed | failed | skipped | minutes | unmet requirements (installed --no-deps) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        c = r["counts"]
        failed = int(c.get("failed", 0)) + int(c.get("error", 0)) + int(c.get("errors", 0))  # type: ignore[call-overload]
        unmet = ", ".join(r["missing"]) or "none"  # type: ignore[arg-type]
        print(f"| {r['version']} | {c.get('passed', 0)} | {failed} | {c.get('skipped', 0)} | "
              f"{float(r['seconds']) / 60:.1f} | {unmet} |")  # type: ignore[arg-type]
        if not c:
            print(f"|   | {r['summary']} | | | | |")
        for name in r["failed"]:  # type: ignore[attr-defined]
            print(f"|   | failed: {name} | | | | |")
    if args.json:
        args.json.write_text(json.dumps(rows, indent=2))
    return 0 if all(r["rc"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
