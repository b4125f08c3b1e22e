"""Run every ``benchmarks/bench_*.py`` in turn and print what each prints.

Run from anywhere: ``.venv/bin/python benchmarks/run_all.py [name ...]`` (``make bench``);
names pick a subset, e.g. ``run_all.py ingest can_decode``. Each benchmark runs in its
own process with this interpreter, one after the other so they do not compete for the
cores, with the project root as working directory. The exit status is 1 when any of
them failed, so CI notices a broken benchmark; the figures themselves are not judged.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent


def benchmarks(names: list[str]) -> list[Path]:
    """The benchmark scripts, all or those named (with or without the bench_ prefix)."""
    found = sorted(HERE.glob("bench_*.py"))
    if not names:
        return found
    wanted = {name.removeprefix("bench_").removesuffix(".py") for name in names}
    chosen = [path for path in found if path.stem.removeprefix("bench_") in wanted]
    unknown = wanted - {path.stem.removeprefix("bench_") for path in chosen}
    if unknown:
        available = ", ".join(path.stem.removeprefix("bench_") for path in found)
        raise SystemExit(f"No benchmark named {', '.join(sorted(unknown))}; have {available}")
    return chosen


def main() -> int:
    scripts = benchmarks(sys.argv[1:])
    failed = []
    for script in scripts:
        print(f"=== {script.name} ===", flush=True)
        started = time.monotonic()
        # Output goes straight through, so long benchmarks show progress as they run.
        returncode = subprocess.run([sys.executable, str(script)], cwd=ROOT).returncode
        took = time.monotonic() - started
        verdict = "done" if returncode == 0 else f"FAILED (exit status {returncode})"
        print(f"=== {script.name}: {verdict} in {took:.0f} s ===\n", flush=True)
        if returncode:
            failed.append(script.name)
    if failed:
        print(f"{len(failed)} of {len(scripts)} benchmarks failed: {', '.join(failed)}")
        return 1
    print(f"All {len(scripts)} benchmarks ran.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
