//! The hint texts: the likely cause of a failure to load or attach (missing
//! privileges or capabilities, an old kernel, the verifier), read from the
//! errno or the verifier log that aya reports.

use aya::maps::MapError;
use aya::programs::tc::TcError;
use aya::programs::ProgramError;

const HINT_PRIVILEGE: &str =
    "likely cause: missing CAP_BPF, CAP_NET_ADMIN or CAP_PERFMON (run as root or grant all three)";
/// Without CAP_PERFMON the verifier treats the loader as unprivileged and
/// refuses pointer arithmetic our bounds-checked parsers rely on.
const HINT_PERFMON: &str =
    "likely cause: missing CAP_PERFMON: without it the verifier refuses pointer arithmetic \
     (\"prohibited for !root\"); grant CAP_PERFMON with CAP_BPF and CAP_NET_ADMIN";
const HINT_KERNEL: &str =
    "likely cause: kernel too old or built without BTF/TC/ring buffer support (needs >= 5.8 with BTF; TCX needs >= 6.6)";
const HINT_VERIFIER: &str = "likely cause: the kernel's verifier rejected the program (kernel too old, or a hopwatch bug); its log follows";
const HINT_GENERIC: &str = "needs root (CAP_BPF, CAP_NET_ADMIN) and a kernel >= 5.8 with BTF";

fn errno_hint(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EPERM | libc::EACCES) => HINT_PRIVILEGE,
        Some(libc::EINVAL | libc::ENOENT | libc::EOPNOTSUPP | libc::ENOSYS | libc::E2BIG) => {
            HINT_KERNEL
        }
        _ => HINT_GENERIC,
    }
}

pub(super) fn aya_hint(err: &aya::EbpfError) -> &'static str {
    match err {
        aya::EbpfError::MapError(e) => map_hint(e),
        aya::EbpfError::ProgramError(e) => program_hint(e),
        aya::EbpfError::BtfError(_) | aya::EbpfError::NoBTF => HINT_KERNEL,
        _ => HINT_GENERIC,
    }
}

pub(super) fn map_hint(err: &MapError) -> &'static str {
    match err {
        MapError::CreateError { io_error, .. } => errno_hint(io_error.raw_os_error()),
        MapError::SyscallError(e) => errno_hint(e.io_error.raw_os_error()),
        _ => HINT_GENERIC,
    }
}

pub(super) fn program_hint(err: &ProgramError) -> &'static str {
    match err {
        // BPF_PROG_LOAD answers EPERM for missing capabilities; the verifier's
        // rejections come back as EACCES or EINVAL.
        ProgramError::LoadError {
            io_error,
            verifier_log,
        } => match io_error.raw_os_error() {
            Some(libc::EPERM) => HINT_PRIVILEGE,
            _ if verifier_log.to_string().contains("for !root") => HINT_PERFMON,
            _ => HINT_VERIFIER,
        },
        ProgramError::SyscallError(e) => errno_hint(e.io_error.raw_os_error()),
        ProgramError::TcError(e) => tc_hint(e),
        _ => HINT_GENERIC,
    }
}

pub(super) fn tc_hint(err: &TcError) -> &'static str {
    match err {
        TcError::NetlinkError(e) => errno_hint(e.raw_os_error()),
        TcError::IoError(e) => errno_hint(e.raw_os_error()),
        _ => HINT_GENERIC,
    }
}
