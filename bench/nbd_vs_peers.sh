#!/usr/bin/env bash
# NBD servers side by side, in one run, on one file system: fio's nbd engine
# (4 KiB blocks, QD32, one job) against
#   nbdkit file     a raw sparse file: the raw file over NBD;
#   qemu-nbd        a qcow2 image with an internal snapshot taken after filling
#                   it (qemu-img snapshot -c, with qemu-nbd stopped meanwhile);
#   snapdisk serve  a volume with a snapshot taken after filling it, through
#                   the CLI while the server runs (`snapdisk snapshot create`
#                   goes over the server's control socket).
# Every device is SIZE_MIB and is filled first with sequential 1 MiB writes
# through NBD. Phases: random write right after the snapshot, random write
# steady (the next run), random read. nbdkit's runs bracket snapdisk's (before
# and after; the mean is used), so drift on a shared machine hurts both alike.
# All three go through the page cache (none uses O_DIRECT); every measured run
# starts after a `sync`, so none pays for another's dirty pages, and every
# random-read run after one sequential read of the device through NBD, so the
# data is in the page cache for each alike.
#
#   bench/nbd_vs_peers.sh [DIR]
#   SECONDS=5 SIZE_MIB=1024 bench/nbd_vs_peers.sh /tmp/b
#
# SECONDS (or SECONDS_PER) is the length of each measured run (default 10).
# SNAPDISK is the snapdisk binary (default: $BUILD/tools/snapdisk, BUILD
# defaulting to build/release). Needs about 5x SIZE_MIB of free space in DIR.
# Prints a table with the targets; exits non-zero only if something fails to run.

# bash counts SECONDS up from the value it inherits: read it first thing.
RUNTIME_FROM_ENV=$SECONDS
set -euo pipefail
cd "$(dirname "$0")/.."
RUNTIME=${SECONDS_PER:-$RUNTIME_FROM_ENV}
[ "${RUNTIME:-0}" -gt 0 ] 2>/dev/null || RUNTIME=10
SIZE_MIB=${SIZE_MIB:-2048}
BUILD=${BUILD:-build/release}
SNAPDISK=${SNAPDISK:-$BUILD/tools/snapdisk}
DIR=${1:-$BUILD/bench-nbd}

die() { echo "nbd_vs_peers: $*" >&2; exit 1; }
[ -x "$SNAPDISK" ] || die "no snapdisk binary at $SNAPDISK (build first, or set SNAPDISK=...)"
for tool in fio nbdkit qemu-nbd qemu-img python3; do
  command -v "$tool" >/dev/null || die "$tool is missing (apt-get install fio nbdkit qemu-utils)"
done
fio --enghelp 2>/dev/null | grep -qw nbd || die "this fio has no nbd engine"
"$SNAPDISK" snapshot create --help >/dev/null 2>&1 ||
  die "$SNAPDISK has no 'snapshot create' command (the CLI is needed for the snapshot)"

mkdir -p "$DIR"
DIR=$(cd "$DIR" && pwd)
RAW=$DIR/raw.img QCOW=$DIR/disk.qcow2 POOL=$DIR/snap.pool
KIT_SOCK=$DIR/nbdkit.sock QEMU_SOCK=$DIR/qemu-nbd.sock SNAP_SOCK=$DIR/snapdisk.sock
KIT_URI="nbd+unix:///?socket=$KIT_SOCK"
QEMU_URI="nbd+unix:///?socket=$QEMU_SOCK"
SNAP_URI="nbd+unix:///vol?socket=$SNAP_SOCK"
RESULTS=$DIR/results.txt
KIT_PID= QEMU_PID= SNAP_PID=

stop() {  # pid: SIGTERM, then wait for it
  local pid=$1
  [ -n "$pid" ] || return 0
  kill -TERM "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
}
cleanup() {
  stop "$KIT_PID"
  stop "$QEMU_PID"
  stop "$SNAP_PID"
  rm -f "$RAW" "$QCOW" "$POOL" "$POOL.lock" "$POOL.ctl" "$KIT_SOCK" "$QEMU_SOCK" "$SNAP_SOCK" \
    "$DIR/fio.json" "$DIR/fio.err"
}
trap cleanup EXIT
rm -f "$RAW" "$QCOW" "$POOL" "$POOL.lock" "$POOL.ctl" "$KIT_SOCK" "$QEMU_SOCK" "$SNAP_SOCK"
: >"$RESULTS"

wait_for_socket() {  # path pid name
  for _ in $(seq 1 500); do
    [ -S "$1" ] && return 0
    kill -0 "$2" 2>/dev/null || die "$3 exited during startup"
    sleep 0.02
  done
  die "$3 did not create $1"
}

# fio through NBD; prints the IOPS of reads + writes.
fio_nbd() {  # uri rw bs iodepth [extra fio args...]
  local uri=$1 rw=$2 bs=$3 qd=$4
  shift 4
  if ! fio --name=bench --ioengine=nbd --uri="$uri" --rw="$rw" --bs="$bs" --iodepth="$qd" \
      --size="${SIZE_MIB}M" --output-format=json --output="$DIR/fio.json" "$@" \
      >/dev/null 2>"$DIR/fio.err"; then
    cat "$DIR/fio.err" >&2
    die "fio $rw on $uri failed"
  fi
  python3 -c 'import json,sys; j=json.load(open(sys.argv[1]))["jobs"][0]; print(round(j["write"]["iops"]+j["read"]["iops"]))' "$DIR/fio.json"
}
measure() {  # label uri rw: one timed random run, recorded in $RESULTS
  local iops
  # Start from a clean page cache: the kernel writing back what an earlier
  # run (of any target) left dirty would otherwise slow this one.
  sync
  # Reads: warm this target's data first (one sequential pass through NBD),
  # so the run measures the server, not whatever of the files the page
  # cache happened to keep.
  [ "$3" = randread ] && fio_nbd "$2" read 1m 8 >/dev/null
  iops=$(fio_nbd "$2" "$3" 4k 32 --time_based --runtime="$RUNTIME" --randrepeat=0)
  echo "$1 $iops" >>"$RESULTS"
  printf '  %-28s %10s IOPS\n' "$1" "$iops" >&2
}
fill() {  # uri: every byte written once, sequentially
  fio_nbd "$1" write 1m 8 >/dev/null
}

echo "== ${SIZE_MIB} MiB per device, ${RUNTIME} s per run, fio $(fio --version), in $DIR" >&2

# ---- Start and fill all three ------------------------------------------------
truncate -s "${SIZE_MIB}M" "$RAW"
nbdkit -f -U "$KIT_SOCK" file "$RAW" 2>"$DIR/nbdkit.log" &
KIT_PID=$!
qemu-img create -q -f qcow2 "$QCOW" "${SIZE_MIB}M"
start_qemu() {
  qemu-nbd -t -k "$QEMU_SOCK" -f qcow2 "$QCOW" 2>"$DIR/qemu-nbd.log" &
  QEMU_PID=$!
  wait_for_socket "$QEMU_SOCK" "$QEMU_PID" qemu-nbd
}
start_qemu
"$SNAPDISK" pool create "$POOL" --size "$((SIZE_MIB * 3 + 512))M" >/dev/null
"$SNAPDISK" volume create "$POOL" vol --size "${SIZE_MIB}M" >/dev/null
"$SNAPDISK" serve "$POOL" --socket "$SNAP_SOCK" 2>"$DIR/snapdisk-serve.log" &
SNAP_PID=$!
wait_for_socket "$KIT_SOCK" "$KIT_PID" nbdkit
wait_for_socket "$SNAP_SOCK" "$SNAP_PID" "snapdisk serve"

echo "filling nbdkit, qemu-nbd and snapdisk (sequential 1 MiB writes)..." >&2
fill "$KIT_URI"
fill "$QEMU_URI"
fill "$SNAP_URI"

# ---- qemu-nbd: internal snapshot, then the three phases -----------------------
echo "qemu-nbd: qemu-img snapshot -c (server stopped), then random write/write/read" >&2
stop "$QEMU_PID"
QEMU_PID=
qemu-img snapshot -c s1 "$QCOW"
start_qemu
measure qemu_write_after_snapshot "$QEMU_URI" randwrite
measure qemu_write_steady "$QEMU_URI" randwrite
measure qemu_read "$QEMU_URI" randread
stop "$QEMU_PID"
QEMU_PID=

# ---- nbdkit / snapdisk / nbdkit ---------------------------------------------------
echo "nbdkit random write; snapdisk snapshot (CLI -> control socket) + random write x2; nbdkit again" >&2
measure kit_write_1 "$KIT_URI" randwrite
"$SNAPDISK" snapshot create "$POOL" vol s1 >/dev/null
measure snap_write_after_snapshot "$SNAP_URI" randwrite
measure snap_write_steady "$SNAP_URI" randwrite
measure kit_write_2 "$KIT_URI" randwrite
echo "random reads: nbdkit, snapdisk, nbdkit" >&2
measure kit_read_1 "$KIT_URI" randread
measure snap_read "$SNAP_URI" randread
measure kit_read_2 "$KIT_URI" randread

kill -TERM "$SNAP_PID"
SNAP_STATUS=0
wait "$SNAP_PID" || SNAP_STATUS=$?
SNAP_PID=
[ "$SNAP_STATUS" = 0 ] || die "snapdisk serve exited $SNAP_STATUS on SIGTERM: $(cat "$DIR/snapdisk-serve.log")"

python3 - "$RESULTS" "$SIZE_MIB" "$RUNTIME" <<'PY'
import sys
r = {}
for line in open(sys.argv[1]):
    k, v = line.split()
    r[k] = float(v)
kit_w = (r["kit_write_1"] + r["kit_write_2"]) / 2
kit_r = (r["kit_read_1"] + r["kit_read_2"]) / 2
def mark(ok): return "yes" if ok else "NO"
print(f"fio --ioengine=nbd, 4 KiB, QD32, {sys.argv[3]} s per run, {sys.argv[2]} MiB devices filled first\n")
print(f"{'figure':52} {'IOPS':>10}")
rows = [
    ("nbdkit file, randwrite (runs before/after snapdisk)", f"{r['kit_write_1']:.0f} / {r['kit_write_2']:.0f}"),
    ("nbdkit file, randwrite (mean)", f"{kit_w:.0f}"),
    ("nbdkit file, randread (runs before/after snapdisk)", f"{r['kit_read_1']:.0f} / {r['kit_read_2']:.0f}"),
    ("nbdkit file, randread (mean)", f"{kit_r:.0f}"),
    ("qemu-nbd qcow2, randwrite right after snapshot", f"{r['qemu_write_after_snapshot']:.0f}"),
    ("qemu-nbd qcow2, randwrite steady", f"{r['qemu_write_steady']:.0f}"),
    ("qemu-nbd qcow2, randread", f"{r['qemu_read']:.0f}"),
    ("snapdisk serve, randwrite right after snapshot", f"{r['snap_write_after_snapshot']:.0f}"),
    ("snapdisk serve, randwrite steady", f"{r['snap_write_steady']:.0f}"),
    ("snapdisk serve, randread", f"{r['snap_read']:.0f}"),
]
for name, value in rows:
    print(f"{name:52} {value:>10}")
print()
print(f"{'target':52} {'ratio':>10} {'want':>8} {'met':>4}")
checks = [
    ("snapdisk steady randwrite / nbdkit randwrite", r["snap_write_steady"] / kit_w, 0.9),
    ("snapdisk randread / nbdkit randread", r["snap_read"] / kit_r, 0.9),
    ("snapdisk after-snapshot / snapdisk steady (write)", r["snap_write_after_snapshot"] / r["snap_write_steady"], 0.8),
    ("snapdisk / qemu-nbd, randwrite after snapshot", r["snap_write_after_snapshot"] / r["qemu_write_after_snapshot"], 5.0),
]
for name, ratio, want in checks:
    print(f"{name:52} {ratio:10.2f} {'>= ' + str(want):>8} {mark(ratio >= want):>4}")
PY
