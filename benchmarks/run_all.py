"""Run every benchmark in sequence (each in its own process) and print a summary of targets."""

from __future__ import annotations

import argparse
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
BENCHMARKS = ("api_latency", "throughput", "freshness", "tail_level")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="pass --quick to every benchmark")
    parser.add_argument("only", nargs="*", help=f"run only these, of: {', '.join(BENCHMARKS)}")
    args = parser.parse_args(argv)
    unknown = set(args.only) - set(BENCHMARKS)
    if unknown:
        parser.error(f"unknown benchmark(s): {', '.join(sorted(unknown))}")
    names = args.only or list(BENCHMARKS)
    summary: list[tuple[str, int, float, list[str]]] = []
    for name in names:
        cmd = [sys.executable, str(HERE / f"{name}.py"), *(["--quick"] if args.quick else [])]
        print(f"\n=== {name} {'(quick)' if args.quick else ''}".rstrip(), flush=True)
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=HERE.parent, stdout=subprocess.PIPE, text=True)
        assert proc.stdout is not None
        verdicts: list[str] = []
        for line in proc.stdout:
            print(line, end="", flush=True)
            if line.startswith(("PASS ", "FAIL ")):
                verdicts.append(line.rstrip())
        rc = proc.wait()
        summary.append((name, rc, time.perf_counter() - t0, verdicts))
    print("\n=== summary")
    failed = 0
    for name, rc, seconds, verdicts in summary:
        fails = [v for v in verdicts if v.startswith("FAIL")]
        passes = len(verdicts) - len(fails)
        state = "ok" if rc == 0 else ("FAIL" if fails else f"ERROR (exit {rc})")
        failed += rc != 0
        print(f"{name:<12} {state:<16} {passes} passed, {len(fails)} failed, {seconds:.0f} s")
        for verdict in fails:
            print(f"    {verdict}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
