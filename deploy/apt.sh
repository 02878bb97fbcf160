# Shared by deploy/setup.sh and deploy/setup-test.sh (sourced, not run):
# logging, and installing the Debian packages that are not installed yet, with
# one `apt-get update` per run and only when something is missing.

log() { printf 'setup: %s\n' "$*" >&2; }

require_root() {
    if [ "$(id -u)" -ne 0 ]; then
        log "must run as root (it installs Debian packages); try: sudo bash $0"
        exit 1
    fi
}

# Packages whose absence we can detect cheaply with dpkg-query.
missing_packages() {
    local pkg
    for pkg in "$@"; do
        if ! dpkg-query -W -f='${db:Status-Status}' "$pkg" 2>/dev/null | grep -qx installed; then
            printf '%s\n' "$pkg"
        fi
    done
}

apt_updated=0
apt_install() {
    local -a missing
    mapfile -t missing < <(missing_packages "$@")
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ "$apt_updated" -eq 0 ]; then
        log "apt-get update"
        apt-get update -qq
        apt_updated=1
    fi
    log "installing ${missing[*]}"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}
