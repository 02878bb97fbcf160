# Samples a running hopwatch's heap every INTERVAL seconds, as
# docs/benchmarks.md ("Where the rise comes from") did: glibc's malloc_info,
# called in the process through gdb (each call pauses it for about a second),
# and VmRSS. One line per sample: the arenas' bytes from the system, their
# free pieces, the difference (bytes in use), mmapped chunks, and the four
# largest arenas as system/free. Stops when the process does.
#
#   sudo bash deploy/heap-sample.sh PID [INTERVAL_S] >> heap.txt
#
# Installs gdb when it is missing. glibc only (what Debian's hopwatch uses).
set -euo pipefail
cd "$(dirname "$0")/.."
. deploy/apt.sh
require_root
apt_install gdb python3

pid=${1:?usage: deploy/heap-sample.sh PID [INTERVAL_S]}
interval=${2:-300}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
cat >"$work/info.gdb" <<GDB
set \$f = (void *) fopen("$work/info.xml", "w")
call (int) malloc_info(0, \$f)
call (int) fclose(\$f)
GDB

while kill -0 "$pid" 2>/dev/null; do
    gdb -p "$pid" -batch -x "$work/info.gdb" >/dev/null 2>&1 || true
    rss_kib=$(awk '/^VmRSS/ { print $2 }' "/proc/$pid/status" 2>/dev/null || echo 0)
    python3 - "$work/info.xml" "$rss_kib" <<'PY'
import re, sys, time
xml = open(sys.argv[1]).read()
mib = lambda b: b / 2**20
def total(kind, text):
    m = re.search(r'<total type="%s" count="\d+" size="(\d+)"' % kind, text)
    return int(m.group(1)) if m else 0
tail = xml[xml.rfind("</heap>"):]
system = int(re.search(r'<system type="current" size="(\d+)"', tail).group(1))
free = total("fast", tail) + total("rest", tail)
arenas = []
for nr, heap in re.findall(r'<heap nr="(\d+)">(.*?)</heap>', xml, re.S):
    size = int(re.search(r'<system type="current" size="(\d+)"', heap).group(1))
    arenas.append((size, total("fast", heap) + total("rest", heap), nr))
largest = " ".join("h%s:%.1f/%.1f" % (nr, mib(s), mib(f)) for s, f, nr in sorted(arenas, reverse=True)[:4])
print(time.strftime("%H:%M:%S"), "rss=%.1f" % (int(sys.argv[2]) / 1024),
      "arena=%.1f free=%.1f inuse=%.1f mmap=%.1f" % (mib(system), mib(free), mib(system - free), mib(total("mmap", tail))),
      largest, flush=True)
PY
    sleep "$interval"
done
