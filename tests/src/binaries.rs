//! Where the binaries under test are: the `hopwatch` of the same build as the
//! running test executable.

use std::path::PathBuf;

/// `target/<profile>/hopwatch` next to the running test executable
/// (`target/<profile>/deps/<test>-<hash>`). `cargo test --workspace` builds it,
/// because the service package's own tests need it; a lone
/// `cargo test -p hopwatch-tests` needs `cargo build -p hopwatch-service` first.
///
/// Panics with that advice when the binary is missing.
pub fn hopwatch_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable path");
    let bin = exe
        .parent()
        .and_then(|deps| deps.parent())
        .map(|profile| profile.join("hopwatch"))
        .expect("target directory layout");
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p hopwatch-service` (cargo test --workspace does)",
        bin.display()
    );
    bin
}
