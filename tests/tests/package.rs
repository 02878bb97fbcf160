//! The Debian package, end to end. deploy/package.sh packages this build's
//! hopwatch; dpkg installs it, upgrades it twice (shipped conffile unchanged,
//! then changed) and purges it in a minimal Debian bookworm chroot in which no
//! systemd runs, so the maintainer scripts take their "no systemd" paths; the
//! chroot's systemd-analyze verifies the installed unit.
//!
//! The chroot (`debootstrap --variant=minbase`, plus systemd and procps for the
//! verify) is made once and cached in target/package-test/; each run works on
//! an overlay over it, mounted in a mount namespace of this test's own, so the
//! cache stays pristine and no mount outlives the test. Privileged (mount,
//! chroot); the first run downloads about 60 MB from deb.debian.org.

use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

use hopwatch_lab::hopwatch_bin;
use nix::fcntl::{Flock, FlockArg};
use nix::mount::{mount, umount2, MntFlags, MsFlags};
use nix::sched::{unshare, CloneFlags};

const SUITE: &str = "bookworm";
const MIRROR: &str = "http://deb.debian.org/debian";
/// systemd only for `systemd-analyze verify` (it is installed, never running);
/// procps for /bin/kill, which the unit's ExecReload runs: every Debian system
/// short of minbase has it (priority important).
const INCLUDE: &str = "systemd,procps";

const CONFIG: &str = "etc/hopwatch/hopwatch.toml";
const UNIT: &str = "lib/systemd/system/hopwatch.service";
const ENABLED_LINK: &str = "etc/systemd/system/multi-user.target.wants/hopwatch.service";
const STATE_DIR: &str = "var/lib/hopwatch";

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("repository root")
        .to_path_buf()
}

/// The workspace's target dir inside the repository (ignored by git).
fn work_dir() -> PathBuf {
    repo().join("target/package-test")
}

/// Runs `cmd`, panics with its output unless it succeeds; returns its stdout.
fn run(cmd: &mut Command, what: &str) -> String {
    let out = output(cmd, what);
    assert!(
        out.status.success(),
        "{what} failed ({}):\n{}",
        out.status,
        show(&out)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn output(cmd: &mut Command, what: &str) -> Output {
    cmd.output()
        .unwrap_or_else(|e| panic!("{what}: cannot run {cmd:?}: {e}"))
}

fn show(out: &Output) -> String {
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `dpkg-deb --field`.
fn deb_field(deb: &Path, field: &str) -> String {
    run(
        Command::new("dpkg-deb").arg("--field").arg(deb).arg(field),
        "dpkg-deb --field",
    )
    .trim()
    .to_owned()
}

/// Builds a package of this build's binary with deploy/package.sh.
fn package(out_dir: &Path, deb_version: Option<&str>) -> PathBuf {
    let mut cmd = Command::new("bash");
    cmd.arg(repo().join("deploy/package.sh"))
        .arg("--binary")
        .arg(hopwatch_bin())
        .arg("--fast")
        .arg("--output")
        .arg(out_dir);
    if let Some(v) = deb_version {
        cmd.args(["--deb-version", v]);
    }
    let stdout = run(&mut cmd, "deploy/package.sh");
    let deb = PathBuf::from(
        stdout
            .lines()
            .last()
            .expect("package.sh prints the .deb path")
            .trim(),
    );
    assert!(
        deb.is_absolute() && deb.is_file(),
        "package.sh printed {deb:?}, not a .deb file"
    );
    deb
}

/// A copy of `deb` as version `version` whose shipped config has one more line:
/// what a release that changed the default config looks like to dpkg.
fn repack_with_changed_config(deb: &Path, version: &str, out: &Path, added_line: &str) -> PathBuf {
    let tree = out.join("repack");
    let _ = fs::remove_dir_all(&tree);
    run(
        Command::new("dpkg-deb")
            .arg("--raw-extract")
            .arg(deb)
            .arg(&tree),
        "dpkg-deb -R",
    );
    let config = tree.join(CONFIG);
    let mut text = fs::read_to_string(&config).expect("packaged config");
    text.push_str(added_line);
    fs::write(&config, text).expect("write config");
    let control = tree.join("DEBIAN/control");
    let old = deb_field(deb, "Version");
    let text = fs::read_to_string(&control).expect("control");
    fs::write(
        &control,
        text.replace(
            &format!("Version: {old}\n"),
            &format!("Version: {version}\n"),
        ),
    )
    .expect("write control");
    // dpkg never checks md5sums on install; drop a stale one if cargo-deb ever writes it.
    let _ = fs::remove_file(tree.join("DEBIAN/md5sums"));
    let repacked = out.join(format!("hopwatch_{version}_repacked.deb"));
    run(
        Command::new("dpkg-deb")
            .args(["--build", "-Zgzip", "-z1"])
            .arg(&tree)
            .arg(&repacked),
        "dpkg-deb --build",
    );
    assert_eq!(deb_field(&repacked, "Version"), version);
    repacked
}

fn ensure_debootstrap() {
    if Path::new("/usr/sbin/debootstrap").exists() {
        return;
    }
    // deploy/setup-test.sh installs it; this is for a machine set up before it did.
    let apt = |args: &[&str]| {
        run(
            Command::new("apt-get")
                .args(args)
                .env("DEBIAN_FRONTEND", "noninteractive"),
            "apt-get (installing debootstrap)",
        )
    };
    apt(&["update", "-qq"]);
    apt(&[
        "install",
        "-y",
        "-qq",
        "--no-install-recommends",
        "debootstrap",
    ]);
}

/// The cached minimal Debian root, made on first use. A marker names what it was
/// made from, so a change to SUITE or INCLUDE rebuilds it.
fn base_root() -> PathBuf {
    let base = work_dir().join(format!("{SUITE}-minbase"));
    let marker = work_dir().join(format!("{SUITE}-minbase.complete"));
    let recipe = format!("debootstrap --variant=minbase --include={INCLUDE} {SUITE} {MIRROR}\n");
    if fs::read_to_string(&marker).ok().as_deref() == Some(recipe.as_str())
        && base.join("usr/bin/dpkg").exists()
    {
        return base;
    }
    ensure_debootstrap();
    let _ = fs::remove_file(&marker);
    let partial = work_dir().join(format!("{SUITE}-minbase.partial"));
    for dir in [&base, &partial] {
        if dir.exists() {
            fs::remove_dir_all(dir).unwrap_or_else(|e| panic!("remove {}: {e}", dir.display()));
        }
    }
    run(
        Command::new("debootstrap")
            .args(["--variant=minbase", &format!("--include={INCLUDE}"), SUITE])
            .arg(&partial)
            .arg(MIRROR),
        "debootstrap (needs deb.debian.org)",
    );
    fs::rename(&partial, &base).expect("rename the finished chroot");
    fs::write(&marker, recipe).expect("write the chroot marker");
    base
}

/// A throwaway root: an overlay over the cached one, with /proc. Only this
/// thread's private mount namespace sees the mounts; drop unmounts them and
/// removes the overlay's writable layer.
struct Chroot {
    dir: PathBuf,
    root: PathBuf,
}

impl Chroot {
    fn new(base: &Path) -> Chroot {
        // CLONE_NEWNS also unshares this thread's filesystem context from the
        // other test threads; commands it spawns inherit the namespace.
        unshare(CloneFlags::CLONE_NEWNS).expect("unshare(CLONE_NEWNS): the test needs root");
        mount(
            None::<&str>,
            "/",
            None::<&str>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&str>,
        )
        .expect("make / private in the test's mount namespace");
        let dir = work_dir().join("run");
        if dir.exists() {
            fs::remove_dir_all(&dir).expect("remove the previous run's overlay");
        }
        let (upper, work, root) = (dir.join("upper"), dir.join("work"), dir.join("root"));
        for d in [&upper, &work, &root] {
            fs::create_dir_all(d).expect("overlay dirs");
        }
        let options = format!(
            "lowerdir={},upperdir={},workdir={}",
            base.display(),
            upper.display(),
            work.display()
        );
        mount(
            Some("overlay"),
            &root,
            Some("overlay"),
            MsFlags::empty(),
            Some(options.as_str()),
        )
        .unwrap_or_else(|e| panic!("mount overlay {options}: {e}"));
        let chroot = Chroot { dir, root };
        mount(
            Some("proc"),
            &chroot.root.join("proc"),
            Some("proc"),
            MsFlags::empty(),
            None::<&str>,
        )
        .expect("mount /proc in the chroot");
        chroot
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.root.join(rel)
    }

    /// A command run inside the chroot with a clean environment and no stdin,
    /// so nothing can wait for an answer.
    fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("chroot");
        cmd.arg(&self.root)
            .arg(program)
            .env_clear()
            .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
            .env("LC_ALL", "C")
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdin(Stdio::null());
        cmd
    }

    fn run(&self, program: &str, args: &[&str]) -> String {
        run(
            self.command(program).args(args),
            &format!("{program} {} (in the chroot)", args.join(" ")),
        )
    }

    fn succeeds(&self, program: &str, args: &[&str]) -> bool {
        output(self.command(program).args(args), program)
            .status
            .success()
    }

    /// Copies `deb` into the chroot and installs it with dpkg.
    fn dpkg_install(&self, deb: &Path, extra: &[&str]) -> String {
        let name = deb.file_name().expect("deb file name").to_string_lossy();
        fs::copy(deb, self.path("tmp").join(&*name)).expect("copy the .deb into the chroot");
        let inside = format!("/tmp/{name}");
        let mut args = vec!["-i"];
        args.extend_from_slice(extra);
        args.push(&inside);
        self.run("dpkg", &args)
    }

    fn installed_version(&self) -> String {
        self.run("dpkg-query", &["-W", "-f=${Status} ${Version}", "hopwatch"])
    }

    fn read(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel))
            .unwrap_or_else(|e| panic!("read /{rel} in the chroot: {e}"))
    }

    /// (uid, gid) from the chroot's passwd.
    fn hopwatch_ids(&self) -> (u32, u32) {
        let entry = self.run("getent", &["passwd", "hopwatch"]);
        let fields: Vec<&str> = entry.trim().split(':').collect();
        assert_eq!(fields.len(), 7, "passwd entry: {entry}");
        (
            fields[2].parse().expect("uid"),
            fields[3].parse().expect("gid"),
        )
    }
}

impl Drop for Chroot {
    fn drop(&mut self) {
        for target in [self.root.join("proc"), self.root.clone()] {
            if let Err(e) = umount2(&target, MntFlags::MNT_DETACH) {
                eprintln!("umount {}: {e}", target.display());
            }
        }
        if let Err(e) = fs::remove_dir_all(&self.dir) {
            eprintln!("remove {}: {e}", self.dir.display());
        }
    }
}

/// The unit's `Key=` value (first occurrence).
fn unit_value<'a>(unit: &'a str, key: &str) -> &'a str {
    unit.lines()
        .find_map(|l| l.strip_prefix(key).and_then(|rest| rest.strip_prefix('=')))
        .unwrap_or_else(|| panic!("the unit sets {key}="))
}

/// Runs the unit's ExecStartPre (`hopwatch check`) the way systemd would: as the
/// unit's User/Group with exactly its capabilities (setpriv), inside the chroot.
fn exec_start_pre_as_the_service(chroot: &Chroot) -> String {
    let unit = chroot.read(UNIT);
    let user = unit_value(&unit, "User");
    let group = unit_value(&unit, "Group");
    let caps = unit_value(&unit, "AmbientCapabilities")
        .split_whitespace()
        .map(|c| format!("+{}", c.trim_start_matches("CAP_").to_lowercase()))
        .collect::<Vec<_>>();
    let set = format!("-all,{}", caps.join(","));
    let pre: Vec<&str> = unit_value(&unit, "ExecStartPre")
        .split_whitespace()
        .collect();
    let mut cmd = chroot.command("setpriv");
    cmd.arg(format!("--reuid={user}"))
        .arg(format!("--regid={group}"))
        .arg("--init-groups")
        .arg(format!("--inh-caps={set}"))
        .arg(format!("--ambient-caps={set}"))
        .arg(format!("--bounding-set={set}"))
        .args(&pre);
    run(
        &mut cmd,
        "the unit's ExecStartPre as its user, with its capabilities",
    )
}

#[test]
fn the_deb_installs_upgrades_keeping_config_edits_and_purges_in_a_debian_chroot() {
    assert_eq!(
        nix::unistd::geteuid().as_raw(),
        0,
        "this test needs root (chroot, mount, dpkg in a chroot)"
    );
    fs::create_dir_all(work_dir()).expect("target/package-test");
    // One run at a time: they share the cached chroot and the overlay dir.
    let lock = fs::File::create(work_dir().join("lock")).expect("lock file");
    let _lock = Flock::lock(lock, FlockArg::LockExclusive)
        .map_err(|(_, e)| e)
        .expect("flock");

    // --- The packages, and what is in them.
    let out = work_dir().join("debs");
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).expect("debs dir");
    let reference_config =
        fs::read_to_string(repo().join("deploy/examples/hopwatch.toml")).expect("reference config");
    let version = env!("CARGO_PKG_VERSION");
    let v1 = package(&out, None);
    let v2 = package(&out, Some(&format!("{version}-2")));
    let v3_line = "\n# (a later release changed this shipped file)\n";
    let v3 = repack_with_changed_config(&v2, &format!("{version}-3"), &out, v3_line);

    assert_eq!(deb_field(&v1, "Package"), "hopwatch");
    assert_eq!(
        deb_field(&v1, "Version"),
        format!("{version}-1"),
        "the version comes from the workspace"
    );
    assert_eq!(deb_field(&v2, "Version"), format!("{version}-2"));
    let depends = deb_field(&v1, "Depends");
    assert!(
        depends
            .split(", ")
            .all(|d| d.starts_with("libc6 ") || d.starts_with("libgcc-s1 ")),
        "runtime dependencies are libc only (and libgcc-s1 if linked): {depends}"
    );
    let control = run(
        Command::new("dpkg-deb")
            .arg("--info")
            .arg(&v1)
            .arg("conffiles"),
        "conffiles",
    );
    assert_eq!(
        control.trim(),
        "/etc/hopwatch/hopwatch.toml",
        "the config is the one conffile"
    );
    let listing = run(
        Command::new("dpkg-deb").arg("--contents").arg(&v1),
        "dpkg-deb --contents",
    );
    for path in [
        "./usr/bin/hopwatch",
        "./lib/systemd/system/hopwatch.service",
        "./etc/hopwatch/hopwatch.toml",
        "./usr/share/doc/hopwatch/README.md",
        "./usr/share/doc/hopwatch/copyright",
        "./usr/share/doc/hopwatch/docs/configuration.md",
        "./usr/share/doc/hopwatch/docs/install.md",
    ] {
        assert!(
            listing.lines().any(|l| l.ends_with(path)),
            "{path} is packaged:\n{listing}"
        );
    }

    // --- A fresh Debian, no systemd running.
    let chroot = Chroot::new(&base_root());
    assert!(
        !chroot.path("run/systemd/system").exists(),
        "systemd is not running in the chroot"
    );
    assert!(
        !chroot.succeeds("getent", &["passwd", "hopwatch"]),
        "a fresh chroot has no hopwatch user"
    );

    // --- Install.
    chroot.dpkg_install(&v1, &[]);
    assert_eq!(
        chroot.installed_version(),
        format!("install ok installed {version}-1")
    );
    let passwd = chroot.run("getent", &["passwd", "hopwatch"]);
    let fields: Vec<&str> = passwd.trim().split(':').collect();
    assert_eq!(fields[5], "/var/lib/hopwatch", "home: {passwd}");
    assert_eq!(fields[6], "/usr/sbin/nologin", "no login shell: {passwd}");
    let (uid, gid) = chroot.hopwatch_ids();
    assert!(uid < 1000, "a system user: {passwd}");
    assert!(chroot
        .run("getent", &["group", "hopwatch"])
        .starts_with(&format!("hopwatch:x:{gid}:")));

    let state = fs::metadata(chroot.path(STATE_DIR)).expect("/var/lib/hopwatch exists");
    assert!(state.is_dir());
    assert_eq!(
        (state.uid(), state.gid(), state.mode() & 0o7777),
        (uid, gid, 0o750),
        "state dir owner and mode"
    );

    assert_eq!(
        chroot.read(CONFIG),
        reference_config,
        "the commented reference config is installed"
    );
    let config = fs::metadata(chroot.path(CONFIG)).expect("config");
    assert_eq!(
        (config.uid(), config.gid(), config.mode() & 0o7777),
        (0, gid, 0o640),
        "the config is root's, readable by group hopwatch only (it may hold secrets)"
    );
    let config_dir = fs::metadata(chroot.path("etc/hopwatch")).expect("/etc/hopwatch");
    assert_eq!(
        (
            config_dir.uid(),
            config_dir.gid(),
            config_dir.mode() & 0o7777
        ),
        (0, gid, 0o770),
        "the config's directory is writable by group hopwatch: the service saves API writes \
         by renaming a new config over the old one"
    );
    let binary = fs::metadata(chroot.path("usr/bin/hopwatch")).expect("/usr/bin/hopwatch");
    assert_eq!(binary.permissions().mode() & 0o777, 0o755);

    let check = chroot.run(
        "hopwatch",
        &[
            "check",
            "--no-ebpf-load",
            "-c",
            "/etc/hopwatch/hopwatch.toml",
        ],
    );
    assert!(
        check.contains("parses: 0 targets"),
        "the default config probes nothing:\n{check}"
    );
    let check = exec_start_pre_as_the_service(&chroot);
    assert!(
        check.contains("/var/lib/hopwatch is writable"),
        "the service user reads its config and writes its state dir:\n{check}"
    );

    // Enabled for the next boot although systemd is not running, as
    // dh_installsystemd does.
    let link =
        fs::read_link(chroot.path(ENABLED_LINK)).expect("the unit is enabled (wants symlink)");
    assert_eq!(link, Path::new("/").join(UNIT));

    let verify = output(
        chroot
            .command("systemd-analyze")
            .args(["verify", "/lib/systemd/system/hopwatch.service"]),
        "systemd-analyze verify",
    );
    assert!(
        verify.status.success() && verify.stdout.is_empty() && verify.stderr.is_empty(),
        "systemd-analyze verify finds nothing to say about the installed unit:\n{}",
        show(&verify)
    );

    // --- The admin edits the config and the store fills.
    let admin_edit = "\n[[target]]\nname = \"edited-by-admin\"\nhost = \"127.0.0.1\"\n";
    let edited = format!("{reference_config}{admin_edit}");
    fs::write(chroot.path(CONFIG), &edited).expect("edit the config");
    fs::write(chroot.path(STATE_DIR).join("store-marker"), "history").expect("a file in the store");

    // --- Upgrade, shipped config unchanged: dpkg keeps the edit without asking
    // (stdin is /dev/null: a prompt would fail the install).
    chroot.dpkg_install(&v2, &[]);
    assert_eq!(
        chroot.installed_version(),
        format!("install ok installed {version}-2")
    );
    assert_eq!(
        chroot.read(CONFIG),
        edited,
        "the admin's edit survives the upgrade"
    );
    assert!(!chroot.path("etc/hopwatch/hopwatch.toml.dpkg-dist").exists());
    assert_eq!(chroot.hopwatch_ids(), (uid, gid), "the user is kept");
    assert_eq!(
        chroot.read("var/lib/hopwatch/store-marker"),
        "history",
        "the store is kept"
    );

    // --- Upgrade, shipped config changed: both sides changed, so dpkg would ask;
    // --force-confold keeps the admin's file and puts the new default beside it.
    chroot.dpkg_install(&v3, &["--force-confold"]);
    assert_eq!(
        chroot.installed_version(),
        format!("install ok installed {version}-3")
    );
    assert_eq!(
        chroot.read(CONFIG),
        edited,
        "the admin's edit survives a changed default"
    );
    assert_eq!(
        chroot.read("etc/hopwatch/hopwatch.toml.dpkg-dist"),
        format!("{reference_config}{v3_line}"),
        "the new default is left beside it"
    );
    let config = fs::metadata(chroot.path(CONFIG)).expect("config");
    assert_eq!(
        (config.uid(), config.gid(), config.mode() & 0o7777),
        (0, gid, 0o640),
        "mode kept"
    );
    let check = exec_start_pre_as_the_service(&chroot);
    assert!(
        check.contains("parses: 1 targets (1 active)"),
        "the edited config is the one in use:\n{check}"
    );
    assert_eq!(
        chroot.read("var/lib/hopwatch/store-marker"),
        "history",
        "the store is kept"
    );

    // --- Purge: nothing of hopwatch is left.
    chroot.run("dpkg", &["--purge", "hopwatch"]);
    let status = output(
        chroot
            .command("dpkg-query")
            .args(["-W", "-f=${Status}", "hopwatch"]),
        "dpkg-query",
    );
    assert!(
        !status.status.success()
            || String::from_utf8_lossy(&status.stdout).contains("not-installed"),
        "dpkg no longer knows hopwatch:\n{}",
        show(&status)
    );
    assert!(
        !chroot.succeeds("getent", &["passwd", "hopwatch"]),
        "the user is removed"
    );
    assert!(
        !chroot.succeeds("getent", &["group", "hopwatch"]),
        "the group is removed"
    );
    for gone in [
        STATE_DIR,
        "etc/hopwatch",
        "usr/bin/hopwatch",
        UNIT,
        ENABLED_LINK,
    ] {
        assert!(
            fs::symlink_metadata(chroot.path(gone)).is_err(),
            "/{gone} is removed on purge"
        );
    }
    // --list exits 1 when it lists nothing.
    let overrides = output(
        chroot.command("dpkg-statoverride").arg("--list"),
        "dpkg-statoverride",
    );
    assert!(
        !String::from_utf8_lossy(&overrides.stdout).contains("hopwatch"),
        "the statoverride is removed:\n{}",
        show(&overrides)
    );
}
