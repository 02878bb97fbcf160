//! `hopwatch check`: checks the config, the kernel features and the process's
//! capabilities, whether the history store and the alert outbox open (and
//! which quarantined copies lie in the state directory), whether the ASN and
//! city databases open, and explains what will fall back before the daemon
//! starts.

use std::path::Path;

use clap::Args;
use hopwatch_probe_common::ProbeFilter;

use super::{exit, ConfigArg};
use crate::alerts::{outbox_path, Outbox};
use crate::config::{Config, EnrichmentConfig};
use crate::enrich::{AsnDatabase, CityDatabase};
use crate::monitor::components;
use crate::probe::ebpf::EbpfTimestamper;
use crate::store::rollup_files::{FileDamage, Grain, RollupFiles};
use crate::store::segment::{Damage, Found, Segments};
use crate::store::{Store, StoreConfig};

#[derive(Debug, Args)]
#[command(mut_arg("config", |a| a.help("The config file to check")))]
pub struct CheckArgs {
    #[command(flatten)]
    pub config: ConfigArg,

    /// Skip loading the eBPF programs (the check attaches them for a moment).
    #[arg(long)]
    pub no_ebpf_load: bool,
}

/// One finding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    pub what: String,
    pub detail: String,
}

/// How a finding affects the daemon.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Ok,
    /// Works, with a fallback or a caveat.
    Warn,
    /// The daemon will not start or not probe.
    Fail,
}

impl Level {
    fn mark(self) -> &'static str {
        match self {
            Level::Ok => "ok  ",
            Level::Warn => "warn",
            Level::Fail => "FAIL",
        }
    }
}

/// Linux capability numbers (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;
const CAP_NET_RAW: u32 = 13;
const CAP_SYS_ADMIN: u32 = 21;
const CAP_PERFMON: u32 = 38;
const CAP_BPF: u32 = 39;

pub async fn run(args: CheckArgs) -> i32 {
    let findings = check(&args).await;
    for f in &findings {
        println!("[{}] {}: {}", f.level.mark(), f.what, f.detail);
    }
    let worst = findings.iter().map(|f| f.level).max().unwrap_or(Level::Ok);
    match worst {
        Level::Ok => {
            println!("\nall good: hopwatch will run with eBPF timestamps");
            0
        }
        Level::Warn => {
            println!("\nhopwatch will run, with the fallbacks above");
            0
        }
        Level::Fail => {
            println!("\nhopwatch will not run as configured: fix the FAIL lines above");
            exit::OTHER
        }
    }
}

fn finding(level: Level, what: &str, detail: impl Into<String>) -> Finding {
    Finding {
        level,
        what: what.to_owned(),
        detail: detail.into(),
    }
}

/// Runs every check; never panics, never changes the system for longer than
/// the eBPF load test.
pub async fn check(args: &CheckArgs) -> Vec<Finding> {
    let mut out = Vec::new();
    let config = match Config::load(&args.config.path) {
        Ok(config) => {
            let active = config.targets.iter().filter(|t| !t.paused).count();
            let detail = format!(
                "{} parses: {} targets ({} active), store in {}",
                args.config.path.display(),
                config.targets.len(),
                active,
                config.service.state_dir.display()
            );
            out.push(finding(Level::Ok, "config", detail));
            if config.targets.is_empty() {
                out.push(finding(
                    Level::Warn,
                    "targets",
                    "no targets configured: nothing will be probed until you add [[target]] entries",
                ));
            }
            Some(config)
        }
        Err(err) => {
            out.push(finding(Level::Fail, "config", err.to_string()));
            None
        }
    };
    if let Some(config) = &config {
        out.push(state_dir_check(&config.service.state_dir));
        out.extend(storage_checks(&config.service.state_dir));
        out.extend(database_checks(&config.enrichment));
    }
    out.push(kernel_version_check());
    out.push(btf_check());
    let caps = effective_capabilities();
    out.extend(capability_checks(caps));
    if !args.no_ebpf_load {
        out.push(ebpf_load_check().await);
    }
    out
}

/// The configured ASN and city databases open. A bad file does not stop the
/// daemon, which then serves pages without names, AS numbers and positions,
/// so it is a warning; its message names the file and the config key.
pub fn database_checks(enrichment: &EnrichmentConfig) -> Vec<Finding> {
    let mut out = Vec::new();
    if let Some(path) = &enrichment.asn_database {
        out.push(match AsnDatabase::open(path) {
            Ok(db) => finding(
                Level::Ok,
                "ASN database",
                format!("{} ({})", path.display(), db.database_type()),
            ),
            Err(err) => finding(
                Level::Warn,
                "ASN database",
                format!("{err}; the web UI will run without names, AS numbers and positions"),
            ),
        });
    }
    if let Some(path) = &enrichment.city_database {
        out.push(match CityDatabase::open(path) {
            Ok(db) => finding(
                Level::Ok,
                "city database",
                format!("{} ({})", path.display(), db.database_type()),
            ),
            Err(err) => finding(
                Level::Warn,
                "city database",
                format!("{err}; the web UI will run without names, AS numbers and positions"),
            ),
        });
    }
    out
}

fn state_dir_check(dir: &std::path::Path) -> Finding {
    // Check without creating anything: the daemon creates the directory itself.
    let existing = dir.ancestors().find(|d| d.exists()).unwrap_or(dir);
    let writable = nix::unistd::access(existing, nix::unistd::AccessFlags::W_OK).is_ok();
    match (existing == dir, writable) {
        (true, true) => finding(
            Level::Ok,
            "state directory",
            format!("{} is writable", dir.display()),
        ),
        (false, true) => finding(
            Level::Ok,
            "state directory",
            format!(
                "{} will be created (in {})",
                dir.display(),
                existing.display()
            ),
        ),
        (_, false) => finding(
            Level::Fail,
            "state directory",
            format!("{} is not writable by this user", existing.display()),
        ),
    }
}

/// Whether the history store and the outbox open, and the quarantined
/// copies beside them. sled 0.34 has no read-only mode and writes while it
/// opens (recovery, the schema version), so each is opened on a copy in the
/// temporary directory; one held by a running daemon is not copied (it may be
/// mid-write) and the daemon's `/readyz` has its state instead.
pub fn storage_checks(state_dir: &Path) -> Vec<Finding> {
    let mut out = Vec::new();
    let scratch = std::env::temp_dir().join(format!("hopwatch-check-{}", std::process::id()));
    let store_copy = scratch.join("store");
    out.push(open_check(
        "history store",
        state_dir,
        &state_dir.join("db"),
        |to| copy_sled_files(state_dir, to),
        &store_copy,
        |copy| {
            Store::open(copy, StoreConfig::default())
                .map(drop)
                .map_err(|e| e.to_string())
        },
    ));
    out.push(rounds_check(&state_dir.join(crate::store::ROUNDS_DIR)));
    let rollups = state_dir.join(crate::store::ROLLUPS_DIR);
    out.push(rollups_check(&rollups, Grain::MINUTES));
    out.push(rollups_check(&rollups, Grain::HOURS));
    let outbox = outbox_path(state_dir);
    let outbox_copy = scratch.join("outbox");
    out.push(open_check(
        "alert outbox",
        &outbox,
        &outbox.join("db"),
        |to| copy_tree(&outbox, to),
        &outbox_copy,
        |copy| Outbox::open(copy, &[]).map(drop).map_err(|e| e.to_string()),
    ));
    let _ = std::fs::remove_dir_all(&scratch);
    match components::list_quarantined(state_dir) {
        Ok(found) if found.is_empty() => {
            out.push(finding(Level::Ok, "quarantine", "no quarantined copies"));
        }
        Ok(found) => {
            let names: Vec<String> = found.iter().map(|p| p.display().to_string()).collect();
            out.push(finding(
                Level::Warn,
                "quarantine",
                format!(
                    "{} quarantined cop{} kept (could not be opened; see the README's troubleshooting): {}",
                    found.len(),
                    if found.len() == 1 { "y" } else { "ies" },
                    names.join(", ")
                ),
            ));
        }
        // A missing state directory: nothing was ever quarantined.
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => out.push(finding(
            Level::Warn,
            "quarantine",
            format!("cannot list {}: {e}", state_dir.display()),
        )),
    }
    out
}

/// Reads every file of minute or hour rollups (append-only, so safe beside
/// a running daemon) and reports damaged sections and blocks. A torn tail is
/// an append cut short by a crash: its buckets are rebuilt from the rounds
/// (minutes) or the minutes (hours).
fn rollups_check(dir: &Path, grain: Grain) -> Finding {
    history_files_check(
        dir,
        (grain.label, "sections", "section"),
        &format!("rebuilt from {}", grain.rebuilt_from),
        RollupFiles::reader(dir, grain)
            .files()
            .map_err(|e| e.to_string()),
        |path| {
            let (sections, damage) =
                RollupFiles::check_file(grain, path).map_err(|e| e.to_string())?;
            let torn = damage
                .iter()
                .filter(|d| matches!(d, FileDamage::TornTail { .. }))
                .count();
            let damaged = damage
                .iter()
                .filter(|d| !matches!(d, FileDamage::TornTail { .. }))
                .map(|d| format!("{d:?}"))
                .collect();
            Ok((sections, torn, damaged))
        },
    )
}

/// Reads every file of raw rounds (append-only, so safe beside a running
/// daemon) and reports damaged records. A torn tail is what a power cut
/// during an append leaves: reported, not a warning.
fn rounds_check(dir: &Path) -> Finding {
    history_files_check(
        dir,
        ("raw history files", "records", "record"),
        "the rest is read",
        Segments::reader(dir).files().map_err(|e| e.to_string()),
        |path| {
            let (records, damage) = Found::check_file(path).map_err(|e| e.to_string())?;
            let torn = damage
                .iter()
                .filter(|d| matches!(d, Damage::TornTail { .. }))
                .count();
            let damaged = damage
                .iter()
                .filter(|d| !matches!(d, Damage::TornTail { .. }))
                .map(|d| format!("{d:?}"))
                .collect();
            Ok((records, torn, damaged))
        },
    )
}

/// The finding for one kind of the history's append-only files: how many
/// files and units (records, sections), torn tails (a crash during an
/// append: reported, not a warning) and damage (a warning, skipped when
/// read). `check` reads one file: `(units, torn tails, damage)`.
fn history_files_check(
    dir: &Path,
    (what, units, unit): (&'static str, &str, &str),
    after_torn: &str,
    files: Result<Vec<(u64, std::path::PathBuf)>, String>,
    check: impl Fn(&Path) -> Result<(u64, usize, Vec<String>), String>,
) -> Finding {
    let files = match files {
        Ok(files) => files,
        Err(e) => return finding(Level::Warn, what, e),
    };
    if files.is_empty() {
        return finding(Level::Ok, what, format!("none yet in {}", dir.display()));
    }
    let (mut count, mut torn, mut damaged) = (0u64, 0usize, Vec::new());
    for (_, path) in &files {
        match check(path) {
            Ok((n, t, d)) => {
                count += n;
                torn += t;
                damaged.extend(d);
            }
            Err(e) => damaged.push(e),
        }
    }
    let summary = format!(
        "{} files, {count} {units} in {}{}",
        files.len(),
        dir.display(),
        if torn > 0 {
            format!(
                "; {torn} with a torn last {unit} (an append cut short by a crash; {after_torn})"
            )
        } else {
            String::new()
        }
    );
    if damaged.is_empty() {
        finding(Level::Ok, what, summary)
    } else {
        finding(
            Level::Warn,
            what,
            format!(
                "{summary}; {} damaged {unit}(s) are skipped when read: {}",
                damaged.len(),
                damaged.join("; ")
            ),
        )
    }
}

/// Checks one sled database at `dir` (its lock file is `db_file`): absent,
/// in use, or opened on a copy made by `copy` into `scratch` with `open`.
fn open_check(
    what: &str,
    dir: &Path,
    db_file: &Path,
    copy: impl FnOnce(&Path) -> std::io::Result<()>,
    scratch: &Path,
    open: impl FnOnce(&Path) -> Result<(), String>,
) -> Finding {
    if !db_file.exists() {
        return finding(
            Level::Ok,
            what,
            format!("none yet in {} (the daemon creates it)", dir.display()),
        );
    }
    match is_locked(db_file) {
        Ok(true) => {
            return finding(
                Level::Ok,
                what,
                format!(
                    "{} is in use by a running hopwatch (not opened; its /readyz reports it)",
                    dir.display()
                ),
            )
        }
        Ok(false) => {}
        Err(e) => {
            return finding(
                Level::Warn,
                what,
                format!(
                    "cannot read {}: {e}; the daemon will quarantine it and start a fresh one",
                    db_file.display()
                ),
            )
        }
    }
    if let Err(e) = copy(scratch) {
        return finding(
            Level::Warn,
            what,
            format!(
                "cannot copy {} to {} to check it: {e}",
                dir.display(),
                scratch.display()
            ),
        );
    }
    match open(scratch) {
        Ok(()) => finding(
            Level::Ok,
            what,
            format!("{} opens (checked on a copy)", dir.display()),
        ),
        Err(e) => finding(
            Level::Warn,
            what,
            format!(
                "{} does not open ({e}); the daemon will move it aside (quarantine) and start a fresh one",
                dir.display()
            ),
        ),
    }
}

/// Whether another process holds sled's lock on `db_file` (sled takes an
/// exclusive `flock` on it for as long as the database is open).
fn is_locked(db_file: &Path) -> std::io::Result<bool> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(db_file)?;
    // SAFETY: flock on a descriptor this function owns; no memory involved.
    let rc = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if rc == 0 {
        // Closing the file releases the lock; unlock explicitly all the same.
        // SAFETY: as above.
        unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_UN) };
        return Ok(false);
    }
    let err = std::io::Error::last_os_error();
    if err.kind() == std::io::ErrorKind::WouldBlock {
        Ok(true)
    } else {
        Err(err)
    }
}

/// Copies the history store's sled files (`conf`, `db`, `blobs/`, `snap.*`)
/// out of the state directory, leaving the rounds' and minute rollups' files
/// (read in place by [`rounds_check`] and [`rollups_check`]), the outbox and
/// anything else.
fn copy_sled_files(state_dir: &Path, to: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(to)?;
    for entry in std::fs::read_dir(state_dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let name_str = name.to_string_lossy();
        let history_files = [crate::store::ROUNDS_DIR, crate::store::ROLLUPS_DIR];
        if components::is_store_file(&name_str) && !history_files.contains(&name_str.as_ref()) {
            copy_tree(&entry.path(), &to.join(&name))?;
        }
    }
    Ok(())
}

/// Copies a file, or a directory recursively.
fn copy_tree(from: &Path, to: &Path) -> std::io::Result<()> {
    if from.is_dir() {
        std::fs::create_dir_all(to)?;
        for entry in std::fs::read_dir(from)? {
            let entry = entry?;
            copy_tree(&entry.path(), &to.join(entry.file_name()))?;
        }
        Ok(())
    } else {
        std::fs::copy(from, to).map(drop)
    }
}

/// The running kernel's (major, minor).
fn kernel_version() -> Option<(u32, u32)> {
    let release = nix::sys::utsname::uname()
        .ok()?
        .release()
        .to_string_lossy()
        .into_owned();
    let mut parts = release.split(|c: char| !c.is_ascii_digit());
    Some((parts.next()?.parse().ok()?, parts.next()?.parse().ok()?))
}

fn kernel_version_check() -> Finding {
    match kernel_version() {
        Some(v) if v >= (6, 6) => finding(
            Level::Ok,
            "kernel",
            format!(
                "{}.{}: ring buffer, and TCX links for the TC programs",
                v.0, v.1
            ),
        ),
        Some(v) if v >= (5, 8) => finding(
            Level::Ok,
            "kernel",
            format!(
                "{}.{}: ring buffer; TC programs attach through clsact/netlink (no TCX before 6.6)",
                v.0, v.1
            ),
        ),
        Some(v) => finding(
            Level::Warn,
            "kernel",
            format!(
                "{}.{} is older than 5.8 (no BPF ring buffer): eBPF timestamps will not load; \
                 hopwatch falls back to SO_TIMESTAMPING kernel software stamps",
                v.0, v.1
            ),
        ),
        None => finding(Level::Warn, "kernel", "could not read the kernel version"),
    }
}

fn btf_check() -> Finding {
    if std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
        finding(Level::Ok, "BTF", "/sys/kernel/btf/vmlinux is present")
    } else {
        finding(
            Level::Warn,
            "BTF",
            "/sys/kernel/btf/vmlinux is missing (kernel built without CONFIG_DEBUG_INFO_BTF): \
             eBPF may not load; hopwatch then falls back to SO_TIMESTAMPING",
        )
    }
}

/// The effective capability set of this process, from /proc/self/status.
fn effective_capabilities() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("CapEff:"))?;
    u64::from_str_radix(line.trim_start_matches("CapEff:").trim(), 16).ok()
}

fn has(caps: u64, cap: u32) -> bool {
    caps & (1u64 << cap) != 0
}

fn capability_checks(caps: Option<u64>) -> Vec<Finding> {
    let Some(caps) = caps else {
        return vec![finding(
            Level::Warn,
            "capabilities",
            "could not read /proc/self/status",
        )];
    };
    let mut out = Vec::new();
    if has(caps, CAP_NET_RAW) {
        out.push(finding(Level::Ok, "CAP_NET_RAW", "raw sockets for probes"));
    } else {
        out.push(finding(
            Level::Fail,
            "CAP_NET_RAW",
            "missing: probes cannot be sent (run as root, or grant CAP_NET_RAW as the systemd unit does)",
        ));
    }
    // CAP_SYS_ADMIN covers all three on kernels before 5.8, and in general.
    // CAP_PERFMON matters: without it the verifier treats the loader as
    // unprivileged and refuses the pointer arithmetic our parsers use.
    let sys_admin = has(caps, CAP_SYS_ADMIN);
    let missing: Vec<&str> = [
        (CAP_BPF, "CAP_BPF"),
        (CAP_NET_ADMIN, "CAP_NET_ADMIN"),
        (CAP_PERFMON, "CAP_PERFMON"),
    ]
    .into_iter()
    // CAP_SYS_ADMIN stands in for CAP_BPF and CAP_PERFMON, not CAP_NET_ADMIN.
    .filter(|(cap, _)| !has(caps, *cap) && (!sys_admin || *cap == CAP_NET_ADMIN))
    .map(|(_, name)| name)
    .collect();
    if missing.is_empty() {
        out.push(finding(
            Level::Ok,
            "CAP_BPF + CAP_NET_ADMIN + CAP_PERFMON",
            "eBPF programs can be loaded and attached to interfaces",
        ));
    } else {
        out.push(finding(
            Level::Warn,
            "eBPF capabilities",
            format!(
                "missing {}: eBPF timestamps will not load; hopwatch falls back to SO_TIMESTAMPING \
                 kernel software stamps",
                missing.join(", ")
            ),
        ));
    }
    out
}

async fn ebpf_load_check() -> Finding {
    // Disabled: the programs stamp nothing while loaded.
    let filter = ProbeFilter::disabled();
    let result = EbpfTimestamper::load(filter).map(|(t, _events)| t.attached_interfaces().len());
    match result {
        Ok(interfaces) => finding(
            Level::Ok,
            "eBPF load",
            format!(
                "the TC programs loaded and attached to {interfaces} interfaces (then detached)"
            ),
        ),
        Err(err) => finding(
            Level::Warn,
            "eBPF load",
            format!("{err}; hopwatch will fall back to SO_TIMESTAMPING kernel software stamps"),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capabilities_decide_between_ebpf_and_the_fallback() {
        let all = (1 << CAP_NET_RAW) | (1 << CAP_NET_ADMIN) | (1 << CAP_BPF) | (1 << CAP_PERFMON);
        let findings = capability_checks(Some(all));
        assert!(
            findings.iter().all(|f| f.level == Level::Ok),
            "{findings:?}"
        );

        let raw_only = capability_checks(Some(1 << CAP_NET_RAW));
        let ebpf = raw_only
            .iter()
            .find(|f| f.what == "eBPF capabilities")
            .unwrap();
        assert_eq!(ebpf.level, Level::Warn);
        assert!(ebpf.detail.contains("CAP_BPF, CAP_NET_ADMIN, CAP_PERFMON"));
        assert!(ebpf.detail.contains("SO_TIMESTAMPING"));

        let none = capability_checks(Some(0));
        assert!(none
            .iter()
            .any(|f| f.what == "CAP_NET_RAW" && f.level == Level::Fail));
    }

    #[test]
    fn damaged_rounds_files_are_reported_and_a_torn_tail_is_not_a_warning() {
        use crate::model::{RoundRecord, TargetId};
        use crate::probe::TimestampSource;
        use crate::store::keys::TargetNum;
        use crate::store::segment::Pending;

        let dir = tempfile::tempdir().unwrap();
        let rounds_dir = dir.path().join(crate::store::ROUNDS_DIR);
        assert_eq!(rounds_check(&rounds_dir).level, Level::Ok, "none yet");
        let id = TargetId::new("t").unwrap();
        let rounds: Vec<RoundRecord> = (0..60)
            .map(|seq| RoundRecord {
                target: id.clone(),
                seq,
                started_at_ms: 1_700_002_800_000 + seq * 1_000,
                hops: Vec::new(),
                destination_ttl: None,
                source: TimestampSource::Ebpf,
            })
            .collect();
        let mut segments = Segments::open(&rounds_dir).unwrap();
        for minute in rounds.chunks(20) {
            segments
                .append(&[Pending {
                    target: TargetNum(1),
                    rounds: minute,
                }])
                .unwrap();
        }
        let (_, file) = segments.files().unwrap().remove(0);
        let mut bytes = std::fs::read(&file).unwrap();
        bytes.extend(b"hwR1 torn");
        std::fs::write(&file, &bytes).unwrap();
        let torn = rounds_check(&rounds_dir);
        assert_eq!(torn.level, Level::Ok, "{torn:?}");
        assert!(
            torn.detail.contains("1 files, 3 records"),
            "{}",
            torn.detail
        );
        assert!(torn.detail.contains("torn last record"), "{}", torn.detail);
        // A flipped bit in the first record's chunk.
        bytes[40] ^= 0x01;
        std::fs::write(&file, &bytes).unwrap();
        let damaged = rounds_check(&rounds_dir);
        assert_eq!(damaged.level, Level::Warn, "{damaged:?}");
        assert!(
            damaged.detail.contains("1 damaged record"),
            "{}",
            damaged.detail
        );
        assert!(damaged.detail.contains("BadRecord"), "{}", damaged.detail);
    }

    #[test]
    fn check_reports_torn_and_damaged_minute_rollup_files() {
        use crate::store::keys::{SeriesNum, TargetNum};
        let dir = tempfile::tempdir().unwrap();
        let rollups = dir.path().join(crate::store::ROLLUPS_DIR);
        assert_eq!(
            rollups_check(&rollups, Grain::MINUTES).level,
            Level::Ok,
            "none yet"
        );
        let minutes = RollupFiles::open(&rollups, Grain::MINUTES).unwrap();
        let hour = 1_700_002_800_000;
        for m in 0..20u64 {
            let value = crate::store::rollup::Stats {
                sent: m,
                lost: m,
                ..Default::default()
            };
            minutes.insert(TargetNum(1), SeriesNum(0), hour + m * 60_000, value);
        }
        minutes.write_before(hour + 10 * 60_000).unwrap();
        minutes.write_before(hour + 20 * 60_000).unwrap();
        let (_, file) = minutes.files().unwrap().remove(0);
        let bytes = std::fs::read(&file).unwrap();
        std::fs::write(&file, &bytes[..bytes.len() - 3]).unwrap();
        let torn = rollups_check(&rollups, Grain::MINUTES);
        assert_eq!(torn.level, Level::Ok, "{torn:?}");
        assert!(
            torn.detail.contains("1 files, 1 sections"),
            "{}",
            torn.detail
        );
        assert!(torn.detail.contains("torn last section"), "{}", torn.detail);
        // A flipped byte in the first section's block (after its 24-byte
        // header and one 16-byte index entry).
        let mut bytes = bytes;
        bytes[24 + 16 + 2] ^= 0xff;
        std::fs::write(&file, &bytes).unwrap();
        let damaged = rollups_check(&rollups, Grain::MINUTES);
        assert_eq!(damaged.level, Level::Warn, "{damaged:?}");
        assert!(damaged.detail.contains("BadBlock"), "{}", damaged.detail);
    }

    #[tokio::test]
    async fn a_bad_config_fails_the_check_with_its_location() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "[defaults]\nintervall = \"1s\"\n").unwrap();
        let findings = check(&CheckArgs {
            config: ConfigArg { path },
            no_ebpf_load: true,
        })
        .await;
        let config = findings.iter().find(|f| f.what == "config").unwrap();
        assert_eq!(config.level, Level::Fail);
        assert!(config.detail.contains("bad.toml:2"), "{}", config.detail);
    }

    #[test]
    fn a_missing_or_bad_city_database_is_a_warning_naming_the_file_and_key() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("GeoLite2-City.mmdb");
        let not_mmdb = dir.path().join("city.txt");
        std::fs::write(&not_mmdb, "not a database\n").unwrap();
        let config = |city: &Path| EnrichmentConfig {
            reverse_dns: false,
            dns_timeout: std::time::Duration::from_secs(1),
            asn_database: None,
            city_database: Some(city.to_owned()),
        };
        for path in [&missing, &not_mmdb] {
            let findings = database_checks(&config(path));
            assert_eq!(findings.len(), 1, "{findings:?}");
            let f = &findings[0];
            assert_eq!((f.level, f.what.as_str()), (Level::Warn, "city database"));
            assert!(
                f.detail.contains(&*path.to_string_lossy())
                    && f.detail.contains("[enrichment] city_database"),
                "{}",
                f.detail
            );
        }
        let none = EnrichmentConfig {
            city_database: None,
            ..config(&missing)
        };
        assert!(database_checks(&none).is_empty());
    }
}
