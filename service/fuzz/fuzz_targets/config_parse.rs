//! Fuzz target: the config loader (`Config::parse`) must never panic, whatever the
//! text. An error names the file and a line inside the text, and every error but a
//! TOML syntax error names its key; a config that parses parses the same with a
//! comment appended, and differs from itself in nothing.
//!
//! Input: the bytes as UTF-8 (lossily, as any text reaches the loader's
//! `read_to_string` only as valid UTF-8). The properties are
//! `hopwatch::config::properties`, which the stable test
//! `random_and_mutated_configs_keep_errors_located` checks too.
#![no_main]

use hopwatch::config::properties::parse_asserting_properties;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    // The properties live beside the loader (service/src/config/properties.rs),
    // shared with the stable test.
    let _ = parse_asserting_properties(&text);
});
