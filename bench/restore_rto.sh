#!/usr/bin/env bash
# RTO of restores from snapshot backups, measured through the CLI: a volume
# with SMALL_MIB and one with BIG_MIB written, each backed up with
# `backup --method snapshot`, then restored to a new volume (instant: usable
# at once, filled in the background) and, for comparison, with --copy.
# Reports each restore's time until usable and until complete (the
# restore's own --json figures) and the ratio of the two times to usable.
# Target (restore issue): usable-time ratio big/small <= 2.
#
#   BUILD=build/release bench/restore_rto.sh DIR      (SMALL_MIB=64 BIG_MIB=8192)
#
# Needs ~2.5x BIG_MIB of free space in DIR; removes what it made at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
DIR=${1:?usage: bench/restore_rto.sh DIR}
SMALL_MIB=${SMALL_MIB:-64}
BIG_MIB=${BIG_MIB:-8192}
SD=$BUILD/tools/snapdisk
[ -x "$SD" ] || { echo "build first: cmake --build $BUILD --target snapdisk_cli" >&2; exit 1; }
mkdir -p "$DIR"
trap 'rm -rf "$DIR"/rto.pool "$DIR"/rto.pool.* "$DIR"/rto.store "$DIR"/rto.img' EXIT
rm -rf "$DIR"/rto.pool "$DIR"/rto.pool.* "$DIR"/rto.store
"$SD" pool create "$DIR/rto.pool" --size $((BIG_MIB * 3 + 4096))M >/dev/null
"$SD" store create "$DIR/rto.store" >/dev/null
field() { python3 -c "import json,sys; print(json.load(sys.stdin)['$1'])"; }
echo "load $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores"
printf '%-10s %-10s %14s %14s %14s\n' written method usable_s complete_s store_bytes
declare -A usable
for mib in "$SMALL_MIB" "$BIG_MIB"; do
  # Data that is not zeros (zeros would be holes), compressible like a database's.
  python3 -c "
import os, sys
block = bytes((i * 7 + 3) % 251 for i in range(4096)) * 256  # 1 MiB, not zeros
with open('$DIR/rto.img', 'wb') as f:
    for i in range($mib):
        f.write(block[:-8] + i.to_bytes(8, 'little'))"
  "$SD" import "$DIR/rto.pool" "v$mib" "$DIR/rto.img" >/dev/null
  rm -f "$DIR/rto.img"
  id=$("$SD" backup "$DIR/rto.pool" "v$mib" --store "$DIR/rto.store" --method snapshot --json | field id)
  # Three instant restores (the median counts), then one copy restore.
  for run in instant:1 instant:2 instant:3 copy:1; do
    method=${run%:*}
    extra=(); [ "$method" = copy ] && extra=(--copy)
    out=$("$SD" restore --store "$DIR/rto.store" "$id" --to-new "$DIR/rto.pool" "r$mib$method" "${extra[@]}" --json)
    u=$(echo "$out" | field rto_usable_seconds)
    c=$(echo "$out" | field complete_seconds)
    r=$(echo "$out" | field read_bytes)
    printf '%-10s %-10s %14.4f %14.4f %14d\n' "${mib}MiB" "$run" "$u" "$c" "$r"
    usable[$mib$method]="${usable[$mib$method]:-} $u"
    "$SD" volume delete "$DIR/rto.pool" "r$mib$method" >/dev/null
  done
done
python3 -c "
import statistics
s = statistics.median(map(float, '${usable[${SMALL_MIB}instant]}'.split()))
b = statistics.median(map(float, '${usable[${BIG_MIB}instant]}'.split()))
r = b / s
print(f'instant restore, median time to usable: {b:.4f} s ({$BIG_MIB} MiB) / {s:.4f} s ({$SMALL_MIB} MiB) = {r:.2f}  target <= 2  {\"PASS\" if r <= 2 else \"MISS\"}')
sc, bc = float('${usable[${SMALL_MIB}copy]}'), float('${usable[${BIG_MIB}copy]}')
print(f'copy restore, time to usable: {bc:.4f} s / {sc:.4f} s = {bc / sc:.1f} (grows with the data)')"
