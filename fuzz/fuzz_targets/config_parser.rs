//! The configuration parser on arbitrary text: never a panic; whatever it
//! accepts is within every range it promises.
#![no_main]

// The configuration belongs to the `ckpt` binary, not to a library: the
// harness compiles the same file.
#[allow(dead_code, unused_imports)]
#[path = "../../src/config/mod.rs"]
mod config;

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Ok(c) = config::Config::parse(text) {
        assert!(c.check().is_ok());
        if let config::CacheSize::Pages(n) = c.engine.cache_pages {
            assert!(n >= 1);
        }
        assert!(c.engine.ring_pages >= 1 && c.engine.cache_budget_mib >= 1);
        assert!((1..=1024).contains(&c.replication.window));
        assert!((1..=60_000).contains(&c.record.epoch_ms));
        assert!((1..=1 << 28).contains(&c.receiver.max_guest_pages));
    }
});
