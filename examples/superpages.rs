//! Restore and read speed of each superpage policy on the bundled traces,
//! the synthetic run of `ckpt demo` and a 1 GiB synthetic guest sent in
//! order and shuffled; prints the tables of `results/restore.md` and
//! writes every figure to `results/restore.json`.
//!
//!     cargo run --release --example superpages [-- --quick]

use ckpt_engine::config::Config;
use ckpt_engine::extent::backing::ThpSettings;
use ckpt_engine::extent::measure::{
    first_touch, measure, sparse_baseline, ImageOrder, PolicySummary, ReadPlan, RestoreTimes,
    Workload,
};
use ckpt_engine::extent::SuperpagePolicy;
use ckpt_engine::pipeline::SenderOptions;
use ckpt_engine::CompressOptions;
use ckpt_simd::Codec;
use serde::Serialize;
use std::time::Duration;

#[derive(Serialize)]
struct Entry {
    workload: String,
    guest_pages: u64,
    sparse: RestoreTimes,
    policies: Vec<PolicySummary>,
}

fn cpu() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("model name"))
                .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
        })
        .unwrap_or_else(|| "?".into())
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".into(), |x| format!("{:.0}%", x * 100.0))
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let quick = std::env::args().any(|a| a == "--quick");
    let codec = Codec::best();
    let config = Config::default();
    let opts = SenderOptions {
        compress: CompressOptions {
            cache_pages: config.engine.cache_pages,
            threads: config.threads(),
            pin_threads: config.engine.pin_threads,
        },
        ring_pages: config.engine.ring_pages,
        guest_pages: 0,
    };
    let plan = ReadPlan {
        random: if quick { 1 << 20 } else { 4 << 20 },
        chase: if quick { 1 << 18 } else { 1 << 20 },
        scans: 2,
    };
    let passes = 2;
    // Longer than the 2 s after which the kernel reports freed 2 MiB
    // blocks to a hypervisor that takes them back (free page reporting).
    let settle = Duration::from_millis(if quick { 0 } else { 3000 });
    let policies = SuperpagePolicy::ALL;
    let settings = ThpSettings::read();
    println!("CPU: {}; THP enabled [{}], defrag [{}], hugetlbfs pages reserved: {}, kpageflags readable: {}",
        cpu(), settings.enabled, settings.defrag, settings.hugetlb_pages, settings.kpageflags);
    println!("reads: {plan:?}");

    // First touch alone, 256 MiB in order: right after the same amount was
    // freed, and after a pause long enough for it to be reported.
    let touch_pages = if quick { 1 << 14 } else { 1 << 16 };
    let mut touch = Vec::new();
    for round in 0..if quick { 1 } else { 4 } {
        for policy in [SuperpagePolicy::None, SuperpagePolicy::Optimistic] {
            for (condition, pause) in [
                ("after a pause", Duration::from_secs(3)),
                ("right after a free", Duration::ZERO),
            ] {
                if pause > Duration::ZERO && !quick {
                    std::thread::sleep(pause);
                } else {
                    first_touch(touch_pages, policy)?;
                }
                let (cpu, wall) = first_touch(touch_pages, policy)?;
                touch.push(serde_json::json!({"round": round, "policy": policy, "condition": condition, "cpu_ms": cpu, "wall_ms": wall}));
            }
        }
    }
    println!();
    println!(
        "First touch of {} MiB in order (CPU ms / wall ms, each run):",
        (touch_pages * 4096) >> 20
    );
    println!();
    println!("| policy | condition | runs |");
    println!("|---|---|---|");
    for policy in [SuperpagePolicy::None, SuperpagePolicy::Optimistic] {
        for condition in ["after a pause", "right after a free"] {
            let runs: Vec<String> = touch
                .iter()
                .filter(|t| t["policy"] == serde_json::json!(policy) && t["condition"] == condition)
                .map(|t| {
                    format!(
                        "{:.0} / {:.0}",
                        t["cpu_ms"].as_f64().unwrap_or(0.0),
                        t["wall_ms"].as_f64().unwrap_or(0.0)
                    )
                })
                .collect();
            println!("| {policy} | {condition} | {} |", runs.join(", "));
        }
    }

    let mut entries = Vec::new();
    let mut run = |w: Workload, reps: usize| -> Result<(), Box<dyn std::error::Error>> {
        eprintln!(
            "== {} ({} pages, {} stream bytes)",
            w.name,
            w.guest_pages,
            w.stream.len()
        );
        let sparse = sparse_baseline(&w, reps, settle, codec)?;
        let s = measure(&w, &policies, reps, passes, settle, codec, &plan)?;
        entries.push(Entry {
            workload: w.name.clone(),
            guest_pages: w.guest_pages,
            sparse,
            policies: s,
        });
        Ok(())
    };
    let reps = if quick { 1 } else { 5 };
    for t in ckpt::bundled_traces() {
        run(Workload::trace(&t, codec, &opts)?, reps)?;
    }
    run(
        Workload::scenario(
            "synthetic run (ckpt demo)",
            ckpt::demo::GUEST_PAGES,
            0xDE70,
            &ckpt::demo::SEQUENCE,
            codec,
            &opts,
        )?,
        reps,
    )?;
    let big = if quick { 64 << 8 } else { 1 << 18 }; // 1 GiB
    let later = [2000, 5000, 800, 12000, 3000, 1500, 7000, 400, 2500, 900];
    for order in [ImageOrder::Ascending, ImageOrder::Shuffled] {
        run(
            Workload::image(big, order, 0xB16, &later, codec, &opts)?,
            if quick { 1 } else { 3 },
        )?;
    }

    println!();
    println!("Allocations, what the kernel gave, memory:");
    println!();
    println!("| workload | policy | 2 MiB allocs | 4 KiB pages | broken | full extents really huge | all extents really huge | written pages in huge pages | AnonHugePages (MiB) | memory used (MiB) | written (MiB) | break time (ms) | thp_fault_alloc / fallback, all runs |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    for e in &entries {
        for s in &e.policies {
            let r = &s.report;
            println!(
                "| {} | {} | {} | {} | {} | {} of {} ({}; lowest {}) | {} | {} | {:.0} | {:.1} | {:.1} | {:.2} | {} / {} |",
                e.workload,
                s.policy,
                r.extents_2m,
                r.pages_4k,
                r.extents_broken,
                r.extents_full_huge.map_or("-".into(), |n| n.to_string()),
                r.extents_full,
                opt(r.huge_extent_share),
                opt(s.huge_extent_share_min),
                r.extents_huge.map_or("-".into(), |n| n.to_string()),
                opt(r.pages_in_huge.map(|n| n as f64 / r.pages_written.max(1) as f64)),
                r.anon_huge_bytes as f64 / (1 << 20) as f64,
                r.resident_bytes as f64 / (1 << 20) as f64,
                (r.pages_written * 4096) as f64 / (1 << 20) as f64,
                r.break_ms,
                s.thp_events.thp_fault_alloc,
                s.thp_events.thp_fault_fallback,
            );
        }
    }
    println!();
    println!("Restore (thread CPU ms, medians) and reads afterwards (medians):");
    println!();
    println!("| workload | policy | runs | first checkpoint | of which apply | apply, wall | later checkpoints | of which apply | random read (ns) | dependent read (ns) | scan (GB/s) | read span (MiB) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|");
    for e in &entries {
        let t = &e.sparse;
        println!(
            "| {} | sparse map | {} | {:.1} | {:.1} | {:.1} | {:.1} ({}) | {:.1} | - | - | - | - |",
            e.workload,
            e.policies[0].runs,
            t.first_ms,
            t.first_apply_ms,
            t.first_apply_wall_ms,
            t.later_ms,
            t.later,
            t.later_apply_ms
        );
        for s in &e.policies {
            let t = &s.times;
            println!(
                "| {} | {} | {} | {:.1} | {:.1} | {:.1} | {:.1} ({}) | {:.1} | {:.1} | {:.1} | {:.1} | {:.0} |",
                e.workload,
                s.policy,
                s.runs,
                t.first_ms,
                t.first_apply_ms,
                t.first_apply_wall_ms,
                t.later_ms,
                t.later,
                t.later_apply_ms,
                s.reads.random_ns,
                s.reads.chase_ns,
                s.reads.scan_gbps,
                s.reads.span_bytes as f64 / (1 << 20) as f64,
            );
        }
    }
    if !quick {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("results/restore.json");
        std::fs::write(
            &path,
            serde_json::to_string_pretty(&serde_json::json!({
                "cpu": cpu(),
                "thp": settings,
                "reads": plan,
                "read_passes_per_round": passes,
                "workloads": entries,
                "first_touch": touch,
            }))?,
        )?;
        eprintln!("wrote {}", path.display());
    }
    Ok(())
}
