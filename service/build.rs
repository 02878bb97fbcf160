//! Builds hopwatch's kernel programs (probe-ebpf) and leaves the object in OUT_DIR,
//! where src/probe/ebpf/load.rs embeds it with `aya::include_bytes_aligned!`.
//!
//! The kernel crate only builds with Debian's rustc-web (the one toolchain here with
//! a precompiled `core` for bpfel-unknown-none) and bpf-linker, so this script runs
//! `/usr/bin/cargo` in probe-ebpf/ (whose .cargo/config.toml selects them) with the
//! outer cargo's build variables removed, and stops with the setup command when the
//! toolchain is missing. See docs/architecture.md and shared ebpf-toolchain notes.

use std::env;
use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

const SETUP: &str = "sudo deploy/setup.sh";
const DEBIAN_CARGO: &str = "/usr/bin/cargo";
const DEBIAN_RUSTC: &str = "/usr/bin/rustc";
const BPF_TARGET: &str = "bpfel-unknown-none";
/// The kernel crate's binary name (probe-ebpf/Cargo.toml `[[bin]]`).
const OBJECT: &str = "hopwatch-probe";

fn main() {
    if let Err(message) = run() {
        // A build script reports failure through its exit status; cargo shows stderr.
        eprintln!("error: {message}");
        std::process::exit(1);
    }
}

fn run() -> Result<(), String> {
    let manifest_dir = PathBuf::from(var("CARGO_MANIFEST_DIR")?);
    let root = manifest_dir
        .parent()
        .ok_or("service/ has no parent directory")?;
    let ebpf_dir = root.join("probe-ebpf");
    let common_dir = root.join("probe-common");
    let out_dir = PathBuf::from(var("OUT_DIR")?);

    for path in [
        ebpf_dir.join("src"),
        ebpf_dir.join("Cargo.toml"),
        ebpf_dir.join("Cargo.lock"),
        ebpf_dir.join(".cargo/config.toml"),
        common_dir.join("src"),
        common_dir.join("Cargo.toml"),
    ] {
        println!("cargo:rerun-if-changed={}", path.display());
    }

    let path_var = path_with_cargo_bin();
    check_toolchain(&path_var)?;

    let target_dir = kernel_target_dir(&out_dir);
    let mut cmd = Command::new(DEBIAN_CARGO);
    cmd.current_dir(&ebpf_dir)
        .args(["build", "--release", "--locked", "--target-dir"])
        .arg(&target_dir)
        .env("PATH", &path_var)
        // The inner cargo's stdout must not reach ours: cargo would read any
        // `cargo:` line there as a directive for this package.
        .stdout(Stdio::from(std::io::stderr()));
    scrub_env(&mut cmd);
    let status = cmd
        .status()
        .map_err(|e| format!("running {DEBIAN_CARGO} failed: {e}; run `{SETUP}`"))?;
    if !status.success() {
        return Err(format!(
            "building the eBPF programs in {} failed ({status}); the compiler output is above. \
             If the toolchain is incomplete, run `{SETUP}`",
            ebpf_dir.display()
        ));
    }

    let built = target_dir.join(BPF_TARGET).join("release").join(OBJECT);
    let dest = out_dir.join("hopwatch-probe.bpf.o");
    copy_if_changed(&built, &dest)
}

fn var(name: &str) -> Result<String, String> {
    env::var(name).map_err(|e| format!("{name}: {e}"))
}

/// bpf-linker is installed with `cargo install`, into $CARGO_HOME/bin, which may
/// not be on PATH when cargo is run by an IDE or a service manager.
fn path_with_cargo_bin() -> OsString {
    let mut dirs: Vec<PathBuf> = env::var_os("PATH")
        .map(|p| env::split_paths(&p).collect())
        .unwrap_or_default();
    let cargo_home = env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| env::var_os("HOME").map(|h| Path::new(&h).join(".cargo")));
    if let Some(bin) = cargo_home.map(|h| h.join("bin")) {
        if !dirs.contains(&bin) {
            dirs.push(bin);
        }
    }
    env::join_paths(dirs).unwrap_or_default()
}

fn check_toolchain(path_var: &OsString) -> Result<(), String> {
    let missing = |what: &str| {
        format!(
            "the eBPF toolchain is incomplete: {what}. Run `{SETUP}` \
             (installs Debian's rustc-web, libstd-rust-web-dev-bpf and bpf-linker)"
        )
    };
    for tool in [DEBIAN_RUSTC, DEBIAN_CARGO] {
        if !Path::new(tool).exists() {
            return Err(missing(&format!("{tool} not found")));
        }
    }
    let linker_found = env::split_paths(path_var).any(|dir| dir.join("bpf-linker").is_file());
    if !linker_found {
        return Err(missing(
            "bpf-linker not found on PATH or in $CARGO_HOME/bin",
        ));
    }
    let libdir = Command::new(DEBIAN_RUSTC)
        .args(["--print", "target-libdir", "--target", BPF_TARGET])
        .output()
        .map_err(|e| missing(&format!("{DEBIAN_RUSTC} does not run ({e})")))?;
    let libdir = PathBuf::from(String::from_utf8_lossy(&libdir.stdout).trim());
    let has_core = fs::read_dir(&libdir)
        .map(|entries| {
            entries.flatten().any(|e| {
                let name = e.file_name();
                let name = name.to_string_lossy();
                name.starts_with("libcore-") && name.ends_with(".rlib")
            })
        })
        .unwrap_or(false);
    if !has_core {
        return Err(missing(&format!(
            "no precompiled core for {BPF_TARGET} in {}",
            libdir.display()
        )));
    }
    Ok(())
}

/// Where the inner build keeps its artifacts. OUT_DIR changes with every profile
/// and tool (build, test, clippy, release each get their own), so a target dir
/// inside it would rebuild the kernel crate from scratch for each of them. One
/// directory next to the outer build's own (`<target>/<profile>/build/<pkg>/out`
/// → `<target>/hopwatch-probe-ebpf`) is shared instead; the inner cargo's lock
/// on it serialises concurrent builds. A build with `--target` (the arm64 cross
/// build) has one more level, `<target>/<triple>/<profile>/...`, and shares the
/// same directory: the bpfel object does not depend on the userspace target.
fn kernel_target_dir(out_dir: &Path) -> PathBuf {
    let ancestors: Vec<&Path> = out_dir.ancestors().take(6).collect();
    let triple = env::var_os("TARGET");
    match ancestors.as_slice() {
        [_out, _pkg, build, _profile, triple_dir, target]
            if build.file_name().is_some_and(|n| n == "build")
                && triple_dir.file_name() == triple.as_deref() =>
        {
            target.join("hopwatch-probe-ebpf")
        }
        [_out, _pkg, build, _profile, target, ..]
            if build.file_name().is_some_and(|n| n == "build") =>
        {
            target.join("hopwatch-probe-ebpf")
        }
        _ => out_dir.join("probe-ebpf-target"),
    }
}

/// Removes what the outer cargo sets for build scripts (and what a user may set
/// for the host build) so the inner build uses probe-ebpf's own configuration:
/// rustc-web, the bpf target, its own target dir and profile.
fn scrub_env(cmd: &mut Command) {
    const EXACT: &[&str] = &[
        "RUSTC",
        "RUSTDOC",
        "RUSTC_WRAPPER",
        "RUSTC_WORKSPACE_WRAPPER",
        "RUSTUP_TOOLCHAIN",
        "RUSTFLAGS",
        "RUSTDOCFLAGS",
        "RUSTC_LINKER",
        "CARGO",
        "CARGO_ENCODED_RUSTFLAGS",
        "CARGO_TARGET_DIR",
        "CARGO_BUILD_TARGET",
        "CARGO_BUILD_RUSTC",
        "CARGO_CRATE_NAME",
        "CARGO_PRIMARY_PACKAGE",
        "CARGO_INCREMENTAL",
        "OUT_DIR",
        "TARGET",
        "HOST",
        "PROFILE",
        "DEBUG",
        "OPT_LEVEL",
        "NUM_JOBS",
    ];
    const PREFIXES: &[&str] = &[
        "CARGO_CFG_",
        "CARGO_FEATURE_",
        "CARGO_PKG_",
        "CARGO_MANIFEST_",
        "CARGO_BUILD_",
        "CARGO_TARGET_",
        "CARGO_PROFILE_",
        "DEP_",
    ];
    for (key, _) in env::vars_os() {
        let Some(key) = key.to_str() else { continue };
        if EXACT.contains(&key) || PREFIXES.iter().any(|p| key.starts_with(p)) {
            cmd.env_remove(key);
        }
    }
}

/// Copies only when the bytes differ, so an unchanged object keeps its mtime.
fn copy_if_changed(from: &Path, to: &Path) -> Result<(), String> {
    let new = fs::read(from).map_err(|e| format!("reading {}: {e}", from.display()))?;
    if fs::read(to).ok().as_deref() == Some(new.as_slice()) {
        return Ok(());
    }
    fs::write(to, new).map_err(|e| format!("writing {}: {e}", to.display()))
}
