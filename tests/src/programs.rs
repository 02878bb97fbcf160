//! Finding the external programs end-to-end tests and tools drive (prometheus,
//! promtool, chromium, chromedriver, wrk, tcpdump): their path, or an error
//! that says how to install them. A test that needs one fails with that error; it never skips.

use std::path::PathBuf;

/// A program that is not installed.
#[derive(Debug, thiserror::Error)]
#[error(
    "{program} is not installed (looked in $PATH, /usr/sbin and /usr/bin): run \
     `sudo bash deploy/setup-test.sh`, which installs prometheus (with promtool), chromium, \
     chromium-driver, wrk and tcpdump"
)]
pub struct ProgramMissing {
    pub program: String,
}

/// The full path of `program`, from `$PATH` or the system directories (root's
/// tools live in /usr/sbin, which a test's `$PATH` may lack).
pub fn find(program: &str) -> Result<PathBuf, ProgramMissing> {
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(program))
        .find(|p| p.is_file())
        .ok_or_else(|| ProgramMissing {
            program: program.to_owned(),
        })
}
