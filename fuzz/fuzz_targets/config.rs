//! The config parser and every self-validating value type on arbitrary
//! text: errors, never panics. (Deep nesting is bounded before parsing.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use socksbalance::config::{BackendAddr, Cidr, Config, DestRule, GoDuration, ListenAddr, ProbeUrl};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if let Err(e) = Config::from_yaml(text) {
        // Every error says something.
        assert!(!e.to_string().is_empty());
    }
    let _ = text.parse::<GoDuration>();
    let _ = text.parse::<BackendAddr>();
    let _ = text.parse::<ListenAddr>();
    let _ = text.parse::<ProbeUrl>();
    let _ = text.parse::<Cidr>();
    let _ = text.parse::<DestRule>();
});
