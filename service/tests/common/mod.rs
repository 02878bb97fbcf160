//! Helpers shared by this crate's integration tests. Each test binary
//! compiles this module and uses part of it.
#![allow(dead_code)]

pub mod sim;
