"""The stdout path in the job's process: lines written to fd 1, read, numbered and spooled.

Each round runs a fresh process per source tree (``--src DIR``, repeatable; the first is
the "after"): it sets up a batcher with a spool and no listener (``send`` does nothing),
starts ``StreamCapture`` on fd 1 and 2, writes ``--lines`` lines of 60 bytes to fd 1 in 4 KiB
writes and times until the readers turned them all into records (``sync``), with the process's CPU
time (all threads). Trees alternate within a round; medians per tree and their ratios to
the first are printed with the load.

    python benchmarks/stdout_capture.py --src src --src /tmp/before/src --rounds 5
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import textwrap

CHILD = textwrap.dedent(
    """
    import inspect, os, resource, sys, tempfile, time
    from jobtrail.worker import spool as sp
    from jobtrail.worker.batcher import RecordBatcher
    from jobtrail.worker.streams import StreamCapture
    lines = int(sys.argv[1])
    path = os.path.join(tempfile.mkdtemp(), "s.spool")
    sp.create(path)
    spool = sp.Spool(path)
    batcher = RecordBatcher(lambda message: None, spool=spool)
    batcher.begin_job("bench")
    params = inspect.signature(StreamCapture).parameters
    capture = StreamCapture(batcher, spool) if "spool" in params else StreamCapture(batcher)
    out = os.dup(1)
    capture.start()
    line = b"x" * 59 + b"\\n"
    chunk = line * (4096 // len(line))
    cpu0 = resource.getrusage(resource.RUSAGE_SELF)
    t0 = time.perf_counter()
    for _ in range(lines // (4096 // len(line))):
        os.write(1, chunk)
    assert capture.sync(timeout=120.0)
    seconds = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    os.write(out, f"{seconds} {cpu}\\n".encode())
    """
)


def one(src: str, lines: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the whole process) of one run."""
    env = dict(
        os.environ, PYTHONPATH=os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))
    )
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(lines)], env=env, capture_output=True, check=True
    )
    wall, cpu = done.stdout.decode().split()[-2:]
    return float(wall), float(cpu)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", action="append", required=True, help="a tree's src directory")
    parser.add_argument("--lines", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    rates: dict[str, list[float]] = {src: [] for src in args.src}
    cpus: dict[str, list[float]] = {src: [] for src in args.src}
    for r in range(args.rounds):
        order = args.src if r % 2 == 0 else list(reversed(args.src))
        for src in order:
            wall, cpu = one(src, args.lines)
            rates[src].append(args.lines / wall)
            cpus[src].append(cpu / args.lines * 1e6)
            print(
                f"round {r + 1} {src}: {args.lines / wall:,.0f} lines/s, "
                f"{cpus[src][-1]:.2f} us CPU/line  load {os.getloadavg()[0]:.1f}"
            )
    first = statistics.median(rates[args.src[0]])
    first_cpu = statistics.median(cpus[args.src[0]])
    for src, values in rates.items():
        med, cpu = statistics.median(values), statistics.median(cpus[src])
        print(
            f"{src}: median {med:,.0f} lines/s ({min(values):,.0f}-{max(values):,.0f}), "
            f"{med / first:.2f}x the first; {cpu:.2f} us CPU/line, {cpu / first_cpu:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
