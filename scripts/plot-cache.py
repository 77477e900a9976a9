#!/usr/bin/env python3
"""Draws results/cache.png from results/cache.json (scripts/cache-bench.py
sizes) and prints the tables of results/cache.md.

    scripts/plot-cache.py                 # results/cache.png and the tables
    scripts/plot-cache.py --tables-only   # the tables alone (no matplotlib)

Without matplotlib, it makes a virtual environment under target/plot-venv,
installs matplotlib there with pip, and runs itself again inside it.
"""
import json
import os
import statistics
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
POLICIES = ["lru", "s3fifo", "lirs"]
MIB = 1 << 20


def load(name):
    with open(os.path.join(ROOT, "results", name)) as f:
        return [json.loads(line) for line in f if line.strip()]


def trace_name(r):
    return os.path.basename(r["trace"]).removesuffix(".trace")


def tables(runs):
    fixed = [r for r in runs if r["mode"] == "fixed"]
    traces = sorted({trace_name(r) for r in fixed})
    print("| trace | pages | policy | held | hit rate | FULL pages | output MiB | vs LRU "
          "| ratio | encode GB/s | checkpoint p50 / p99 ms |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for t in traces:
        for size in sorted({r["nominal_pages"] for r in fixed}):
            row = {r["cache_policy"]: r for r in fixed
                   if trace_name(r) == t and r["nominal_pages"] == size}
            lru = row["lru"]["output_bytes"]
            for p in POLICIES:
                r = row[p]
                print(f"| {t} | {size} | {p} | {r['cache_pages'][-1]} | {r['hit_rate']:.3f} "
                      f"| {r['full_pages']} | {r['output_bytes'] / MIB:.1f} "
                      f"| {100 * (r['output_bytes'] / lru - 1):+.1f}% | {r['ratio']:.2f} "
                      f"| {r['encode_gbps']:.2f} | {r['checkpoint_ms']['p50']:.2f} / "
                      f"{r['checkpoint_ms']['p99']:.2f} |")
    auto = [r for r in runs if r["mode"] == "auto"]
    print()
    print("| trace | policy | pages chosen (first compressed .. last; most) | cache MiB at most "
          "| hit rate | FULL pages | output MiB | ratio | vs LRU 8192 unseeded |")
    print("|---|---|---|---|---|---|---|---|---|")
    for r in auto:
        t = trace_name(r)
        base = next(b for b in fixed if trace_name(b) == t and b["cache_policy"] == "lru"
                    and b["nominal_pages"] == 8192)
        pages = r["cache_pages"]
        print(f"| {t} | {r['cache_policy']} | {pages[1]} .. {pages[-1]}; {max(pages[1:])} "
              f"| {r['cache_bytes'] / MIB:.1f} | {r['hit_rate']:.3f} | {r['full_pages']} "
              f"| {r['output_bytes'] / MIB:.1f} | {r['ratio']:.2f} | {base['ratio']:.2f} |")


def repeat_table(runs):
    print("| trace | policy | encode GB/s, runs in order | median | vs LRU's median |")
    print("|---|---|---|---|---|")
    for t in sorted({trace_name(r) for r in runs}):
        med = {}
        for p in POLICIES:
            g = [r["encode_gbps"] for r in runs if trace_name(r) == t and r["cache_policy"] == p]
            med[p] = statistics.median(g)
            print(f"| {t} | {p} | {' '.join(f'{x:.2f}' for x in g)} | {med[p]:.2f} "
                  f"| {100 * (med[p] / med['lru'] - 1):+.1f}% |")


def plot(runs):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fixed = [r for r in runs if r["mode"] == "fixed"]
    auto = [r for r in runs if r["mode"] == "auto"]
    traces = sorted({trace_name(r) for r in fixed})
    fig, axes = plt.subplots(2, len(traces), figsize=(4 * len(traces), 7), sharex=True)
    style = {"lru": ("tab:gray", "o"), "s3fifo": ("tab:blue", "s"), "lirs": ("tab:red", "^")}
    for col, t in enumerate(traces):
        for p in POLICIES:
            rs = sorted((r for r in fixed if trace_name(r) == t and r["cache_policy"] == p),
                        key=lambda r: r["nominal_pages"])
            xs = [r["nominal_pages"] for r in rs]
            color, marker = style[p]
            axes[0][col].plot(xs, [r["hit_rate"] for r in rs], color=color, marker=marker,
                              label=p)
            axes[1][col].plot(xs, [r["output_bytes"] / MIB for r in rs], color=color,
                              marker=marker, label=p)
            for r in auto:
                if trace_name(r) == t and r["cache_policy"] == p:
                    x = max(r["cache_pages"][1:])
                    axes[0][col].scatter([x], [r["hit_rate"]], color=color, marker="*", s=160,
                                         edgecolors="black", zorder=3)
                    axes[1][col].scatter([x], [r["output_bytes"] / MIB], color=color,
                                         marker="*", s=160, edgecolors="black", zorder=3)
        axes[0][col].set_title(t)
        axes[0][col].set_ylim(-0.02, 1.02)
        axes[1][col].set_ylim(bottom=0)
        axes[1][col].set_xscale("log", base=2)
        axes[1][col].set_xlabel("cache size, pages")
    axes[0][0].set_ylabel("hit rate (normal pages)")
    axes[1][0].set_ylabel("output, MiB (compressed checkpoints)")
    axes[0][0].legend(title="policy")
    fig.suptitle("Delta cache: policies at fixed sizes (lines, unseeded); "
                 "seeded adaptive size under 512 MiB (stars, at the largest size chosen)")
    fig.tight_layout()
    out = os.path.join(ROOT, "results", "cache.png")
    fig.savefig(out, dpi=90)
    print(f"wrote {out}", file=sys.stderr)


def main():
    runs = load("cache.json")
    tables(runs)
    if os.path.exists(os.path.join(ROOT, "results", "cache-repeat.json")):
        print()
        repeat_table(load("cache-repeat.json"))
    if "--tables-only" in sys.argv:
        return
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        venv = os.path.join(ROOT, "target", "plot-venv")
        py = os.path.join(venv, "bin", "python")
        if sys.executable == py:
            sys.exit("matplotlib did not install into target/plot-venv")
        if not os.path.exists(py):
            subprocess.run([sys.executable, "-m", "venv", venv], check=True)
            subprocess.run([py, "-m", "pip", "install", "-q", "matplotlib"], check=True)
        os.execv(py, [py, __file__, "--plot-only"])
    plot(runs)


if __name__ == "__main__":
    if "--plot-only" in sys.argv:
        plot(load("cache.json"))
    else:
        main()
