#!/usr/bin/env python3
"""Runs `ckpt bench --json` over the delta-cache settings that
results/cache.md reports, and writes one JSON object per run.

    scripts/cache-bench.py sizes  > results/cache.json       # every trace, policy, size
    scripts/cache-bench.py repeat > results/cache-repeat.json # encode speed, alternated

`sizes`: every bundled trace with each policy at 2048, 8192, 32768 and
131072 pages (no seeding: the policy alone), then each policy with seeding
and the adaptive size under a 512 MiB budget; one run each, the policies
taking turns at each trace and size. `repeat`: the same settings several
times over (REPEAT, default 5), LRU and the other policies alternating run
by run, for encode throughput medians on a busy machine.

Each object is the bench's report plus `mode` ("fixed" or "auto") and
`nominal_pages` (the size asked for; ghost-keeping policies hold a little
less, see docs/FORMAT.md §2.5). Uses target/release/ckpt (built first).
"""
import json
import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CKPT = os.path.join(ROOT, "target", "release", "ckpt")
POLICIES = ["lru", "s3fifo", "lirs"]
SIZES = [2048, 8192, 32768, 131072]
TRACES = ["gcc", "postgres", "python", "redis"]


def bench(trace, policy, pages, seed):
    args = [
        CKPT, "bench", "--json", "--threads", "1",
        "--trace", os.path.join(ROOT, "traces", trace + ".trace"),
        "--cache-policy", policy, "--cache-pages", str(pages),
    ]
    if not seed:
        args.append("--no-cache-seed")
    out = subprocess.run(args, check=True, capture_output=True, text=True).stdout
    report = json.loads(out)
    report["mode"] = "auto" if pages == "auto" else "fixed"
    report["nominal_pages"] = None if pages == "auto" else pages
    print(json.dumps(report), flush=True)
    print(f"{trace} {policy} {pages} seed={seed}: ratio {report['ratio']:.2f}, "
          f"hit {report['hit_rate']:.3f}, {report['encode_gbps']:.2f} GB/s",
          file=sys.stderr, flush=True)


def main():
    what = sys.argv[1] if len(sys.argv) > 1 else "sizes"
    subprocess.run(["cargo", "build", "--release", "-q"], cwd=ROOT, check=True)
    if what == "sizes":
        for trace in TRACES:
            for pages in SIZES:
                for policy in POLICIES:
                    bench(trace, policy, pages, seed=False)
        for trace in TRACES:
            for policy in POLICIES:
                bench(trace, policy, "auto", seed=True)
    elif what == "repeat":
        repeat = int(os.environ.get("REPEAT", "5"))
        traces = os.environ.get("TRACES", "redis python").split()
        pages = int(os.environ.get("PAGES", "8192"))
        for _ in range(repeat):
            for trace in traces:
                for policy in POLICIES:
                    bench(trace, policy, pages, seed=False)
    else:
        sys.exit(f"unknown job {what!r}: sizes or repeat")


if __name__ == "__main__":
    main()
