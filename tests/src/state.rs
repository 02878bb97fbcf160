//! Labs across processes: `hopwatch-lab up` records its lab in
//! `/run/hopwatch-lab/<id>.json` so later CLI invocations can attach to it, and labs
//! whose process died (killed before its drop ran) can be found and removed.

use std::{
    fs,
    path::{Path, PathBuf},
};

use serde::{Deserialize, Serialize};

use crate::{
    error::{LabError, Result},
    netns,
    topology::{plan::Plan, spec::PathSelect},
};

/// Where lab records live (tmpfs: gone after a reboot, like the namespaces).
pub const STATE_DIR: &str = "/run/hopwatch-lab";

/// A running lab as recorded by its owner.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct LabState {
    /// The process that owns (and will remove) the lab.
    pub owner_pid: u32,
    /// The lab's plan.
    pub plan: Plan,
    /// Its current path selection.
    pub path: PathSelect,
}

impl LabState {
    /// The record file of lab `id`.
    pub fn file(id: &str) -> PathBuf {
        Path::new(STATE_DIR).join(format!("{id}.json"))
    }

    /// Writes (or rewrites) the record.
    pub fn save(&self) -> Result<()> {
        let path = Self::file(&self.plan.id);
        let io = |source| LabError::StateIo {
            path: path.clone(),
            source,
        };
        fs::create_dir_all(STATE_DIR).map_err(io)?;
        let json = serde_json::to_vec_pretty(self).map_err(|source| LabError::StateFormat {
            path: path.clone(),
            source,
        })?;
        // Write then rename, so a reader never sees half a file.
        let tmp = path.with_extension("json.tmp");
        fs::write(&tmp, json).map_err(io)?;
        fs::rename(&tmp, &path).map_err(io)
    }

    /// Reads the record of lab `id`.
    pub fn load(id: &str) -> Result<Self> {
        let path = Self::file(id);
        let bytes = fs::read(&path).map_err(|source| LabError::StateIo {
            path: path.clone(),
            source,
        })?;
        serde_json::from_slice(&bytes).map_err(|source| LabError::StateFormat { path, source })
    }

    /// Deletes the record of lab `id` (fine if it is already gone).
    pub fn forget(id: &str) -> Result<()> {
        let path = Self::file(id);
        match fs::remove_file(&path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                Err(LabError::StateIo { path, source: e })
            }
            _ => Ok(()),
        }
    }

    /// All recorded labs.
    pub fn list() -> Result<Vec<Self>> {
        let dir = match fs::read_dir(STATE_DIR) {
            Ok(d) => d,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => {
                return Err(LabError::StateIo {
                    path: STATE_DIR.into(),
                    source,
                })
            }
        };
        let mut labs = Vec::new();
        for entry in dir.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if let Some(id) = name.strip_suffix(".json") {
                labs.push(Self::load(id)?);
            }
        }
        labs.sort_by(|a, b| a.plan.id.cmp(&b.plan.id));
        Ok(labs)
    }

    /// Whether the owning process is still running.
    pub fn owner_alive(&self) -> bool {
        pid_alive(self.owner_pid)
    }
}

fn pid_alive(pid: u32) -> bool {
    Path::new("/proc").join(pid.to_string()).exists()
}

/// The PID in a lab namespace name `hw<pid>-<n>-<node>`, if it is one.
pub fn owner_of_namespace(name: &str) -> Option<u32> {
    let rest = name.strip_prefix("hw")?;
    let (pid, rest) = rest.split_once('-')?;
    let (n, node) = rest.split_once('-')?;
    if node.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) || n.is_empty() {
        return None;
    }
    pid.parse().ok()
}

/// Lab namespaces whose creating process is gone (it was killed before it could
/// clean up). Only names following the lab's pattern are considered.
pub fn stale_namespaces() -> Result<Vec<String>> {
    Ok(netns::list()?
        .into_iter()
        .filter(|name| owner_of_namespace(name).is_some_and(|pid| !pid_alive(pid)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_lab_namespace_names() {
        assert_eq!(owner_of_namespace("hw1234-0-r1"), Some(1234));
        assert_eq!(owner_of_namespace("hw1234-12-dst"), Some(1234));
        assert_eq!(owner_of_namespace("hw1234-x-r1"), None);
        assert_eq!(owner_of_namespace("hw1234-0-"), None);
        assert_eq!(owner_of_namespace("blue"), None);
        assert_eq!(owner_of_namespace("hwx-0-r1"), None);
    }
}
