//! The properties every outcome of [`Config::parse`] must have, in one place
//! for the two checks that drive the loader with random text: the stable
//! property test in `config/tests.rs` and the fuzz target `config_parse`
//! (service/fuzz). Panics name the broken property.

use std::path::Path;

use super::{Config, ConfigDiff, ConfigError};

/// The file name the checks parse under, which every error must name.
pub const FILE: &str = "fuzz.toml";

/// Parses `text` and asserts: an error names [`FILE`] and a line inside the
/// text, and every error but a TOML syntax error names its key; a config
/// that parses parses the same again with a comment appended, and differs
/// from itself in nothing.
pub fn parse_asserting_properties(text: &str) -> Result<Config, ConfigError> {
    let result = Config::parse(text, FILE);
    match &result {
        Err(err) => {
            let message = err.to_string();
            let line = err.line().unwrap_or_else(|| panic!("no line: {message}"));
            let lines = text.bytes().filter(|&b| b == b'\n').count() + 1;
            assert!(
                (1..=lines).contains(&line),
                "line {line} of {lines}: {message}"
            );
            assert!(
                message.starts_with(&format!("{FILE}:{line}: ")),
                "{message:?}"
            );
            assert_eq!(err.path(), Path::new(FILE));
            if !matches!(err, ConfigError::Syntax { .. }) {
                assert!(err.key().is_some(), "no key: {message}");
            }
        }
        Ok(config) => {
            let again = Config::parse(&format!("{text}\n# appended\n"), FILE)
                .unwrap_or_else(|e| panic!("a comment broke a valid config: {e}"));
            assert_eq!(&again, config);
            assert!(ConfigDiff::between(config, config).is_empty());
        }
    }
    result
}
