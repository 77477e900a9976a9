use super::check::max_threads;
use super::*;
use std::path::Path;

#[test]
fn defaults_and_overrides() {
    let c = Config::parse("[engine]\ncache_pages = 100\nkernel = \"avx2\"\n").unwrap();
    assert_eq!(c.engine.cache_pages, CacheSize::Pages(100));
    assert_eq!(c.engine.ring_pages, 8196);
    assert_eq!(c.engine.kernel, "avx2");
    assert_eq!(Config::parse("").unwrap(), Config::default());
    let c = Config::parse("[stream]\nformat = \"records\"\nzstd_level = \"off\"\n").unwrap();
    assert_eq!(c.stream.format, ckpt_engine::Format::Records);
    assert_eq!(c.stream.zstd_level, ZstdLevel::Off);
    let c = Config::parse("[replication]\ndurability = \"in-place\"\nwindow = 4\n").unwrap();
    assert_eq!(c.replication.durability, DurabilityMode::InPlace);
    assert_eq!(c.replication.window, 4);
}

#[test]
fn the_defaults_round_trip_through_toml() {
    let text = toml::to_string(&Config::default()).unwrap();
    assert_eq!(Config::parse(&text).unwrap(), Config::default());
}

#[test]
fn out_of_range_values_name_the_key_the_value_and_the_range() {
    for (text, key) in [
        (
            "[engine]\ncache_pages = 5000000000",
            "engine.cache_pages = 5000000000",
        ),
        (
            "[engine]\ncache_pages = 0",
            "engine.cache_pages = 0 is outside 1..=",
        ),
        (
            "[engine]\nring_pages = 4294967296000",
            "engine.ring_pages = 4294967296000",
        ),
        ("[engine]\nring_pages = 0", "engine.ring_pages = 0"),
        (
            "[engine]\ncache_budget_mib = 0",
            "engine.cache_budget_mib = 0 is outside 1..=",
        ),
        (
            "[engine]\nthreads = 100000",
            "engine.threads = 100000 is outside 0..=",
        ),
        (
            "[record]\nepoch_ms = 18446744073709551615",
            "record.epoch_ms = 18446744073709551615 is outside 1..=60000",
        ),
        ("[record]\nepoch_ms = 0", "record.epoch_ms = 0"),
        (
            "[receiver]\nmax_guest_pages = 1099511627776",
            "receiver.max_guest_pages = 1099511627776 is outside 1..=268435456",
        ),
        (
            "[receiver]\nmax_chunk_bytes = 0",
            "receiver.max_chunk_bytes = 0 is outside 1..=",
        ),
        (
            "[receiver]\nmax_checkpoint_bytes = 4095",
            "receiver.max_checkpoint_bytes = 4095 is outside 4096..=",
        ),
        (
            "[receiver]\nmax_checkpoint_entries = 0",
            "receiver.max_checkpoint_entries = 0",
        ),
        (
            "[stream]\nzstd_level = 23",
            "stream.zstd_level = 23 is outside ",
        ),
        (
            "[replication]\nwindow = 0",
            "replication.window = 0 is outside 1..=1024",
        ),
        (
            "[replication]\nack_timeout_ms = 9",
            "replication.ack_timeout_ms = 9 is outside 10..=3600000",
        ),
        (
            "[replication]\nfailover_timeout_ms = 3600001",
            "replication.failover_timeout_ms = 3600001 is outside 10..=3600000",
        ),
    ] {
        let e = Config::parse(text).unwrap_err();
        assert!(e.contains(key), "{text}: {e}");
        assert!(e.ends_with("(from file text)"), "{text}: {e}");
    }
    // A negative number or one past u64 is TOML's or serde's to refuse.
    assert!(Config::parse("[engine]\nthreads = -1").is_err());
    assert!(Config::parse("[record]\nepoch_ms = 18446744073709551616").is_err());
    assert_eq!(parse_threads("0"), Ok(0));
    assert_eq!(parse_working_set_mib("1"), Ok(1));
    assert!(parse_working_set_mib("0")
        .unwrap_err()
        .contains("--mib = 0"));
    assert!(parse_working_set_mib("65537").is_err());
    assert!(parse_threads(&(max_threads() + 1).to_string())
        .unwrap_err()
        .contains("--threads"));
}

#[test]
fn a_file_over_the_cap_is_not_read() {
    let dir = tempfile::tempdir().unwrap();
    let big = dir.path().join("big.toml");
    std::fs::write(&big, "#".repeat(MAX_CONFIG_BYTES as usize + 1)).unwrap();
    assert!(matches!(
        Layers::load(Some(&big)),
        Err(ConfigError::TooLarge { .. })
    ));
    let ok = dir.path().join("ok.toml");
    std::fs::write(&ok, "#".repeat(MAX_CONFIG_BYTES as usize)).unwrap();
    assert_eq!(Layers::load(Some(&ok)).unwrap().file(), Some(ok.as_path()));
    assert!(matches!(
        Layers::load(Some(dir.path())),
        Err(ConfigError::Io { .. })
    ));
    assert!(matches!(
        Layers::load(Some(&dir.path().join("missing.toml"))),
        Err(ConfigError::Io { .. })
    ));
    #[cfg(target_os = "linux")]
    assert!(matches!(
        Layers::load(Some(Path::new("/dev/zero"))),
        Err(ConfigError::TooLarge { .. })
    ));
}

#[test]
fn unknown_keys_and_wrong_types_name_the_key_and_the_file() {
    let e = Config::parse("[engine]\ncache_page = 1\n").unwrap_err();
    assert!(
        e.starts_with("engine.cache_page (from file text): unknown key"),
        "{e}"
    );
    let e = Config::parse("[bogus]\nx = 1\n").unwrap_err();
    assert!(e.starts_with("bogus (from file text): unknown key"), "{e}");
    let e = Config::parse("[engine]\nthreads = \"two\"\n").unwrap_err();
    assert!(
        e.starts_with("engine.threads (from file text): found"),
        "{e}"
    );
    assert!(e.contains("\"two\""), "{e}");
    let e = Config::parse("[engine]\ncache_pages = true\n").unwrap_err();
    assert!(
        e.contains(
            "engine.cache_pages (from file text): found bool true, expected a number or a word"
        ),
        "{e}"
    );
    let e = Config::parse("[stream]\nformat = \"xml\"\n").unwrap_err();
    assert!(e.starts_with("stream.format (from file text):"), "{e}");
    let e = Config::parse("[engine\n").unwrap_err();
    assert!(e.starts_with("invalid config text:"), "{e}");
}

#[test]
fn flags_are_over_the_file_and_say_so() {
    let layers = Layers::from_text("[engine]\nthreads = 3\nring_pages = 100\n", "f.toml").unwrap();
    let mut flags = FlagSet::default();
    flags.set("engine.threads", "--threads", 1u64);
    flags.set("stream.zstd_level", "--zstd-level", ZstdLevel::Off);
    let l = layers.with_flags(&flags);
    let c = l.extract().unwrap();
    assert_eq!(c.engine.threads, 1);
    assert_eq!(c.engine.ring_pages, 100);
    assert_eq!(c.stream.zstd_level, ZstdLevel::Off);
    assert_eq!(l.origin("engine.threads"), Origin::Flag("--threads".into()));
    assert_eq!(l.origin("engine.ring_pages"), Origin::File("f.toml".into()));
    assert_eq!(l.origin("engine.kernel"), Origin::Default);
    let mut flags = FlagSet::default();
    flags.set("engine.threads", "--threads", 100_000u64);
    let e = layers.with_flags(&flags).extract().unwrap_err().to_string();
    assert!(
        e.starts_with("engine.threads = 100000 is outside 0..="),
        "{e}"
    );
    assert!(e.ends_with("(from flag --threads)"), "{e}");
}
