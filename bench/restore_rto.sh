#!/usr/bin/env bash
# RTO of restores, measured through the CLI: a volume with SMALL_MIB and one
# with BIG_MIB written, each backed up twice — `backup --method snapshot` and
# `backup --method full` (physical) — then restored to new volumes:
#  - the snapshot set instantly (usable at once, filled in the background),
#    three times, and once with --copy;
#  - the physical full set by copying (the only way a physical set restores).
# Reports each restore's time until usable and until complete and the bytes
# read from the store (the restore's own --json figures; instant restores run
# with --wait for these), then the wall time of the instant restore command
# itself (it returns once the volume is usable, its fill left for later),
# three times per size, and:
#  - the ratio of the instant restores' median times to usable, big/small
#    (target, restore issue: <= 2: independent of the data size);
#  - the ratio of the instant restore command's median wall times, big/small
#    (target, issue "backups a user can trust": <= 1.5, with SMALL_MIB=16
#    BIG_MIB=4096);
#  - the physical restore's rate next to the device's write bandwidth, from
#    the peer `fio` writing BIG_MIB sequentially into the same directory
#    (1 MiB writes, fsync at the end), in the same run.
#
#   BUILD=build/release bench/restore_rto.sh DIR      (SMALL_MIB=64 BIG_MIB=8192)
#
# Needs ~3.5x BIG_MIB of free space in DIR; removes what it made at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
DIR=${1:?usage: bench/restore_rto.sh DIR}
SMALL_MIB=${SMALL_MIB:-64}
BIG_MIB=${BIG_MIB:-8192}
SD=$BUILD/tools/snapdisk
[ -x "$SD" ] || { echo "build first: cmake --build $BUILD --target snapdisk_cli" >&2; exit 1; }
command -v fio >/dev/null || { echo "fio is missing: apt-get install fio" >&2; exit 1; }
mkdir -p "$DIR"
cleanup() { rm -rf "$DIR"/rto.pool "$DIR"/rto.pool.* "$DIR"/rto.store "$DIR"/rto.img "$DIR"/rto.fio; }
trap cleanup EXIT
cleanup
"$SD" pool create "$DIR/rto.pool" --size $((BIG_MIB * 4 + 4096))M >/dev/null
"$SD" store create "$DIR/rto.store" >/dev/null
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
echo "load $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
declare -A usable complete snap full
# Both volumes and their backups first, so every restore below runs against
# the same pool and store, whichever size it restores.
for mib in "$SMALL_MIB" "$BIG_MIB"; do
  # Data that is not zeros (zeros would be holes), compressible like a database's.
  python3 -c "
block = bytes((i * 7 + 3) % 251 for i in range(4096)) * 256  # 1 MiB, not zeros
with open('$DIR/rto.img', 'wb') as f:
    for i in range($mib):
        f.write(block[:-8] + i.to_bytes(8, 'little'))"
  "$SD" import "$DIR/rto.pool" "v$mib" "$DIR/rto.img" >/dev/null
  rm -f "$DIR/rto.img"
  snap[$mib]=$("$SD" backup "$DIR/rto.pool" "v$mib" --store "$DIR/rto.store" --method snapshot --json | field id)
  full[$mib]=$("$SD" backup "$DIR/rto.pool" "v$mib" --store "$DIR/rto.store" --method full --json | field id)
done
printf '%-10s %-16s %12s %12s %14s\n' written restore usable_s complete_s store_bytes
# The physical restores first: into space no earlier restore wrote and freed
# (re-allocating the freed space of a deleted volume costs the file system
# more than writing fresh space). The sizes alternate.
for run in physical:1 instant:1 instant:2 instant:3 copy:1; do
  for mib in "$SMALL_MIB" "$BIG_MIB"; do
    method=${run%:*}
    id=${snap[$mib]} extra=()
    [ "$method" = copy ] && extra=(--copy)
    [ "$method" = instant ] && extra=(--wait)
    [ "$method" = physical ] && id=${full[$mib]}
    sync  # no writeback of the run before left to slow this one down
    out=$("$SD" restore --store "$DIR/rto.store" "$id" --to-new "$DIR/rto.pool" "r$mib$method" "${extra[@]}" --json)
    u=$(echo "$out" | field rto_usable_seconds)
    c=$(echo "$out" | field complete_seconds)
    r=$(echo "$out" | field read_bytes)
    printf '%-10s %-16s %12.4f %12.4f %14d\n' "${mib}MiB" "$run ($id)" "$u" "$c" "$r"
    usable[$mib$method]="${usable[$mib$method]:-} $u"
    complete[$mib$method]=$c
    "$SD" volume delete "$DIR/rto.pool" "r$mib$method" >/dev/null
  done
done
# The instant restore command as a user runs it: it returns once the volume
# is usable (its fill goes on at the next `serve`); wall time of the process.
declare -A wall
for run in 1 2 3; do
  for mib in "$SMALL_MIB" "$BIG_MIB"; do
    sync
    t0=$(date +%s.%N)
    "$SD" restore --store "$DIR/rto.store" "${snap[$mib]}" --to-new "$DIR/rto.pool" "w$mib" --json >/dev/null
    t1=$(date +%s.%N)
    w=$(python3 -c "print($t1 - $t0)")
    printf '%-10s %-16s %12.4f %12s %14s\n' "${mib}MiB" "command:$run" "$w" "-" "-"
    wall[$mib]="${wall[$mib]:-} $w"
    "$SD" volume delete "$DIR/rto.pool" "w$mib" >/dev/null
  done
done
# The peer: the device's sequential write bandwidth, through the page cache
# like the pool's writes, synced at the end like a restore's last commit.
sync
fio_mbs=$(fio --name=seqwrite --filename="$DIR/rto.fio" --rw=write --bs=1M --size=${BIG_MIB}M \
  --ioengine=psync --end_fsync=1 --output-format=json | python3 -c "
import json, sys
print(json.load(sys.stdin)['jobs'][0]['write']['bw_bytes'] / 1e6)")
rm -f "$DIR/rto.fio"
python3 -c "
import statistics
s = statistics.median(map(float, '${usable[${SMALL_MIB}instant]}'.split()))
b = statistics.median(map(float, '${usable[${BIG_MIB}instant]}'.split()))
r = b / s
print(f'instant restore, median time to usable: {b:.4f} s ({$BIG_MIB} MiB) / {s:.4f} s ({$SMALL_MIB} MiB) = {r:.2f}  target <= 2  {\"PASS\" if r <= 2 else \"MISS\"}')
ws = statistics.median(map(float, '${wall[$SMALL_MIB]}'.split()))
wb = statistics.median(map(float, '${wall[$BIG_MIB]}'.split()))
print(f'instant restore command, median wall time: {wb:.4f} s ({$BIG_MIB} MiB) / {ws:.4f} s ({$SMALL_MIB} MiB) = {wb / ws:.2f}  target <= 1.5  {\"PASS\" if wb / ws <= 1.5 else \"MISS\"}')
pb, ps = float('${complete[${BIG_MIB}physical]}'), float('${complete[${SMALL_MIB}physical]}')
print(f'physical restore, time to complete: {pb:.2f} s / {ps:.2f} s = {pb / ps:.1f} (grows with the data)')
rate = $BIG_MIB * 1048576 / pb / 1e6
fio = float('$fio_mbs')
print(f'physical restore of {$BIG_MIB} MiB: {rate:.1f} MB/s; fio sequential write, same directory: {fio:.1f} MB/s; ratio {rate / fio:.2f}')"
