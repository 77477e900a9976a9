#!/usr/bin/env python3
"""Runs `ckpt bench` on every bundled trace with the built-in defaults and
with a tuned configuration, alternating run by run so that both see the
same machine, and prints the medians as a Markdown table (results/tuning.md).

    scripts/tuning-bench.py --ckpt target/release/ckpt --tuned results/tuned.toml --rounds 7
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile

TRACES = ["gcc", "postgres", "python", "redis"]


def bench(ckpt, config, trace, env):
    out = subprocess.run(
        [ckpt, "--quiet", "--config", config, "bench", "--json", "--trace", trace],
        check=True, capture_output=True, env=env, text=True,
    ).stdout
    return json.loads(out)["traces"][0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--ckpt", default="target/release/ckpt")
    p.add_argument("--tuned", required=True)
    p.add_argument("--traces", default="traces")
    p.add_argument("--rounds", type=int, default=7)
    a = p.parse_args()
    # Only the file decides: no CKPT_* variable and no default file.
    env = {k: v for k, v in os.environ.items() if not k.startswith("CKPT_")}
    empty = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    empty.close()
    runs = {(t, c): [] for t in TRACES for c in ("default", "tuned")}
    for r in range(a.rounds):
        for t in TRACES:
            path = os.path.join(a.traces, t + ".trace")
            # Alternate which goes first, round by round.
            order = [("default", empty.name), ("tuned", a.tuned)]
            if r % 2:
                order.reverse()
            for name, cfg in order:
                runs[(t, name)].append(bench(a.ckpt, cfg, path, env))
    os.unlink(empty.name)
    med = lambda xs: statistics.median(xs)
    print("| trace | config | encode GB/s (median, min-max) | ratio | checkpoint p50 ms | tuned / default encode |")
    print("|---|---|---|---|---|---|")
    for t in TRACES:
        d = [x["encode_gbps"] for x in runs[(t, "default")]]
        for name in ("default", "tuned"):
            rs = runs[(t, name)]
            g = [x["encode_gbps"] for x in rs]
            ratio = med([x["ratio"] for x in rs])
            p50 = med([x["checkpoint_ms"]["p50_ms"] for x in rs])
            rel = f"{med(g) / med(d):.2f}" if name == "tuned" else ""
            print(f"| {t} | {name} | {med(g):.2f} ({min(g):.2f}-{max(g):.2f}) | {ratio:.2f} | {p50:.2f} | {rel} |")


if __name__ == "__main__":
    main()
