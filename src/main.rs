//! `ckpt`: compresses VM checkpoints for Remus-style replication.

use ckpt::{conformance, demo, kernels, pipeline_bench, select_codec, stream_cmd, Error, Result};
use ckpt_engine::config::Config;
use ckpt_engine::pipeline::{Latencies, SenderOptions};
use ckpt_engine::CompressOptions;
use ckpt_simd::{Codec, Kernel};
use clap::{Parser, Subcommand};
use std::path::PathBuf;
use std::process::ExitCode;

#[derive(Parser)]
#[command(
    name = "ckpt",
    version,
    about = "Compresses VM checkpoints for high-availability replication"
)]
struct Cli {
    /// Configuration file (default: $CKPT_CONFIG, else built-in defaults).
    #[arg(long, global = true, env = "CKPT_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(clap::Args, Clone, Default)]
struct Tuning {
    /// Page kernel by name (scalar, sse2, avx2, avx512, neon), overriding the config.
    #[arg(long)]
    kernel: Option<String>,
    /// Compression threads, overriding the config.
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Subcommand)]
enum Command {
    /// Compress, decode and verify a built-in sequence of checkpoints.
    Demo {
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Compress a trace (or the built-in synthetic run) into a stream file.
    Compress {
        /// Stream file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Trace to compress (default: the built-in synthetic run).
        #[arg(long)]
        trace: Option<PathBuf>,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Apply a stream file to a guest image file, verifying each checkpoint.
    Restore {
        /// Stream file to read.
        stream: PathBuf,
        /// Raw guest image (created or grown to the guest's size).
        #[arg(long)]
        image: PathBuf,
        /// Page kernel by name, overriding the config.
        #[arg(long)]
        kernel: Option<String>,
    },
    /// List a stream's chunks with offsets and sizes, verifying every checkpoint.
    Inspect {
        /// Stream file to read.
        stream: PathBuf,
    },
    /// Measure the send pipeline: thread scaling, staging cost, peak memory.
    BenchPipeline {
        /// Print the figures as JSON.
        #[arg(long)]
        json: bool,
        /// Repetitions per timing (medians are reported).
        #[arg(long, default_value_t = 15)]
        reps: usize,
        /// Page kernel by name, overriding the config.
        #[arg(long)]
        kernel: Option<String>,
    },
    /// One part of the memory measurement, run as a child process.
    #[command(hide = true)]
    RssPart {
        /// sender, receiver or hostile.
        part: String,
        /// Stream file.
        #[arg(long)]
        stream: PathBuf,
        /// Image file.
        #[arg(long)]
        image: PathBuf,
        /// Page kernel.
        #[arg(long)]
        kernel: String,
    },
    /// Record a live process's dirty pages into a trace, epoch by epoch.
    Record {
        /// Trace file to write.
        #[arg(short, long)]
        output: PathBuf,
        /// Target run time between pauses, in ms (default: config, 25).
        #[arg(long)]
        epoch_ms: Option<u64>,
        /// Stop after this many epochs.
        #[arg(long)]
        epochs: Option<u64>,
        /// Stop after this many seconds.
        #[arg(long)]
        seconds: Option<f64>,
        /// Attach to this process instead of starting a command.
        #[arg(long)]
        pid: Option<i32>,
        /// Also stop and record the target's descendants.
        #[arg(long)]
        children: bool,
        /// Workload name stored in the trace.
        #[arg(long, default_value = "unnamed")]
        name: String,
        /// Command to start and record.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// Replay a trace through the sender pipeline and the receiver, verified.
    Bench {
        /// Trace to replay (default: the bundled redis trace; see --all).
        #[arg(long)]
        trace: Option<PathBuf>,
        /// Replay every bundled trace.
        #[arg(long)]
        all: bool,
        /// Print one JSON object per trace.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// Replay golden vectors and check every output byte for byte.
    Conformance {
        /// Folder holding *.vec / *.vec.zst files.
        dir: PathBuf,
        #[command(flatten)]
        tuning: Tuning,
    },
    /// List the page kernels; with --bench, measure them against the memory floor.
    Kernels {
        /// Measure encode/decode throughput of every supported kernel.
        #[arg(long)]
        bench: bool,
        /// Print the measurement as JSON.
        #[arg(long)]
        json: bool,
        /// Working set in MiB (both pages of every pair).
        #[arg(long, default_value_t = 64)]
        mib: usize,
        /// Repetitions per figure (the median is reported).
        #[arg(long, default_value_t = 9)]
        reps: usize,
        /// Densities to measure, in percent of words changed.
        #[arg(long, value_delimiter = ',', default_values_t = kernels::DENSITIES)]
        density: Vec<u32>,
        /// Measure only this kernel (default: every supported kernel).
        #[arg(long)]
        kernel: Option<String>,
        /// Change words one by one instead of in clustered runs.
        #[arg(long)]
        scattered: bool,
    },
}

fn load_config(path: Option<&PathBuf>) -> Result<Config> {
    Ok(match path {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    })
}

fn sender_options(config: &Config, tuning: &Tuning, guest_pages: u64) -> SenderOptions {
    SenderOptions {
        compress: CompressOptions {
            cache_pages: config.engine.cache_pages,
            threads: tuning.threads.unwrap_or_else(|| config.threads()).max(1),
            pin_threads: config.engine.pin_threads,
        },
        ring_pages: config.engine.ring_pages,
        guest_pages,
    }
}

fn print_latencies(l: &Latencies) {
    let row = |name: &str, h: &hdrhistogram::Histogram<u64>| {
        println!(
            "  {name:<10} p50 {:>8.3} ms  p99 {:>8.3} ms  p99.9 {:>8.3} ms",
            h.value_at_quantile(0.5) as f64 / 1e3,
            h.value_at_quantile(0.99) as f64 / 1e3,
            h.value_at_quantile(0.999) as f64 / 1e3
        )
    };
    println!("latency per checkpoint:");
    row("stage", &l.stage);
    row("compress", &l.compress);
    row("write", &l.write);
    row("checkpoint", &l.checkpoint);
}

fn finish_stream_report(r: &stream_cmd::RestoreReport, holder: &str) -> Result<ExitCode> {
    let last = r.applied.last().map(|i| i.seq);
    match (&r.error, r.complete) {
        (None, true) => {
            println!("stream complete: {} checkpoints verified", r.applied.len());
            Ok(ExitCode::SUCCESS)
        }
        (Some(e), _) => {
            eprintln!("ckpt: {e}");
            match last {
                Some(seq) => eprintln!("{holder} checkpoint {seq}, the last complete one"),
                None => eprintln!("{holder} no checkpoint of this stream"),
            }
            Ok(ExitCode::FAILURE)
        }
        (None, false) => Ok(ExitCode::FAILURE),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let config = load_config(cli.config.as_ref())?;
    match cli.command {
        Command::Demo { tuning } => {
            let codec = select_codec(tuning.kernel.as_deref(), &config)?;
            let opts = sender_options(&config, &tuning, demo::GUEST_PAGES);
            let r = demo::run(codec, &opts)?;
            let mb = |b: u64| b as f64 / (1 << 20) as f64;
            let s = &r.sent;
            println!(
                "primary -> backup over loopback TCP: kernel {}, {} compression thread(s)",
                codec.kernel(),
                opts.compress.threads
            );
            println!(
                "{} checkpoints, {} pages: {:.1} MiB of pages in, {:.1} MiB on the wire (ratio {:.2})",
                s.checkpoints,
                s.pages,
                mb(s.input_bytes),
                mb(s.output_bytes),
                s.input_bytes as f64 / s.output_bytes.max(1) as f64
            );
            println!(
                "pages sent: {} uncompressed (first full send), {} FULL (cache miss), {} FULL (page tables), {} EMPTY, {} DELTA",
                s.uncompressed, s.counts.full_miss, s.counts.full_raw, s.counts.empty, s.counts.delta
            );
            print_latencies(&r.latencies);
            println!(
                "backup applied {} checkpoints in {:.1} ms; wall {:.1} ms",
                r.applied,
                r.receive.as_secs_f64() * 1e3,
                r.wall.as_secs_f64() * 1e3
            );
            println!(
                "verified: {}",
                if r.verified {
                    "every page of the backup equals the primary's"
                } else {
                    "MISMATCH"
                }
            );
            Ok(if r.verified && r.applied == s.checkpoints {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Compress {
            output,
            trace,
            tuning,
        } => {
            let codec = select_codec(tuning.kernel.as_deref(), &config)?;
            let opts = sender_options(&config, &tuning, demo::GUEST_PAGES);
            let s = match trace {
                Some(t) => stream_cmd::compress_trace(&t, &output, codec, &opts)?,
                None => stream_cmd::compress_builtin(&output, codec, &opts)?,
            };
            println!(
                "{}: {} checkpoints, {} pages, {} bytes of pages -> {} bytes (ratio {:.2})",
                output.display(),
                s.checkpoints,
                s.pages,
                s.input_bytes,
                s.output_bytes,
                s.input_bytes as f64 / s.output_bytes.max(1) as f64
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Restore {
            stream,
            image,
            kernel,
        } => {
            let codec = select_codec(kernel.as_deref(), &config)?;
            let r = stream_cmd::restore(&stream, &image, config.receiver.clone(), codec)?;
            for info in &r.applied {
                println!(
                    "checkpoint {} applied and verified: {} pages ({} full, {} delta, {} empty)",
                    info.seq, info.data_pages, info.full, info.delta, info.empty
                );
            }
            finish_stream_report(&r, &format!("{} holds", image.display()))
        }
        Command::Inspect { stream } => {
            let codec = Codec::best();
            let r = stream_cmd::inspect(
                &stream,
                config.receiver.clone(),
                codec,
                &mut std::io::stdout().lock(),
            )?;
            finish_stream_report(&r, "a receiver would hold")
        }
        Command::BenchPipeline { json, reps, kernel } => {
            let codec = select_codec(kernel.as_deref(), &config)?;
            let reps = reps.max(3);
            eprintln!("measuring compression with 1 and 2 threads");
            let (c1, c2) = pipeline_bench::compress_ms(codec, reps)?;
            let (f1, f2) = pipeline_bench::floor_scaling_ms(codec, reps);
            eprintln!("measuring staging against memcpy");
            let (stage, copy) = pipeline_bench::staging_vs_memcpy(reps);
            eprintln!("measuring peak memory (child processes)");
            let dir = std::env::temp_dir().join(format!("ckpt-rss-{}", std::process::id()));
            std::fs::create_dir_all(&dir)?;
            let part = |name: &str| -> Result<Vec<u64>> {
                let out = std::process::Command::new(std::env::current_exe()?)
                    .args(["rss-part", name, "--kernel", codec.kernel().name()])
                    .arg("--stream")
                    .arg(dir.join("stream"))
                    .arg("--image")
                    .arg(dir.join(format!("{name}.img")))
                    .output()?;
                if !out.status.success() {
                    return Err(Error::Other(format!(
                        "{name} part failed: {}",
                        String::from_utf8_lossy(&out.stderr)
                    )));
                }
                Ok(String::from_utf8_lossy(&out.stdout)
                    .split_whitespace()
                    .filter_map(|v| v.parse().ok())
                    .collect())
            };
            let sender = part("sender")?;
            let receiver = part("receiver")?;
            let hostile = part("hostile")?;
            let _ = std::fs::remove_dir_all(&dir);
            let f = pipeline_bench::PipelineFigures {
                compress_1_thread_ms: c1,
                compress_2_threads_ms: c2,
                speedup: c1 / c2,
                floor_speedup: f1 / f2,
                stage_ms: stage,
                memcpy_ms: copy,
                stage_ratio: stage / copy,
                sender_peak_rss: sender[0],
                sender_budget: pipeline_bench::sender_budget(pipeline_bench::PAGES, 8192),
                receiver_peak_rss: receiver[0],
                receiver_budget: pipeline_bench::receiver_budget(
                    pipeline_bench::RSS_GUEST * 4096,
                    receiver[1],
                ),
                hostile_peak_rss: hostile[0],
                kernel: codec.kernel().name().into(),
            };
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&f).map_err(|e| Error::Other(e.to_string()))?
                );
            } else {
                let mib = |b: u64| b as f64 / (1 << 20) as f64;
                println!("kernel {}, medians of {reps}", f.kernel);
                println!(
                    "compress 8196 pages: 1 thread {:.2} ms, 2 threads {:.2} ms, speedup {:.2}x (goal >= 1.8x)",
                    c1, c2, f.speedup
                );
                println!(
                    "memory floor over the same batch: 1 thread {f1:.2} ms, 2 threads {f2:.2} ms, speedup {:.2}x",
                    f.floor_speedup
                );
                println!(
                    "stage 8196 pages: {:.2} ms, memcpy {:.2} ms, ratio {:.2} (goal <= 1.1)",
                    stage, copy, f.stage_ratio
                );
                println!(
                    "sender peak RSS {:.1} MiB, budget {:.1} MiB (ring + cache + 2 chunks + 32 MiB)",
                    mib(f.sender_peak_rss),
                    mib(f.sender_budget)
                );
                println!(
                    "receiver peak RSS {:.1} MiB, budget {:.1} MiB (image + largest checkpoint {:.1} MiB + 32 MiB)",
                    mib(f.receiver_peak_rss),
                    mib(f.receiver_budget),
                    mib(receiver[1])
                );
                println!(
                    "receiver peak RSS on a stream claiming a 64 MiB chunk: {:.1} MiB",
                    mib(f.hostile_peak_rss)
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::RssPart {
            part,
            stream,
            image,
            kernel,
        } => {
            let codec = Codec::new(kernel.parse::<Kernel>()?)?;
            match part.as_str() {
                "sender" => println!("{}", pipeline_bench::rss_sender(codec, 2, &stream)?),
                "receiver" => {
                    let (peak, largest) = pipeline_bench::rss_receiver(codec, &stream, &image)?;
                    println!("{peak} {largest}");
                }
                "hostile" => println!("{}", pipeline_bench::rss_hostile(codec, &image)?),
                _ => return Err(Error::Other(format!("unknown part {part}"))),
            }
            let _ = std::fs::remove_file(&image);
            Ok(ExitCode::SUCCESS)
        }
        #[cfg(target_os = "linux")]
        Command::Record {
            output,
            epoch_ms,
            epochs,
            seconds,
            pid,
            children,
            name,
            command,
        } => {
            let codec = select_codec(None, &config)?;
            if epochs.is_none() && seconds.is_none() && pid.is_some() {
                return Err(Error::Other(
                    "give --epochs or --seconds when attaching".into(),
                ));
            }
            let args = ckpt::record_cmd::RecordArgs {
                output: output.clone(),
                epoch: std::time::Duration::from_millis(
                    epoch_ms.unwrap_or(config.record.epoch_ms).max(1),
                ),
                epochs,
                duration: seconds.map(std::time::Duration::from_secs_f64),
                children,
                pid,
                command,
                name,
                progress: std::io::IsTerminal::is_terminal(&std::io::stderr()),
            };
            let r = ckpt::record_cmd::record(&args, codec)?;
            let (p50, p99) = r.pause_ms();
            let first = r.epochs.first().copied().unwrap_or_default();
            let dirty: Vec<u64> = r.epochs.iter().skip(1).map(|e| e.dirty_pages).collect();
            let scanned: f64 = r
                .epochs
                .iter()
                .skip(1)
                .map(|e| e.scanned_bytes as f64)
                .sum::<f64>()
                / (dirty.len().max(1) as f64 * (1 << 20) as f64);
            println!(
                "{}: {} epochs; initial image {} pages (pause {:.1} ms)",
                output.display(),
                r.epochs.len(),
                first.dirty_pages,
                first.pause.as_secs_f64() * 1e3
            );
            println!(
                "pause per epoch p50 {p50:.2} ms, p99 {p99:.2} ms; {scanned:.1} MiB scanned per epoch; {:.3} ms per MiB scanned",
                r.ms_per_mib()
            );
            let n = r.epochs.len().saturating_sub(1).max(1) as f64;
            let avg = |f: fn(&ckpt_engine::record::EpochStats) -> std::time::Duration| {
                r.epochs
                    .iter()
                    .skip(1)
                    .map(|e| f(e).as_secs_f64())
                    .sum::<f64>()
                    * 1e3
                    / n
            };
            println!(
                "mean pause split: stop {:.2} ms, enumerate {:.2} ms, read+compare {:.2} ms \
                 (of which {:.2} ms of scan-thread time inside process_vm_readv)",
                avg(|e| e.stop_wait),
                avg(|e| e.enumerate),
                avg(|e| e.compare),
                avg(|e| e.read_calls)
            );
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            trace,
            all,
            json,
            tuning,
        } => {
            let codec = select_codec(tuning.kernel.as_deref(), &config)?;
            // One compression thread unless asked otherwise: the figure the
            // goals are stated for.
            let threads = tuning.threads.unwrap_or(match config.engine.threads {
                0 => 1,
                n => n,
            });
            let opts = sender_options(
                &config,
                &Tuning {
                    threads: Some(threads),
                    ..tuning.clone()
                },
                1,
            );
            let traces = match (trace, all) {
                (Some(t), _) => vec![t],
                (None, true) => ckpt::bundled_traces(),
                (None, false) => ckpt::bundled_traces()
                    .into_iter()
                    .filter(|p| p.to_string_lossy().contains("redis"))
                    .take(1)
                    .collect(),
            };
            if traces.is_empty() {
                return Err(Error::Other(format!(
                    "no trace found in {}",
                    ckpt::traces_dir().display()
                )));
            }
            let mut ok = true;
            for t in traces {
                let r = ckpt::bench::run(&t, codec, &opts)?;
                ok &= r.verified;
                if json {
                    println!(
                        "{}",
                        serde_json::to_string(&r).map_err(|e| Error::Other(e.to_string()))?
                    );
                    continue;
                }
                println!(
                    "{} ({}), kernel {}, {} thread(s)",
                    r.trace, r.workload, r.kernel, r.threads
                );
                println!(
                    "  {} checkpoints, {} pages, {:.1} MiB in, {:.1} MiB out, ratio {:.2}",
                    r.checkpoints,
                    r.pages,
                    r.input_bytes as f64 / (1 << 20) as f64,
                    r.output_bytes as f64 / (1 << 20) as f64,
                    r.ratio
                );
                println!(
                    "  encode {:.2} GB/s ({:.2}x the floor of {:.2} GB/s), decode {:.2} GB/s, {:.0} pages/s",
                    r.encode_gbps, r.encode_vs_floor, r.floor_gbps, r.decode_gbps, r.pages_per_s
                );
                println!(
                    "  floor over contiguous copies of the same pages {:.2} GB/s (encode {:.2}x that)",
                    r.floor_copies_gbps,
                    r.encode_gbps / r.floor_copies_gbps
                );
                println!(
                    "  dirty pages per checkpoint p50 {} p99 {}; {:.1}% of words changed in re-dirtied pages, {:.0} runs per page",
                    r.dirty_pages_p50,
                    r.dirty_pages_p99,
                    100.0 * r.words_changed_share,
                    r.runs_per_page
                );
                println!(
                    "  pages: {:.1}% FULL on cache miss, {:.1}% delta, {:.1}% unchanged",
                    100.0 * r.full_miss_share,
                    100.0 * r.delta_share,
                    100.0 * r.empty_share
                );
                for (name, p) in [
                    ("stage", r.stage_ms),
                    ("compress", r.compress_ms),
                    ("checkpoint", r.checkpoint_ms),
                ] {
                    println!(
                        "  {name:<10} p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms",
                        p.p50, p.p99, p.p999
                    );
                }
                println!(
                    "  verified: {}; peak RSS {:.1} MiB",
                    r.verified,
                    r.peak_rss_bytes as f64 / (1 << 20) as f64
                );
            }
            Ok(if ok {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Conformance { dir, tuning } => {
            let codec = select_codec(tuning.kernel.as_deref(), &config)?;
            // One compression thread unless asked otherwise: the figure the
            // goals are stated for.
            let threads = tuning.threads.unwrap_or(match config.engine.threads {
                0 => 1,
                n => n,
            });
            let files = conformance::vector_files(&dir)?;
            if files.is_empty() {
                return Err(Error::Other(format!(
                    "no *.vec or *.vec.zst files in {}",
                    dir.display()
                )));
            }
            let (mut passed, mut failed) = (0, 0);
            for f in &files {
                let r = conformance::run_case(f, codec, threads)?;
                match &r.failure {
                    None => {
                        passed += 1;
                        println!(
                            "PASS {}: {} checkpoints, {} pages, {} bytes identical",
                            r.name, r.checkpoints, r.pages, r.bytes
                        );
                    }
                    Some(why) => {
                        failed += 1;
                        println!("FAIL {}: {why}", r.name);
                    }
                }
            }
            println!("{passed} passed, {failed} failed");
            Ok(if failed == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            })
        }
        Command::Kernels {
            bench,
            json,
            mib,
            reps,
            density,
            kernel,
            scattered,
        } => {
            if !bench {
                let best = Kernel::best();
                for k in Kernel::ALL {
                    let status = if k.is_available() {
                        "supported"
                    } else {
                        "not supported"
                    };
                    let pick = if k == best { "  <- dispatch" } else { "" };
                    println!("{:<8} {status}{pick}", k.name());
                }
                return Ok(ExitCode::SUCCESS);
            }
            let codecs = match kernel {
                Some(name) => vec![Codec::new(name.parse::<Kernel>()?)?],
                None => kernels::supported(),
            };
            let result = kernels::bench(
                mib.max(1),
                reps.max(1),
                &density,
                &codecs,
                !scattered,
                |s| eprintln!("measuring {s}"),
            );
            if json {
                println!(
                    "{}",
                    serde_json::to_string_pretty(&result)
                        .map_err(|e| Error::Other(e.to_string()))?
                );
            } else {
                println!(
                    "GB/s of page bytes, median of {} runs, {} MiB working set; (x) = ratio to the floor",
                    result.repetitions, result.working_set_mib
                );
                print!("{}", kernels::table(&result));
                println!("dispatch: {}", result.dispatch);
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn main() -> ExitCode {
    match run(Cli::parse()) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("ckpt: {e}");
            ExitCode::from(2)
        }
    }
}
