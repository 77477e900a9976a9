#!/usr/bin/env python3
"""Alternating `ckpt bench` runs compared as ratios measured in one session.

  scripts/scaling.py threads [--reps 5] [--load] [--ckpt target/release/ckpt]
      1 thread against 2, pinned and not, each trace: encode GB/s and the
      memory floor read on as many threads as encode (both from the same
      run), medians of --reps alternating rounds. --load runs one busy
      process beside the bench for the whole measurement (a competing
      load on one of the cores).

  scripts/scaling.py builds --before OLD_CKPT --before-traces DIR [--reps 5]
                            [--after-args "--no-cache-seed"]
      another build of ckpt (with its own copies of the traces, in the trace
      format it reads) against this one, alternating, 1 and 2 threads:
      encode / floor and decode GB/s per trace.

Prints a Markdown table and writes the raw runs as JSON (--json PATH).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

TRACES = ["gcc", "postgres", "python", "redis"]


def bench(ckpt, trace, threads, config=None, extra=()):
    cmd = [ckpt]
    if config:
        cmd += ["--config", config]
    cmd += ["bench", "--trace", trace, "--json", "--threads", str(threads), *extra]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    doc = json.loads(out)
    # Older builds print one object per trace, newer ones {"traces": [...]}.
    return doc["traces"][0] if "traces" in doc else doc


def p50(q):
    # Older builds name the median "p50", newer ones "p50_ms".
    return q.get("p50_ms", q.get("p50"))


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def config_file(pin):
    f = tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False)
    f.write(f"[engine]\npin_threads = {'true' if pin else 'false'}\n")
    f.close()
    return f.name


def threads_mode(a):
    configs = {True: config_file(True), False: config_file(False)}
    runs = []
    load = None
    if a.load:
        load = subprocess.Popen(["sh", "-c", "while :; do :; done"])
    try:
        for rep in range(a.reps):
            for trace in TRACES:
                path = os.path.join(a.traces, trace + ".trace")
                # Alternate the order between rounds so neither setting
                # always runs first.
                settings = [(t, pin) for t in (1, 2) for pin in (True, False)]
                if rep % 2:
                    settings.reverse()
                for t, pin in settings:
                    r = bench(a.ckpt, path, t, configs[pin])
                    runs.append({"rep": rep, "trace": trace, "threads": t, "pin": pin,
                                 "encode_gbps": r["encode_gbps"], "floor_gbps": r["floor_gbps"],
                                 "decode_gbps": r["decode_gbps"]})
                    print(f"round {rep + 1}/{a.reps} {trace} threads {t} pin {pin}: "
                          f"encode {r['encode_gbps']:.2f} floor {r['floor_gbps']:.2f}",
                          file=sys.stderr)
    finally:
        if load:
            load.kill()
        for c in configs.values():
            os.unlink(c)

    def pick(trace, t, pin, key):
        return [r[key] for r in runs if r["trace"] == trace and r["threads"] == t and r["pin"] == pin]

    print(f"| trace | pinning | encode 1 thr GB/s | encode 2 thr GB/s | encode 2/1 | floor 2/1 | "
          f"share of the floor's gain | pinned / unpinned, 2 thr |")
    print("|---|---|---|---|---|---|---|---|")
    for trace in TRACES:
        for pin in (True, False):
            e1, e2 = med(pick(trace, 1, pin, "encode_gbps")), med(pick(trace, 2, pin, "encode_gbps"))
            # Ratios per round, then the median: both halves of a ratio come
            # from the same round.
            es = [b / a for a, b in zip(pick(trace, 1, pin, "encode_gbps"), pick(trace, 2, pin, "encode_gbps"))]
            fs = [b / a for a, b in zip(pick(trace, 1, pin, "floor_gbps"), pick(trace, 2, pin, "floor_gbps"))]
            gain = [(e - 1) / (f - 1) if f > 1 else float("nan") for e, f in zip(es, fs)]
            pin_vs = [p / u for p, u in zip(pick(trace, 2, True, "encode_gbps"), pick(trace, 2, False, "encode_gbps"))]
            print(f"| {trace} | {'on' if pin else 'off'} | {e1:.2f} | {e2:.2f} | {med(es):.2f}x | "
                  f"{med(fs):.2f}x | {med(gain):.0%} | {med(pin_vs) if pin else float('nan'):.2f} |")
    return runs


def builds_mode(a):
    runs = []
    for rep in range(a.reps):
        for trace in TRACES:
            order = [("before", a.before, os.path.join(a.before_traces, trace + ".trace"), ()),
                     ("after", a.ckpt, os.path.join(a.traces, trace + ".trace"), a.after_args.split())]
            if rep % 2:
                order.reverse()
            for t in (1, 2):
                for name, exe, path, extra in order:
                    r = bench(exe, path, t, extra=extra)
                    runs.append({"rep": rep, "trace": trace, "threads": t, "build": name,
                                 "encode_gbps": r["encode_gbps"], "floor_gbps": r["floor_gbps"],
                                 "encode_vs_floor": r["encode_vs_floor"],
                                 "decode_gbps": r["decode_gbps"], "output_bytes": r["output_bytes"],
                                 "checkpoint_p50_ms": p50(r["checkpoint_ms"]),
                                 "compress_p50_ms": p50(r["compress_ms"])})
                    print(f"round {rep + 1}/{a.reps} {trace} {name} threads {t}: encode/floor "
                          f"{r['encode_vs_floor']:.2f} decode {r['decode_gbps']:.2f}", file=sys.stderr)

    def pick(trace, t, build, key):
        return [r[key] for r in runs if r["trace"] == trace and r["threads"] == t and r["build"] == build]

    print("| trace | threads | encode/floor before | after | checkpoint p50 ms before | after | "
          "decode GB/s before | after | decode after/before |")
    print("|---|---|---|---|---|---|---|---|---|")
    for trace in TRACES:
        for t in (1, 2):
            d = [b / a for a, b in zip(pick(trace, t, "before", "decode_gbps"), pick(trace, t, "after", "decode_gbps"))]
            print(f"| {trace} | {t} | {med(pick(trace, t, 'before', 'encode_vs_floor')):.2f} | "
                  f"{med(pick(trace, t, 'after', 'encode_vs_floor')):.2f} | "
                  f"{med(pick(trace, t, 'before', 'checkpoint_p50_ms')):.2f} | "
                  f"{med(pick(trace, t, 'after', 'checkpoint_p50_ms')):.2f} | "
                  f"{med(pick(trace, t, 'before', 'decode_gbps')):.2f} | "
                  f"{med(pick(trace, t, 'after', 'decode_gbps')):.2f} | {med(d):.2f}x |")
    return runs


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("mode", choices=["threads", "builds"])
    p.add_argument("--ckpt", default="target/release/ckpt")
    p.add_argument("--traces", default="traces")
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--load", action="store_true")
    p.add_argument("--before")
    p.add_argument("--before-traces")
    p.add_argument("--after-args", default="",
                   help="flags for this build's bench, e.g. the other build's cache settings")
    p.add_argument("--json")
    a = p.parse_args()
    cpu = next((l.split(":", 1)[1].strip() for l in open("/proc/cpuinfo") if l.startswith("model name")), "?")
    print(f"CPU: {cpu}; {os.cpu_count()} cores; {time.strftime('%Y-%m-%d')}; "
          f"{a.reps} alternating rounds{'; one busy process beside it' if a.load else ''}\n")
    if a.mode == "threads":
        runs = threads_mode(a)
    else:
        if not (a.before and a.before_traces):
            p.error("builds needs --before and --before-traces")
        runs = builds_mode(a)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"cpu": cpu, "mode": a.mode, "load": a.load, "runs": runs}, f, indent=1)


if __name__ == "__main__":
    main()
