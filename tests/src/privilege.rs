//! Checks up front that the process can build a lab, so a missing privilege fails with
//! one clear message instead of a confusing `ip` error halfway through.

use crate::error::{LabError, Result};

const CAP_NET_ADMIN: u32 = 12;
const CAP_SYS_ADMIN: u32 = 21;

/// Fails with [`LabError::NotPrivileged`] unless the effective capability set has
/// CAP_NET_ADMIN (links, routes, firewall) and CAP_SYS_ADMIN (namespaces, setns).
pub fn check() -> Result<()> {
    let status =
        std::fs::read_to_string("/proc/self/status").map_err(|source| LabError::StateIo {
            path: "/proc/self/status".into(),
            source,
        })?;
    let missing = missing_capabilities(&status);
    if missing.is_empty() {
        Ok(())
    } else {
        Err(LabError::NotPrivileged {
            missing: missing.join(", "),
        })
    }
}

/// The lab's capabilities absent from the `CapEff:` line of a /proc/PID/status text.
fn missing_capabilities(status: &str) -> Vec<&'static str> {
    let effective = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))
        .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        .unwrap_or(0);
    [
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_SYS_ADMIN, "CAP_SYS_ADMIN"),
    ]
    .into_iter()
    .filter(|(bit, _)| effective & (1 << bit) == 0)
    .map(|(_, name)| name)
    .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_effective_capabilities() {
        assert!(missing_capabilities("CapEff:\t000001ffffffffff\n").is_empty());
        assert_eq!(
            missing_capabilities("CapInh:\t0\nCapEff:\t0000000000001000\n"),
            ["CAP_SYS_ADMIN"]
        );
        assert_eq!(
            missing_capabilities("CapEff:\t0000000000000000\n"),
            ["CAP_NET_ADMIN", "CAP_SYS_ADMIN"]
        );
        let message = LabError::NotPrivileged {
            missing: "CAP_NET_ADMIN".into(),
        }
        .to_string();
        assert!(message.contains("needs root"), "{message}");
    }
}
