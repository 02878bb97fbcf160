//! Sysctls inside a namespace. The `net.*` tree under /proc/sys belongs to the
//! namespace of the thread that opens the file, so a thread that has entered the
//! namespace writes them directly: no `ip netns exec sysctl` process per key.

use std::{fs, io};

use super::enter;
use crate::error::{LabError, Result};

/// Writes each `(dotted.key, value)` inside `ns`, in order.
pub fn set(ns: &str, settings: &[(String, String)]) -> Result<()> {
    enter::run_in(ns, || {
        for (key, value) in settings {
            fs::write(proc_path(key), value).map_err(|source| LabError::Sysctl {
                ns: ns.to_owned(),
                key: key.clone(),
                value: Some(value.clone()),
                source,
            })?;
        }
        Ok(())
    })?
}

/// Reads one sysctl inside `ns` (trimmed).
pub fn get(ns: &str, key: &str) -> Result<String> {
    enter::run_in(ns, || {
        fs::read_to_string(proc_path(key))
            .map(|v| v.trim().to_owned())
            .map_err(|source: io::Error| LabError::Sysctl {
                ns: ns.to_owned(),
                key: key.to_owned(),
                value: None,
                source,
            })
    })?
}

/// `net.ipv4.conf.all.rp_filter` -> `/proc/sys/net/ipv4/conf/all/rp_filter`. Interface
/// names in the lab never contain dots, so the naive mapping is exact.
fn proc_path(key: &str) -> String {
    format!("/proc/sys/{}", key.replace('.', "/"))
}
