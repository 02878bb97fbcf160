#!/bin/bash
# Runs inside the appliance VM at every boot (vm-payload.service), from the
# payload disk that deploy/vm.sh builds: /payload holds this script, lab.sh
# and the .debs. The phase comes from the kernel command line
# (hopwatch_vm.phase=...); deploy/vm.sh boots the phases in order:
#
#   install   install the older .deb, configure lab targets, check the running
#             unit (user, capabilities, eBPF, reload, API writes saved across a
#             restart, reflector on port 862, journald levels, `hopwatch check`)
#   reboot    the unit came up at boot with its history; upgrade to the newer
#             .deb keeps config and history; then wait for a power cut
#   cut       after a power cut: the store opens clean, history reaches to within
#             the flush interval of the cut (hopwatch_vm.cut_ms); wait for the next
#   purge     dpkg --purge removes user, state and config
#   previous  on a fresh disk: the previous release's own .deb (the last commit
#             that landed) runs and records history; upgrading to this build
#             keeps its config and history and makes API writes work
#   arm64     the arm64 guest's one boot (deploy/vm.sh --arch arm64): install
#             the arm64 .deb and run the install phase's checks of the running
#             unit, then what only an arm64 kernel can show: the eBPF programs
#             JIT-compiled and attached on it, `hopwatch trace` over ICMP, UDP
#             and TCP, IPv4 and IPv6 with eBPF timestamps, the web UI; then purge
#   shell     nothing: the lab is up, for trying the package by hand
#
# Output goes to the VM's results console (the second serial port; on arm64 a
# virtio console), one line per check: "PASS name",
# "FAIL name: why"; "READY-FOR-CUT" then "TICK <ms>" lines while waiting for a
# power cut; "DONE" before powering off.
set -uo pipefail
# The results console, for lines written from inside a check (whose output
# the check captures).
exec 3>&1

CONFIG=/etc/hopwatch/hopwatch.toml
STATE=/var/lib/hopwatch
API=http://127.0.0.1:9470
TOKEN=vm-test-write-token-0123456789
# The unit's five capabilities: NET_BIND_SERVICE (10), NET_ADMIN (12), NET_RAW (13),
# PERFMON (38), BPF (39).
CAPS=000000c000003400
FLUSH_S=5
INTERVAL_MS=500
TIMEOUT_MS=1000
# What a power cut may cost: the flush interval, plus a round that was still
# waiting for its replies (interval and timeout), plus the 0.6 s between the
# guest's clock ticks that the host sees.
MAX_LOSS_MS=$((FLUSH_S * 1000 + INTERVAL_MS + TIMEOUT_MS + 1000))

phase=$(sed -n 's/.*hopwatch_vm\.phase=\([a-z0-9]*\).*/\1/p' /proc/cmdline)
cut_ms=$(sed -n 's/.*hopwatch_vm\.cut_ms=\([0-9]*\).*/\1/p' /proc/cmdline)
# The last boot after a cut checks and powers off instead of waiting for another.
last_cut=$(sed -n 's/.*hopwatch_vm\.last=\([0-9]\).*/\1/p' /proc/cmdline)

pass() { echo "PASS $1"; }
fail() { echo "FAIL $1: $2"; }
check() { # check NAME COMMAND...: PASS when the command succeeds, else FAIL with its output
    local name=$1 out
    shift
    if out=$("$@" 2>&1); then pass "$name"; else fail "$name" "$(echo "$out" | tail -3 | tr '\n' ' ')"; fi
}
now_ms() { echo $(($(date +%s%N) / 1000000)); }
api() { curl -sf --max-time 5 "$API$1"; }

# Waits up to $1 seconds for a command to succeed.
wait_for() {
    local seconds=$1
    shift
    local deadline=$((SECONDS + seconds))
    until "$@" >/dev/null 2>&1; do
        [ $SECONDS -lt $deadline ] || return 1
        sleep 1
    done
}

active() { systemctl is-active --quiet hopwatch; }
api_up() { api /api/v1/service; }
rounds_of() { api /api/v1/targets | jq -r --arg n "$1" '.targets[] | select(.name == $n) | .rounds'; }
has_rounds() { [ "$(rounds_of "$1")" -gt 0 ] 2>/dev/null; }
target_listed() { api /api/v1/targets | jq -e --arg n "$1" '.targets[] | select(.name == $n)'; }

# The newest and oldest stored destination points of a target over the last
# hour, Unix ms ("null" when none); the newest at or before $2 if given (raw
# reads include the running daemon's unflushed rounds, which after a power
# cut are all newer than the cut).
stored_newest() { api "/api/v1/targets/$1/series?range=1h&max_points=5000" | jq --argjson upto "${2:-1e18}" '[.series[0].points[] | select(.sent > 0 and .at_ms <= $upto) | .at_ms] | max'; }
stored_oldest() { api "/api/v1/targets/$1/series?range=1h&max_points=5000" | jq '[.series[0].points[] | select(.sent > 0) | .at_ms] | min'; }

# A config every release reads, the previous one too (it refuses keys it
# does not know).
write_base_config() {
    cat >"$CONFIG" <<CONF
# Written by the appliance VM test (deploy/vm/check.sh).
[storage]
flush_interval = "${FLUSH_S}s"

[enrichment]
reverse_dns = false

[web]
write_token = "$TOKEN"

[defaults]
interval = "${INTERVAL_MS}ms"
timeout = "${TIMEOUT_MS}ms"

[[target]]
name = "dst-icmp"
host = "198.18.201.2"
CONF
}

# The lab config: the one every release reads (write_base_config) plus the
# reflector, an IPv6 UDP target, a target the reboot phase takes away and a
# webhook nobody receives.
write_config() {
    write_base_config
    cat >>"$CONFIG" <<CONF

[reflector]
listen = ["198.18.200.1"]

[[target]]
name = "dst-udp6"
host = "fd00:201::2"
protocol = "udp"

# Taken away before the power cut: its alert must survive the cut.
[[target]]
name = "goes-away"
host = "fd00:201::3"

# Nothing listens here: every event stays owed in the outbox.
[[webhook]]
name = "nobody"
url = "http://127.0.0.1:9/hook"
retry_initial = "1s"
retry_max = "5s"
CONF
}

caps_of_daemon() {
    local pid
    pid=$(systemctl show -p MainPID --value hopwatch)
    [ "$pid" -gt 0 ] || { echo "no main PID"; return 1; }
    local eff amb user
    eff=$(sed -n 's/^CapEff:\t//p' "/proc/$pid/status")
    amb=$(sed -n 's/^CapAmb:\t//p' "/proc/$pid/status")
    user=$(stat -c %U "/proc/$pid")
    echo "user $user CapEff $eff CapAmb $amb"
    [ "$user" = hopwatch ] && [ "$eff" = "$CAPS" ] && [ "$amb" = "$CAPS" ]
}

reload_applies() {
    cat >>"$CONFIG" <<CONF

[[target]]
name = "added-by-reload"
host = "198.18.201.1"
CONF
    systemctl reload hopwatch && wait_for 20 target_listed added-by-reload
}

# Active for 10 s without systemd restarting it (a crash loop looks active too).
# On failure its journal goes to the results as LOG lines.
stays_up() {
    sleep 10
    local restarts
    restarts=$(systemctl show -p NRestarts --value hopwatch)
    echo "NRestarts=$restarts"
    active && [ "$restarts" = 0 ] && return 0
    journalctl -u hopwatch --no-pager -n 25 -o short-monotonic | sed 's/^/LOG /' >&3
    return 1
}
# `hopwatch check` as the unit's user holding exactly the installed unit's
# capabilities (setpriv: the image has no D-Bus for systemd-run).
check_as_unit() {
    local caps
    caps=$(systemctl show -p AmbientCapabilities --value hopwatch | tr ' ' '\n' | sed 's/^cap_/+/' | paste -sd,)
    echo "capabilities $caps"
    setpriv --reuid=hopwatch --regid=hopwatch --init-groups --inh-caps="$caps" --ambient-caps="$caps" \
        --bounding-set=-all,"$caps" /usr/bin/hopwatch check -c "$CONFIG"
}
ebpf_in_use() { api /api/v1/service | jq -e '.timestamp_source == "ebpf"'; }
not_degraded() { api /healthz | jq -e '.status == "ok"'; }
lab_rounds() { has_rounds dst-icmp && has_rounds dst-udp6; }

# History from before `noted before_reboot_ms` is still stored.
history_kept() {
    local oldest before
    before=$(noted before_reboot_ms)
    oldest=$(stored_oldest dst-icmp)
    echo "oldest stored $oldest, newest before the reboot $before"
    [ -n "$before" ] && [ "$before" != null ] && [ "$oldest" != null ] && [ "$oldest" -le "$before" ]
}

# Adds target $1 through the API with the write token; it must be saved in
# the config file.
api_write_is_saved() {
    local code
    code=$(curl -s -o /tmp/add.json -w '%{http_code}' --max-time 10 -X POST \
        -H "Authorization: Bearer $TOKEN" -H 'Content-Type: application/json' \
        -d "{\"name\": \"$1\", \"host\": \"198.18.200.2\"}" "$API/api/v1/targets")
    [ "$code" = 201 ] || { echo "POST /api/v1/targets answered $code: $(cat /tmp/add.json)"; return 1; }
    grep -q "$1" "$CONFIG" || { echo "the config file does not have the new target"; return 1; }
}

api_write_survives_restart() {
    api_write_is_saved added-by-api || return 1
    systemctl restart hopwatch || return 1
    wait_for 30 target_listed added-by-api || { echo "gone after a restart"; return 1; }
}

reflector_answers() {
    ip netns exec r1 /usr/bin/hopwatch peer 198.18.200.1 -c 5 -i 100ms --json >/tmp/peer.json || return 1
    jq -e '.summary.received >= 4' /tmp/peer.json || { cat /tmp/peer.json; return 1; }
}

journal_levels() {
    # A warning the daemon logs (an unknown target host it cannot resolve has
    # none here; a reload with a restart-only change logs one) lands as priority 4.
    sed -i 's/^listen = \["198.18.200.1"\]/listen = ["198.18.200.1:8620"]/' "$CONFIG"
    systemctl reload hopwatch
    sleep 2
    sed -i 's/^listen = \["198.18.200.1:8620"\]/listen = ["198.18.200.1"]/' "$CONFIG"
    systemctl reload hopwatch
    journalctl -u hopwatch -p warning --no-pager -o cat | grep -q . || {
        echo "no record of priority warning or above from hopwatch"
        journalctl -u hopwatch --no-pager -o verbose -n 3 | grep -E 'PRIORITY|MESSAGE'
        return 1
    }
    journalctl -u hopwatch -p info --no-pager -o cat | grep -q . || { echo "no info records"; return 1; }
}

# Events owed to the webhook that nobody receives.
pending_events() { api /api/v1/webhooks | jq '.webhooks[] | select(.name == "nobody") | .pending'; }
goes_away_alert() { api /api/v1/alerts | jq -er '[.alerts[] | select(.target == "goes-away") | .id] | first // empty'; }

# Takes the target's address away and waits for its alert, then notes the
# alert and the events owed, for the checks after each power cut.
alert_owed_before_cut() {
    ip -n dst addr del fd00:201::3/64 dev dst0 || return 1
    wait_for 150 goes_away_alert || { echo "no alert for goes-away within 150 s"; return 1; }
    local id pending
    id=$(goes_away_alert)
    pending=$(pending_events)
    echo "alert $id raised, $pending events owed"
    [ "$pending" -ge 1 ] 2>/dev/null || { echo "the outbox owes nothing"; return 1; }
    note alert_id "$id"
    note pending "$pending"
}

# After a power cut: the alert raised before the cut is still known (its
# incident), and nothing owed was lost (nobody received anything meanwhile).
alert_kept_after_cut() {
    local id pending listed
    id=$(noted alert_id)
    [ -n "$id" ] || { echo "no alert was noted before the cut"; return 1; }
    wait_for 30 pending_events
    pending=$(pending_events)
    listed=$(api "/api/v1/incidents?target=goes-away" | jq --arg id "$id" '[.incidents[] | select(.id == $id)] | length')
    echo "alert $id: $listed incident(s); $pending events owed, $(noted pending) before the cut"
    [ "$listed" = 1 ] && [ "$pending" -ge "$(noted pending)" ] 2>/dev/null
}


# The previous release's unit forbade the read-only clock calls its STAMP
# code makes (ProtectClock=, and adjtimex outside its syscall filter: SIGSYS;
# found by this test and fixed in this build's unit). Its users running peers
# needed this drop-in; an upgrade must work with it left in place.
previous_release_workaround() {
    mkdir -p /etc/systemd/system/hopwatch.service.d
    printf '[Service]\nProtectClock=no\nSystemCallFilter=adjtimex clock_adjtime\n' \
        >/etc/systemd/system/hopwatch.service.d/clock-reads.conf
    systemctl daemon-reload
}

config_dir_writable_by_the_service() {
    local owner
    owner=$(stat -c '%U:%G %a' /etc/hopwatch)
    echo "/etc/hopwatch is $owner"
    [ "$owner" = "root:hopwatch 770" ]
}

# The checks of a freshly (re)started unit, shared by the install phase and
# the arm64 guest.
running_unit_checks() {
    check "the unit is active" wait_for 30 active
    check "the API answers" wait_for 60 api_up
    check "the daemon stays up (no restarts)" stays_up
    check "it runs as user hopwatch with exactly its five capabilities" caps_of_daemon
    check "eBPF timestamps are in use" ebpf_in_use
    check "rounds are recorded for every lab target" wait_for 60 lab_rounds
    check "systemctl reload applies a changed config" reload_applies
    check "an API write with the token is saved and survives a restart" api_write_survives_restart
    check "the reflector answers on its default port 862" reflector_answers
    check "logs reach journald with their levels" journal_levels
    check "hopwatch check passes as the unit's user, with its capabilities" check_as_unit
}

purge_checks() {
    check "dpkg --purge succeeds" dpkg --purge hopwatch
    check "purge removes the user" sh -c "! getent passwd hopwatch"
    check "purge removes the state directory" test ! -e "$STATE"
    check "purge removes the config" test ! -e /etc/hopwatch
    check "purge removes the unit" sh -c "! systemctl cat hopwatch.service"
}

arm64_installs() {
    uname -m
    [ "$(uname -m)" = aarch64 ] || { echo "this kernel is not arm64"; return 1; }
    dpkg -i /payload/hopwatch-new.deb || return 1
    dpkg-query -W -f='${Architecture}\n' hopwatch | grep -qx arm64 || { echo "the package is not arm64"; return 1; }
    /usr/bin/hopwatch --version
}

# The daemon holds loaded sched_cls programs (type 3) that the kernel's JIT
# compiled (its own fdinfo says so), and tc shows a BPF filter in each
# direction of the lab interface (bookworm's 6.1 kernel has no TCX, so aya
# attaches cls_bpf filters over netlink).
ebpf_attached() {
    local pid jited=0 fd
    pid=$(systemctl show -p MainPID --value hopwatch)
    [ "$pid" -gt 0 ] || { echo "no main PID"; return 1; }
    for fd in /proc/"$pid"/fdinfo/*; do
        grep -q '^prog_type:[[:space:]]*3$' "$fd" 2>/dev/null && grep -q '^prog_jited:[[:space:]]*1$' "$fd" &&
            jited=$((jited + 1))
    done
    echo "$jited JIT-compiled sched_cls programs held by the daemon"
    [ "$jited" -ge 2 ] || return 1
    local dir
    for dir in ingress egress; do
        tc filter show dev vm0 "$dir" | grep -q ' bpf .*jited' && continue
        grep -qs '^link_type:[[:space:]]*tcx$' /proc/"$pid"/fdinfo/* && continue
        echo "no BPF filter on vm0 $dir:"
        tc filter show dev vm0 "$dir"
        return 1
    done
}

# `hopwatch trace` as root from the lab's dst namespace back to the VM's
# root namespace (two hops: r1, then the address): it must reach the
# destination at TTL 2, every hop answering, on eBPF timestamps with an RTT.
# TCP goes to port 80, where nothing listens: the RST is the answer. ICMP
# errors are not rate-limited for it (the router and the destination answer
# every probe, as in the test suite's lab).
trace_ebpf() {
    local proto=$1 host=$2
    sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0 &&
        ip netns exec r1 sysctl -qw net.ipv4.icmp_ratelimit=0 net.ipv6.icmp.ratelimit=0 || return 1
    ip netns exec dst /usr/bin/hopwatch trace -P "$proto" -c 3 -i 0.2 -w 2 -m 3 --json "$host" >/tmp/trace.json ||
        { cat /tmp/trace.json; return 1; }
    jq -e '.timestamp_source == "ebpf" and .destination_ttl == 2
        and (.hops | length == 2) and all(.hops[]; .received >= 1 and (.avg_ns // 0) > 0)' /tmp/trace.json ||
        { jq -c '{timestamp_source, destination_ttl, hops: [.hops[] | {sent, received, avg_ns}]}' /tmp/trace.json; return 1; }
}

# GET $1 into the file $2; fails with curl's exit code and the HTTP status
# unless the answer is 200.
fetch_to() {
    local code rc=0
    code=$(curl -s --max-time 20 -o "$2" -w '%{http_code}' "$API$1") || rc=$?
    [ "$rc" = 0 ] && [ "$code" = 200 ] && return 0
    echo "GET $1: curl exit $rc, HTTP $code"
    return 1
}
ui_page() { fetch_to / /tmp/index.html && grep -q '<title>hopwatch' /tmp/index.html; }
web_ui_answers() {
    # The first request is retried for up to 30 s: an emulated guest on a
    # busy machine can miss a deadline, and timing is not what this checks.
    wait_for 30 ui_page || { ui_page || head -c 300 /tmp/index.html; return 1; }
    fetch_to /assets/app.js /tmp/app.js || return 1
    fetch_to /metrics /tmp/metrics.txt || return 1
    grep -qE '^hopwatch_timestamp_source_info\{[^}]*source="ebpf"' /tmp/metrics.txt ||
        { echo "/metrics has no hopwatch_timestamp_source_info for ebpf"; grep timestamp_source /tmp/metrics.txt; return 1; }
}

# The series of a lab target has rounds with replies and an RTT.
rounds_have_rtts() {
    api "/api/v1/targets/dst-icmp/series?range=1h&max_points=5000" >/tmp/series.json || return 1
    jq -e '[.series[0].points[] | select(.sent > .lost and (.avg_ns // 0) > 0)] | length > 0' /tmp/series.json >/dev/null ||
        { echo "no stored rounds"; head -c 600 /tmp/series.json; return 1; }
}

# Notes outlive a power cut: synced at once (an append otherwise waits up to
# 30 s in the page cache, and the cut may come sooner).
note() {
    echo "$1=$2" >>/var/tmp/hopwatch-vm-test
    sync /var/tmp/hopwatch-vm-test
}
noted() { sed -n "s/^$1=//p" /var/tmp/hopwatch-vm-test 2>/dev/null | tail -1; }

wait_for_power_cut() {
    echo "READY-FOR-CUT"
    # The host kills qemu at a random moment after this: keep telling it the
    # guest's time, so the loss can be measured against the last tick seen.
    while true; do
        echo "TICK $(now_ms)"
        sleep 0.5
    done
}

case "$phase" in
install)
    check "the older .deb installs" dpkg -i /payload/hopwatch-old.deb
    write_config
    systemctl restart hopwatch
    running_unit_checks
    wait_for 30 has_rounds dst-icmp
    sleep $((FLUSH_S + 2))
    note before_reboot_ms "$(stored_newest dst-icmp)"
    ;;
reboot)
    check "the unit started at boot" wait_for 60 active
    check "the API answers" wait_for 60 api_up
    check "the daemon stays up after the reboot" stays_up
    check "history from before the reboot is kept" history_kept
    config_sum=$(sha256sum "$CONFIG" | cut -d' ' -f1)
    check "the newer .deb upgrades it" dpkg -i /payload/hopwatch-new.deb
    check "the unit runs again after the upgrade" wait_for 60 api_up
    check "the upgrade keeps the config" sh -c "[ \"\$(sha256sum $CONFIG | cut -d' ' -f1)\" = $config_sum ]"
    check "the upgrade keeps history" history_kept
    check "an alert raised with its receiver down is owed in the outbox" alert_owed_before_cut
    wait_for 30 has_rounds dst-icmp
    sleep $((FLUSH_S + 2))
    wait_for_power_cut
    ;;
cut)
    check "the unit starts after a power cut" wait_for 60 active
    check "the API answers after a power cut" wait_for 60 api_up
    check "no store or outbox was quarantined" sh -c "! ls -d $STATE/*quarantined* 2>/dev/null"
    check "nothing is degraded" not_degraded
    check "the outbox keeps the alert raised before the cut, and every event owed" alert_kept_after_cut
    newest=$(stored_newest dst-icmp "${cut_ms:-1e18}")
    if [ -n "$cut_ms" ] && [ "$newest" != null ]; then
        lost_ms=$((cut_ms - newest))
        echo "LOSS $lost_ms"
        if [ "$lost_ms" -le "$MAX_LOSS_MS" ]; then
            pass "history reaches to within a flush interval and a round of the cut ($lost_ms ms lost, at most $MAX_LOSS_MS)"
        else
            fail "history reaches to within a flush interval and a round of the cut" "$lost_ms ms lost, more than $MAX_LOSS_MS"
        fi
    else
        fail "history reaches to within a flush interval and a round of the cut" "cut at '$cut_ms', newest stored round '$newest'"
    fi
    if [ "$last_cut" != 1 ]; then
        wait_for 30 has_rounds dst-icmp
        sleep 3
        wait_for_power_cut
    fi
    ;;
purge)
    purge_checks
    ;;
arm64)
    check "the arm64 .deb installs on an arm64 kernel" arm64_installs
    write_config
    systemctl restart hopwatch
    running_unit_checks
    check "the eBPF programs are JIT-compiled and attached (ingress and egress) on the arm64 kernel" ebpf_attached
    for proto in icmp udp tcp; do
        check "hopwatch trace -P $proto over IPv4 reaches the target with eBPF timestamps" trace_ebpf "$proto" 198.18.200.1
        check "hopwatch trace -P $proto over IPv6 reaches the target with eBPF timestamps" trace_ebpf "$proto" fd00:200::1
    done
    check "the web UI answers (page, script, /metrics)" web_ui_answers
    check "the daemon's rounds carry eBPF RTTs in the API" rounds_have_rtts
    purge_checks
    ;;
previous)
    # The image has no ca-certificates package, and the previous release
    # would not start without a CA bundle (this build does); its users have
    # the package, so the phase gives the guest the host's bundle.
    mkdir -p /etc/ssl/certs && cp /payload/ca-certificates.crt /etc/ssl/certs/
    check "the previous release's .deb installs" dpkg -i /payload/hopwatch-previous.deb
    previous_release_workaround
    write_base_config
    systemctl restart hopwatch
    check "the previous release runs" wait_for 60 api_up
    check "the previous release records rounds" wait_for 60 has_rounds dst-icmp
    sleep $((FLUSH_S + 2))
    recorded_ms=$(now_ms)
    config_sum=$(sha256sum "$CONFIG" | cut -d' ' -f1)
    # The example config (a conffile) changed and the operator's differs:
    # dpkg would ask; a non-interactive upgrade keeps the operator's.
    check "this build's .deb upgrades the previous release" dpkg -i --force-confold /payload/hopwatch-new.deb
    check "the unit runs after the upgrade" wait_for 60 api_up
    check "the daemon stays up after the upgrade (no restarts)" stays_up
    check "the upgrade from the previous release keeps the config" sh -c "[ \"\$(sha256sum $CONFIG | cut -d' ' -f1)\" = $config_sum ]"
    oldest=$(stored_oldest dst-icmp)
    echo "oldest stored $oldest, previous release ran until $recorded_ms"
    if [ "$oldest" != null ] && [ -n "$oldest" ] && [ "$oldest" -le "$recorded_ms" ]; then
        pass "history the previous release recorded reads after the upgrade"
    else
        fail "history the previous release recorded reads after the upgrade" "oldest stored '$oldest', previous release ran until $recorded_ms"
    fi
    check "the upgrade makes /etc/hopwatch writable by the service's group" config_dir_writable_by_the_service
    check "an API write with the token is saved after the upgrade" api_write_is_saved added-after-upgrade
    ;;
shell)
    dpkg -i /payload/hopwatch-new.deb >/dev/null 2>&1 && write_config && systemctl restart hopwatch
    echo "hopwatch installed; the lab targets are configured"
    exit 0
    ;;
*)
    fail "phase" "unknown phase '$phase'"
    ;;
esac
echo "DONE"
sync
systemctl poweroff --check-inhibitors=no
