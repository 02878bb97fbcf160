#!/usr/bin/env bash
# The hopwatch demo, from a fresh machine with no internet: installs what is
# needed, builds hopwatch, brings up a lab network of namespaces (a source host,
# three routers, a destination host with IPv4 and IPv6 targets) and traces it
# with ICMP, UDP and TCP, then removes the lab. Packets never leave the lab.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

bash deploy/setup.sh
echo "demo: building hopwatch (release)" >&2
cargo build --release --locked -p hopwatch-service -p hopwatch-tests --bins

hopwatch=target/release/hopwatch
lab_bin=target/release/hopwatch-lab
workdir=$(mktemp -d)
lab_pid=""
cleanup() {
    if [ -n "$lab_pid" ] && kill -0 "$lab_pid" 2>/dev/null; then
        # SIGINT makes hopwatch-lab remove every namespace and rule it made.
        kill -INT "$lab_pid"
        wait "$lab_pid" 2>/dev/null || true
    fi
    rm -rf "$workdir"
}
trap cleanup EXIT INT TERM

"$lab_bin" up --routers 3 --targets 4 --json --for 10m >"$workdir/lab.json" 2>"$workdir/lab.log" &
lab_pid=$!
# The plan is printed once the lab is up; wait for complete JSON.
for _ in $(seq 1 100); do
    if python3 -c 'import json,sys; json.load(open(sys.argv[1]))' "$workdir/lab.json" 2>/dev/null; then
        break
    fi
    kill -0 "$lab_pid" 2>/dev/null || { cat "$workdir/lab.log" >&2; exit 1; }
    sleep 0.1
done
read -r lab_id v4 v6 < <(python3 -c '
import json, sys
plan = json.load(open(sys.argv[1]))
print(plan["id"], plan["targets_v4"][0], plan["targets_v6"][0])' "$workdir/lab.json")
src_ns="${lab_id}-src"
echo "demo: lab $lab_id is up; tracing from namespace $src_ns" >&2

run() {
    echo
    echo "\$ ip netns exec $src_ns hopwatch trace $*"
    ip netns exec "$src_ns" "$hopwatch" trace "$@"
}
run -c 5 -i 0.2 "$v4"
run -c 5 -i 0.2 -P udp "$v6"
run -c 5 -i 0.2 -P tcp -p 443 "$v4"
run -c 3 -i 0.2 --timestamps kernel "$v4"
run -c 2 -i 0.2 --raw -m 4 "$v6"
echo
echo "demo: done; removing the lab" >&2
