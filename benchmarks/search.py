"""Search of a full 50 MB rotated log vs grep over the same files, side by side in one run.

Builds one job's log with the real ``JobLogStore`` (5 kept segments of 10 MB, written past
full so rotation has deleted the oldest): realistic records in worker-sized batches (HTTP
access lines, SQL timings, retries, cache notes, an occasional traceback) at mixed levels,
with a needle (``NEEDLE-<n> …``) in one record of ~5,000. Then, alternating, each query
``--repeat`` times: ``grep -F -c`` (``-E`` for the regex, ``-i`` for ignore_case) over the
segment files, and jobtrail's search through the store (``JobLogStore.search``, what
``GET /logs/search`` runs, counting ``total_matches`` over the whole kept log). Medians,
p95 and the ratio to grep are printed; both must count the same.

Target: a plain substring within 5x ``grep -F -c``. The regex and ignore_case rows, and a
regex with no literal to pre-check (``[0-9a-f]{12}``: each line holding a match, or an escape
other than a quote, is decoded), are measured and shown without one.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _stats import Checks, pct, table

from jobtrail.logstore import JobLogStore, search_query
from jobtrail.records import LEVEL_BITS, TimestampFormatter, encode_record

MIB = 1024 * 1024
JOB = "bench-0123456789ab"
NEEDLE_EVERY = 5000
SUBSTRING_LIMIT = 5.0

LOGGERS = ["app.http", "app.db", "app.cache", "worker.queue", "urllib3.connectionpool"]
PATHS = ["/api/orders", "/api/users/{}", "/health", "/api/carts/{}/items", "/static/app.js"]
TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "/srv/app/orders.py", line {}, in submit\n'
    "    conn.execute(query)\n"
    "ConnectionResetError: [Errno 104] Connection reset by peer"
)


def message(rng: random.Random, n: int) -> tuple[str, str, str]:
    """(level, logger, message) of record ``n``."""
    kind = rng.random()
    if n % NEEDLE_EVERY == 0:
        return "ERROR", "app.orders", f"NEEDLE-{n} order {rng.getrandbits(32):08x} lost"
    if kind < 0.45:
        path = rng.choice(PATHS).format(rng.randint(1, 99999))
        status = rng.choice([200, 200, 200, 201, 204, 304, 404, 500])
        return (
            "INFO",
            "app.http",
            f'10.0.{rng.randint(0, 255)}.{rng.randint(1, 254)} "GET {path} HTTP/1.1" '
            f"{status} {rng.randint(120, 90000)} {rng.random() * 300:.1f}ms",
        )
    if kind < 0.70:
        return (
            "DEBUG",
            "app.db",
            f"SELECT id, state FROM orders WHERE customer_id = {rng.randint(1, 10**6)} "
            f"took {rng.random() * 40:.2f} ms ({rng.randint(0, 50)} rows)",
        )
    if kind < 0.85:
        return "INFO", "app.cache", f"cache miss for key user:{rng.getrandbits(40):x}, filled"
    if kind < 0.97:
        return (
            "WARNING",
            "urllib3.connectionpool",
            f"Retrying (Retry(total={rng.randint(0, 4)})) after connection broken by "
            f"'ReadTimeoutError(\"read timed out\")': /v1/charge/{rng.getrandbits(24):x}",
        )
    return (
        "ERROR",
        "worker.queue",
        f"task {rng.getrandbits(48):x} failed\n" + TRACEBACK.format(rng.randint(10, 400)),
    )


def build_log(root: Path, segment_bytes: int, segments: int) -> tuple[JobLogStore, list[Path]]:
    """Write until rotation has removed segments and the newest one is full too, so
    ``segments`` full ones are kept."""
    store = JobLogStore(root, max_segment_bytes=segment_bytes, max_segments=segments)
    rng = random.Random(14)
    stamp = TimestampFormatter()
    seq, now = 0, time.time() - 3600
    target = segment_bytes * (segments + 1)
    written, newest = 0, 0
    directory = store.log_path(JOB)
    while written < target or newest < segment_bytes - 256 * 1024:
        lines, mask, first = [], 0, seq + 1
        for _ in range(200):  # about what a worker sends in one batch
            seq += 1
            now += 0.0005
            level, logger, text = message(rng, seq)
            lines.append(encode_record(seq, stamp(now), level, logger, text, "MainThread"))
            mask |= LEVEL_BITS[level]
        payload = "".join(lines).encode()
        store.append(JOB, payload, first, len(lines), mask)
        written += len(payload)
        if written >= target:
            newest = max(directory.glob("*.jsonl")).stat().st_size
    store.close_job(JOB)
    files = sorted(store.log_path(JOB).glob("*.jsonl"))
    return store, files


def grep(flags: str, pattern: str, files: list[Path]) -> int:
    """Matching lines of all files; LC_ALL=C, grep's fastest mode (no UTF-8 decoding)."""
    out = subprocess.run(
        ["grep", flags, "-c", "-h", "--", pattern, *map(str, files)],
        capture_output=True,
        text=True,
        check=False,
        env={**os.environ, "LC_ALL": "C"},
    ).stdout
    return sum(int(n) for n in out.split())


def search(store: JobLogStore, q: str, regex: bool, ignore_case: bool) -> int:
    page = store.search(JOB, search_query(q, regex=regex, ignore_case=ignore_case))
    assert page.total_matches is not None
    return page.total_matches


QUERIES = [  # (name, q, regex, ignore_case, grep flags, target ratio or None)
    ("substring", "NEEDLE", False, False, "-F", SUBSTRING_LIMIT),
    ("regex", r"NEEDLE-[0-9]+ order", True, False, "-E", None),
    ("ignore_case", "needle", False, True, "-iF", None),
    ("regex, no literal", r"[0-9a-f]{12}", True, False, "-E", None),
]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="5 x 1 MB segments (smoke test)")
    parser.add_argument("--repeat", type=int, default=7, help="runs of each query and of grep")
    args = parser.parse_args(argv)
    segment = (1 if args.quick else 10) * MIB
    checks = Checks("search")
    with tempfile.TemporaryDirectory(prefix="jobtrail-search-") as tmp:
        t0 = time.perf_counter()
        store, files = build_log(Path(tmp), segment, 5)
        size = sum(f.stat().st_size for f in files)
        stats = store.stats(JOB)
        print(
            f"log: {len(files)} segments, {size / MIB:.1f} MiB of records, seqs "
            f"{stats.first_seq}-{stats.last_seq} kept (built in {time.perf_counter() - t0:.1f} s)",
            flush=True,
        )
        for f in files:  # into the page cache, for grep and jobtrail alike
            f.read_bytes()
        rows = []
        for name, q, regex, ignore_case, flags, limit in QUERIES:
            runs: dict[str, list[float]] = {"grep": [], "jobtrail": []}
            counts: dict[str, int] = {}
            for _ in range(args.repeat):
                for who in ("grep", "jobtrail"):
                    started = time.perf_counter()
                    if who == "grep":
                        counts[who] = grep(flags, q, files)
                    else:
                        counts[who] = search(store, q, regex, ignore_case)
                    runs[who].append(time.perf_counter() - started)
            g, j = (statistics.median(runs[w]) * 1000 for w in ("grep", "jobtrail"))
            ratio = j / g
            rows.append([name, f"grep {flags} -c", counts["grep"], counts["jobtrail"], g,
                         pct([r * 1000 for r in runs["grep"]], 95), j,
                         pct([r * 1000 for r in runs["jobtrail"]], 95), f"{ratio:.2f}x",
                         f"<= {limit:g}x" if limit else "-"])  # fmt: skip
            checks.check(counts["grep"] == counts["jobtrail"], f"{name}: same count as grep")
            if limit is not None:
                checks.check(ratio <= limit, f"{name}: {ratio:.2f}x grep (target <= {limit:g}x)")
        print(table(["query", "baseline", "grep n", "jobtrail n", "grep median ms", "grep p95",
                     "jobtrail median ms", "jobtrail p95", "ratio", "target"], rows))  # fmt: skip
    return checks.exit_code()


if __name__ == "__main__":
    sys.exit(main())
