//! Network namespaces: creating and deleting the named namespaces `ip netns` manages,
//! running commands inside them ([`exec`]), entering them from a thread ([`enter`]) and
//! their sysctls ([`sysctl`]).

pub mod enter;
pub mod exec;
pub mod sysctl;

use std::path::Path;

use crate::error::{LabError, Result};

/// Where `ip netns` keeps its namespace handles (bind mounts of /proc/PID/ns/net).
pub const NETNS_DIR: &str = "/run/netns";

/// Creates the named namespaces with one `ip -batch` process.
pub fn create(names: &[String]) -> Result<()> {
    let mut script = String::new();
    for name in names {
        script.push_str(&format!("netns add {name}\n"));
    }
    exec::ip_batch(None, &script, false)
}

/// Deletes the named namespaces, carrying on past ones that are already gone.
/// Processes still inside keep their namespace alive (unnamed) until they exit, so the
/// caller stops its own processes first.
pub fn delete(names: &[String]) -> Result<()> {
    let present: Vec<&String> = names.iter().filter(|n| exists(n)).collect();
    if present.is_empty() {
        return Ok(());
    }
    let mut script = String::new();
    for name in present {
        script.push_str(&format!("netns del {name}\n"));
    }
    exec::ip_batch(None, &script, true)
}

/// Whether a named namespace exists.
pub fn exists(name: &str) -> bool {
    Path::new(NETNS_DIR).join(name).exists()
}

/// Names of all named namespaces (empty when none was ever created).
pub fn list() -> Result<Vec<String>> {
    let dir = match std::fs::read_dir(NETNS_DIR) {
        Ok(dir) => dir,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(LabError::StateIo {
                path: NETNS_DIR.into(),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in dir {
        let entry = entry.map_err(|source| LabError::StateIo {
            path: NETNS_DIR.into(),
            source,
        })?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}
