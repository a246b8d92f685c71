#!/usr/bin/env bash
# Reads of a volume while an instant restore fills it, and after: fio
# randread 8 KiB, QD1, over NBD (fio's nbd engine, through `snapdisk serve`),
# for each size in SIZES_MIB of random (incompressible) data.
#
# Per size: the data is imported into a volume and snapshot-backed up into a
# directory store; `snapdisk serve` holds the pool; `restore --to-new` starts
# an instant restore (`--wait`) whose fill is capped at FILL_MB_S (a slow
# fill, so the reads run ahead of it), and fio reads the new volume for
# SECONDS meanwhile; once the restore is complete, fio reads the same volume
# again for SECONDS. Reports, side by
# side: IOPS, p50 and p99 completion latency during and after (target, issue
# "Instant restore reads each chunk from the store once": p99 during <= 3x
# after), and the bytes read from the store over the set's stored bytes
# (each chunk once: 1.00x).
#
#   BUILD=build/release bench/hydration_reads.sh DIR    (SIZES_MIB="512 4096" SECONDS=10)
#
# Needs ~4x the largest size of free space in DIR; removes what it made.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
DIR=${1:?usage: bench/hydration_reads.sh DIR}
SIZES_MIB=${SIZES_MIB:-"512 4096"}
SECONDS_EACH=${SECONDS:-10}
FILL_MB_S=${FILL_MB_S:-20}
SD=$(realpath "$BUILD/tools/snapdisk")
[ -x "$SD" ] || { echo "build first: cmake --build $BUILD --target snapdisk_cli" >&2; exit 1; }
command -v fio >/dev/null || { echo "fio is missing: apt-get install fio" >&2; exit 1; }
mkdir -p "$DIR"
DIR=$(realpath "$DIR")
POOL=$DIR/hr.pool STORE=$DIR/hr.store SOCK=$DIR/hr.sock
serve_pid=
cleanup() {
  [ -n "$serve_pid" ] && kill "$serve_pid" 2>/dev/null && wait "$serve_pid" 2>/dev/null || true
  rm -rf "$POOL" "$POOL".* "$STORE" "$DIR/hr.img" "$SOCK" "$DIR/hr.restore.json" "$DIR/hr.serve.log"
}
trap cleanup EXIT
cleanup
max=0
for mib in $SIZES_MIB; do [ "$mib" -gt "$max" ] && max=$mib; done
"$SD" pool create "$POOL" --size $((max * 4 + 2048))M >/dev/null
"$SD" store create "$STORE" >/dev/null
field() { python3 -c "import json,sys; d=json.load(sys.stdin); print(d$1)"; }
declare -A snap
for mib in $SIZES_MIB; do
  head -c "${mib}M" /dev/urandom >"$DIR/hr.img"
  "$SD" import "$POOL" "v$mib" "$DIR/hr.img" >/dev/null
  rm -f "$DIR/hr.img"
  snap[$mib]=$("$SD" backup "$POOL" "v$mib" --store "$STORE" --method snapshot --json | field "['id']")
done
"$SD" serve "$POOL" --socket "$SOCK" --policy-check 0 2>"$DIR/hr.serve.log" &
serve_pid=$!
for _ in $(seq 100); do [ -S "$SOCK" ] && break; sleep 0.1; done
# fio's JSON: IOPS, p50 and p99 of the completion latency in ms.
run_fio() {
  fio --name=randread --ioengine=nbd --uri="nbd+unix:///$1?socket=$SOCK" --rw=randread --bs=8k \
    --iodepth=1 --time_based --runtime="$SECONDS_EACH" --output-format=json | python3 -c "
import json, sys
text = sys.stdin.read()  # the nbd engine says "connected" before the JSON
r = json.loads(text[text.index('{'):])['jobs'][0]['read']
p = r['clat_ns']['percentile']
print(f\"{r['iops']:.0f} {p['50.000000'] / 1e6:.3f} {p['99.000000'] / 1e6:.3f}\")"
}
echo "load $(cut -d' ' -f1-3 /proc/loadavg); $(nproc) cores; fio randread 8K QD1 over NBD, ${SECONDS_EACH} s each"
printf '%-8s %-7s %8s %9s %9s %14s %14s %7s\n' data phase iops p50_ms p99_ms read_bytes set_bytes ampl
summary=()
for mib in $SIZES_MIB; do
  vol="r$mib"
  # The restore waits for its (capped) fill; its report counts every byte
  # read from the store, by the fill and by the reads.
  "$SD" restore --store "$STORE" "${snap[$mib]}" --to-new "$POOL" "$vol" --rate "$FILL_MB_S" \
    --wait --json >"$DIR/hr.restore.json" &
  restore_pid=$!
  for _ in $(seq 300); do "$SD" volume info "$POOL" "$vol" >/dev/null 2>&1 && break; sleep 0.05; done
  read -r iops_d p50_d p99_d < <(run_fio "$vol")
  pending=$("$SD" restore status "$POOL" "$vol" --json | field "['hydration_pending_bytes']")
  wait "$restore_pid"
  fin=$(cat "$DIR/hr.restore.json")
  total=$(echo "$fin" | field "['read_bytes']")
  set_bytes=$(echo "$fin" | field "['set_stored_bytes']")
  read -r iops_a p50_a p99_a < <(run_fio "$vol")
  ampl=$(python3 -c "print(f'{$total / $set_bytes:.3f}' if $set_bytes else 'n/a')")
  printf '%-8s %-7s %8s %9s %9s %14s %14s %7s\n' "${mib}MiB" during "$iops_d" "$p50_d" "$p99_d" "-" "-" "-"
  printf '%-8s %-7s %8s %9s %9s %14s %14s %7s\n' "${mib}MiB" after "$iops_a" "$p50_a" "$p99_a" "$total" "$set_bytes" "$ampl"
  summary+=("$(python3 -c "
r = $p99_d / $p99_a
print(f'{$mib} MiB: p99 during {$p99_d:.3f} ms / after {$p99_a:.3f} ms = {r:.2f}  target <= 3  {\"PASS\" if r <= 3 else \"MISS\"}; '
      f'{$pending} bytes still pending when the reads ended; store reads {\"$ampl\"}x the set')")")
  "$SD" volume delete "$POOL" "$vol" >/dev/null
done
printf '%s\n' "${summary[@]}"
