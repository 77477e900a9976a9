//! `ckpt config show`: every setting in force and where it came from (a
//! flag, an environment variable, the file, or the default).

use super::format::FormatArgs;
use super::output::{self, Out};
use super::send::range;
use super::{CacheArgs, Context, Tuning};
use crate::config::layers::{default_paths, env_name};
use crate::config::{
    DurabilityMode, FlagSet, Origin, ACK_TIMEOUT_MS, EPOCH_MS, FAILOVER_TIMEOUT_MS, HEARTBEAT_MS,
    KEYS, RECONNECT_MS, WINDOW,
};
use serde::Serialize;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

/// Subcommands of `ckpt config`.
#[derive(clap::Subcommand)]
pub enum Command {
    /// Print every setting in force and where it came from: a flag given
    /// here, an environment variable CKPT_<SECTION>_<KEY>, the file, or
    /// the default.
    Show(ShowArgs),
}

/// Arguments of `ckpt config show`: the flags that set keys in other
/// commands, to see their effect.
#[derive(clap::Args)]
pub struct ShowArgs {
    /// Print one JSON document.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    tuning: Tuning,
    #[command(flatten)]
    cache: CacheArgs,
    #[command(flatten)]
    format: FormatArgs,
    /// receiver.superpages (`bench --superpages`)
    #[arg(long, value_parser = super::parse_superpages)]
    superpages: Option<ckpt_engine::SuperpagePolicy>,
    /// record.epoch_ms (`record`/`send --epoch-ms`)
    #[arg(long, value_parser = range(EPOCH_MS))]
    epoch_ms: Option<u64>,
    /// replication.window (`send`/`demo --window`)
    #[arg(long, value_parser = range(WINDOW))]
    window: Option<u64>,
    /// replication.heartbeat_ms (`send --heartbeat-ms`)
    #[arg(long, value_parser = range(HEARTBEAT_MS))]
    heartbeat_ms: Option<u64>,
    /// replication.ack_timeout_ms (`send --timeout-ms`)
    #[arg(long, value_parser = range(ACK_TIMEOUT_MS))]
    ack_timeout_ms: Option<u64>,
    /// replication.reconnect_ms (`send --reconnect-ms`)
    #[arg(long, value_parser = range(RECONNECT_MS))]
    reconnect_ms: Option<u64>,
    /// replication.failover_timeout_ms (`recv --timeout-ms`)
    #[arg(long, value_parser = range(FAILOVER_TIMEOUT_MS))]
    failover_timeout_ms: Option<u64>,
    /// replication.durability (`recv --durability`)
    #[arg(long, value_enum)]
    durability: Option<DurabilityMode>,
}

impl ShowArgs {
    fn flags(&self) -> FlagSet {
        let mut f = FlagSet::default();
        self.tuning.flags(&mut f);
        self.cache.flags(&mut f);
        self.format.flags(&mut f);
        f.opt(
            "receiver.superpages",
            "--superpages",
            self.superpages.map(ckpt_engine::SuperpagePolicy::name),
        );
        f.opt("record.epoch_ms", "--epoch-ms", self.epoch_ms);
        f.opt("replication.window", "--window", self.window);
        f.opt(
            "replication.heartbeat_ms",
            "--heartbeat-ms",
            self.heartbeat_ms,
        );
        f.opt(
            "replication.ack_timeout_ms",
            "--ack-timeout-ms",
            self.ack_timeout_ms,
        );
        f.opt(
            "replication.reconnect_ms",
            "--reconnect-ms",
            self.reconnect_ms,
        );
        f.opt(
            "replication.failover_timeout_ms",
            "--failover-timeout-ms",
            self.failover_timeout_ms,
        );
        f.opt(
            "replication.durability",
            "--durability",
            self.durability.map(DurabilityMode::name),
        );
        f
    }
}

/// One setting in force.
#[derive(Serialize)]
struct Setting {
    key: String,
    value: serde_json::Value,
    origin: Origin,
    /// The environment variable that sets this key.
    env: String,
    /// What a special value means on this machine.
    #[serde(skip_serializing_if = "Option::is_none")]
    means: Option<String>,
}

/// The `--json` document.
#[derive(Serialize)]
struct Document {
    /// The file read, if any.
    file: Option<PathBuf>,
    /// Where a file is looked for when none is named.
    default_paths: Vec<PathBuf>,
    settings: Vec<Setting>,
}

/// Runs `ckpt config ...`.
pub fn run(ctx: &Context, cmd: Command) -> anyhow::Result<ExitCode> {
    match cmd {
        Command::Show(args) => show(ctx, &args),
    }
}

fn show(ctx: &Context, args: &ShowArgs) -> anyhow::Result<ExitCode> {
    let ctx = ctx.with_flags(&args.flags())?;
    let values = serde_json::to_value(&ctx.config)?;
    let mut settings = Vec::new();
    for (section, keys) in KEYS {
        for key in *keys {
            let full = format!("{section}.{key}");
            let value = values[section][key].clone();
            settings.push(Setting {
                means: means(&ctx, &full),
                origin: ctx.layers.origin(&full),
                env: env_name(&full),
                key: full,
                value,
            });
        }
    }
    let doc = Document {
        file: ctx.layers.file().map(PathBuf::from),
        default_paths: default_paths(),
        settings,
    };
    let mut out = Out::new();
    if args.json {
        output::json(&mut out, &doc)?;
    } else {
        print(&mut out, &doc)?;
    }
    Ok(ExitCode::SUCCESS)
}

/// What "auto" and 0 resolve to here.
fn means(ctx: &Context, key: &str) -> Option<String> {
    let e = &ctx.config.engine;
    match key {
        "engine.kernel" if e.kernel.eq_ignore_ascii_case("auto") => Some(format!(
            "{} (the best this CPU runs)",
            ckpt_engine::Codec::best().kernel()
        )),
        "engine.threads" if e.threads == 0 => Some(format!("{} (one per core)", ctx.threads())),
        _ => None,
    }
}

fn print(out: &mut Out, doc: &Document) -> anyhow::Result<()> {
    match &doc.file {
        Some(p) => writeln!(out, "# config file: {}", p.display())?,
        None => writeln!(
            out,
            "# config file: none (looked for {})",
            doc.default_paths
                .iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join(", ")
        )?,
    }
    writeln!(
        out,
        "# precedence: flag > environment (CKPT_<SECTION>_<KEY>) > file > default; each command's flags override its keys"
    )?;
    let mut section = "";
    for s in &doc.settings {
        let (sec, key) = s.key.split_once('.').unwrap_or(("", &s.key));
        if sec != section {
            writeln!(out, "\n[{sec}]")?;
            section = sec;
        }
        let assignment = format!("{key} = {}", s.value);
        let means = s
            .means
            .as_ref()
            .map_or(String::new(), |m| format!(" -> {m}"));
        writeln!(out, "{assignment:<36} # {}{means}", s.origin)?;
    }
    Ok(())
}
