//! Fuzz target: the config loader (`Config::parse`) must never panic, whatever the
//! text. An error names the file and a line inside the text, and every error but a
//! TOML syntax error names its key; a config that parses parses the same with a
//! comment appended, and differs from itself in nothing.
//!
//! Input: the bytes as UTF-8 (lossily, as any text reaches the loader's
//! `read_to_string` only as valid UTF-8). The stable test
//! `random_and_mutated_configs_keep_errors_located` in service/src/config/tests.rs
//! checks the same.
#![no_main]

use std::path::Path;

use hopwatch::config::{Config, ConfigDiff, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: &[u8]| {
    let text = String::from_utf8_lossy(input);
    match Config::parse(&text, "fuzz.toml") {
        Err(err) => {
            let message = err.to_string();
            let line = err.line().unwrap_or_else(|| panic!("no line: {message}"));
            let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
            assert!(
                (1..=lines).contains(&line),
                "line {line} of {lines}: {message}"
            );
            assert!(
                message.starts_with(&format!("fuzz.toml:{line}: ")),
                "{message:?}"
            );
            assert_eq!(err.path(), Path::new("fuzz.toml"));
            if !matches!(err, ConfigError::Syntax { .. }) {
                assert!(err.key().is_some(), "no key: {message}");
            }
        }
        Ok(config) => {
            let again = Config::parse(&format!("{text}\n# appended\n"), "fuzz.toml")
                .unwrap_or_else(|e| panic!("a comment broke a valid config: {e}"));
            assert_eq!(again, config);
            assert!(ConfigDiff::between(&config, &config).is_empty());
        }
    }
});
