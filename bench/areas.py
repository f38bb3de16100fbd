"""Sums `perf report --sort dso,symbol` lines (read on stdin) by area of the
code, so that a profile says which stage the time is in. Used by
bench/profile-replay. The first pattern that matches a line wins."""

import re
import sys

AREAS = [
    ("kernel (page faults, reads, scheduling)", r"\[kernel|\[k\]"),
    ("zstd decompression", r"ZSTD_|zstd|HUF_|FSE_"),
    ("JSON parsing (serde_json, ingest's OTLP/JSON reader)", r"serde_json|serde::de|ingest::decode::json"),
    ("UTF-8 validation", r"from_utf8|utf8|run_utf8"),
    ("other decoding into Arrow (ingest)", r"ingest::"),
    ("allocation (mimalloc)", r"\bmi_|_mi_|mimalloc|malloc|\bfree\b|realloc|calloc"),
    ("memory copies", r"memcpy|memmove|memset|memcmp"),
    ("hashing and hash tables", r"ahash|hashbrown|foldhash|Hash"),
    ("DataFusion (plans, aggregates, filters)", r"datafusion"),
    ("Arrow kernels and builders", r"arrow"),
    ("the engine's windows and buffer", r"engine::window"),
    ("the engine's rules, evaluator, alerts", r"engine::"),
    ("tokio, channels, threads", r"tokio|crossbeam|std::sync|futures"),
]
LINE = re.compile(r"^\s*([\d.]+)%\s+(.*)$")


def main():
    totals = {}
    for line in sys.stdin:
        m = LINE.match(line)
        if not m:
            continue
        share, rest = float(m.group(1)), m.group(2)
        area = next((name for name, rx in AREAS if re.search(rx, rest)), "other")
        totals[area] = totals.get(area, 0.0) + share
    for area, share in sorted(totals.items(), key=lambda kv: -kv[1]):
        print(f"{share:6.1f}%  {area}")


if __name__ == "__main__":
    main()
