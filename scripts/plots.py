"""Draws results/*.svg from the JSON documents `ckpt` prints.

Run through scripts/plots.sh, which makes its own Python environment with
matplotlib. Inputs (each one JSON document, as the tool prints it):

    results/kernels.json   ckpt kernels --bench --json
    results/bench.json     ckpt bench --all --json

Outputs:

    results/kernels.svg         encode and decode throughput against the
                                density of changed words, per kernel, with
                                the memory floor as a line
    results/bench-bytes.svg     stream bytes per checkpoint over time, per
                                trace, split into FULL pages, deltas and the
                                rest (PFN batches, chunk headers, trailers)
    results/bench-latency.svg   distribution of staging (pause) and whole
                                checkpoint latency per trace, one point per
                                checkpoint
"""

import json
import sys
from pathlib import Path

import matplotlib

matplotlib.use("svg")
import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.ticker import FuncFormatter  # noqa: E402

# Reproducible files: no date, fixed ids.
plt.rcParams["svg.hashsalt"] = "ckpt"
plt.rcParams["font.size"] = 9
METADATA = {"Date": None, "Creator": None}
MIB = float(1 << 20)
# Plain numbers on log axes (0.5, 2, 200), not powers of ten.
PLAIN = FuncFormatter(lambda v, _: ("%g" % v))


def plain_log(axis):
    axis.set_major_formatter(PLAIN)
    axis.set_minor_formatter(FuncFormatter(lambda v, _: ("%g" % v) if str("%g" % v)[0] in "25" else ""))


def load(path):
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def kernels(doc, out):
    floor = {f["density_pct"]: f["floor"] for f in doc["floor"]}
    densities = sorted(floor)
    x = list(range(len(densities)))
    fig, (enc, dec) = plt.subplots(1, 2, figsize=(10, 4), sharex=True)
    for ax, op in ((enc, "encode"), (dec, "decode")):
        fl = [floor[d]["gbps"] for d in densities]
        ax.plot(x, fl, "k--", linewidth=1.5, label="floor: read both pages")
        for k in doc["kernels"]:
            by = {d["density_pct"]: d[op] for d in k["densities"]}
            # A pass too short to time has no rate: leave a gap.
            y = [by[d]["gbps"] if by[d]["gbps"] is not None else float("nan") for d in densities]
            style = "-o" if k["name"] == doc["dispatch"] else "-."
            ax.plot(x, y, style, markersize=4, label=k["name"] + (" (dispatch)" if k["name"] == doc["dispatch"] else ""))
        ax.set_xticks(x, [f"{d}%" for d in densities])
        ax.set_xlabel("words changed per page")
        ax.set_ylabel("GB/s of page bytes")
        ax.set_yscale("log")
        plain_log(ax.yaxis)
        ax.grid(True, which="both", alpha=0.3)
        ax.set_title(op)
    gaps = [
        (k["name"], d["density_pct"], d["decode"]["ms"])
        for k in doc["kernels"]
        for d in k["densities"]
        if d["decode"]["gbps"] is None
    ]
    if gaps:
        dec.text(
            0.02,
            0.02,
            "no point: pass under 1 ms (e.g. %s at %d%%: %.3f ms)" % gaps[0],
            transform=dec.transAxes,
            fontsize=7,
        )
    enc.legend(fontsize=7)
    fig.suptitle(
        "Page kernels, median of %d passes over %d MiB (%s changes); one thread"
        % (doc["repetitions"], doc["working_set_mib"], "clustered" if doc["clustered"] else "scattered")
    )
    fig.tight_layout()
    fig.savefig(out, metadata=METADATA)
    plt.close(fig)


def short(trace):
    return Path(trace["trace"]).stem


def bench_bytes(doc, out):
    traces = doc["traces"]
    fig, axes = plt.subplots(len(traces), 1, figsize=(10, 2.4 * len(traces)), squeeze=False)
    for ax, t in zip(axes[:, 0], traces):
        later = t["series"][1:]
        seq = [c["seq"] for c in later]
        full = [c["full_bytes"] / MIB for c in later]
        delta = [c["delta_bytes"] / MIB for c in later]
        rest = [(c["output_bytes"] - c["full_bytes"] - c["delta_bytes"]) / MIB for c in later]
        ax.bar(seq, full, color="tab:red", label="FULL pages")
        ax.bar(seq, delta, bottom=full, color="tab:blue", label="deltas")
        ax.bar(seq, rest, bottom=[a + b for a, b in zip(full, delta)], color="tab:gray", label="batches, headers, trailers")
        ax.set_ylabel("MiB sent")
        # One checkpoint far above the rest (the first after the image,
        # say) would flatten them: cut the axis and write its value.
        totals = sorted((c["output_bytes"] / MIB, c["seq"]) for c in later)
        if len(totals) > 2 and totals[-1][0] > 4 * totals[-2][0]:
            top = 1.3 * totals[-2][0]
            ax.set_ylim(0, top)
            ax.annotate(
                "%.1f MiB (cut)" % totals[-1][0],
                (totals[-1][1], top),
                xytext=(4, -10),
                textcoords="offset points",
                fontsize=7,
            )
        ax.set_title(
            "%s: %d checkpoints after the initial image (%d pages, not shown); ratio %.2f (%.2f with it)"
            % (short(t), t["checkpoints"], t["initial_image_pages"], t["ratio"], t["ratio_with_initial_image"]),
            fontsize=9,
        )
        ax.grid(True, axis="y", alpha=0.3)
    axes[0, 0].legend(fontsize=7)
    axes[-1, 0].set_xlabel("checkpoint")
    fig.suptitle("Stream bytes per checkpoint (kernel %s, %d thread(s))" % (traces[0]["kernel"], traces[0]["threads"]))
    fig.tight_layout()
    fig.savefig(out, metadata=METADATA)
    plt.close(fig)


def bench_latency(doc, out):
    traces = doc["traces"]
    fig, axes = plt.subplots(1, len(traces), figsize=(3.2 * len(traces), 3.4), squeeze=False, sharey=True)
    for ax, t in zip(axes[0], traces):
        later = t["series"][1:]
        for key, label, color in (("stage_ms", "stage (guest paused)", "tab:green"), ("checkpoint_ms", "whole checkpoint", "tab:purple")):
            v = sorted(c[key] for c in later)
            n = len(v)
            ax.step(v, [(i + 1) / n for i in range(n)], where="post", color=color, label=label)
        ax.set_xscale("log")
        plain_log(ax.xaxis)
        ax.set_xlabel("ms")
        ax.set_title("%s (%d checkpoints)" % (short(t), len(later)), fontsize=9)
        ax.grid(True, which="both", alpha=0.3)
    axes[0, 0].set_ylabel("share of checkpoints at most")
    axes[0, 0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Latency per checkpoint after the initial image, every checkpoint one step")
    fig.tight_layout()
    fig.savefig(out, metadata=METADATA)
    plt.close(fig)


def main():
    results = Path(sys.argv[1] if len(sys.argv) > 1 else "results")
    kernels(load(results / "kernels.json"), results / "kernels.svg")
    bench = load(results / "bench.json")
    bench_bytes(bench, results / "bench-bytes.svg")
    bench_latency(bench, results / "bench-latency.svg")
    for name in ("kernels.svg", "bench-bytes.svg", "bench-latency.svg"):
        print(results / name)


if __name__ == "__main__":
    main()
