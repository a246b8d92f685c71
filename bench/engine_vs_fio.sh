#!/usr/bin/env bash
# The engine's figures (issue "The engine") next to fio, in one run, on one
# file system. fio runs io_uring, direct, QD32, 4 KiB on a fully laid-out raw
# file (the physical limit); engine_bench runs the same pattern in-process on
# a volume of a pool file in the same directory, with and without O_DIRECT.
#
#   bench/engine_vs_fio.sh [DIR]
#   SECONDS_PER=10 VOL_MIB=2048 BIG_MIB=8192 bench/engine_vs_fio.sh /tmp/b
#
# Needs ~3x BIG_MIB of free space in DIR. Prints a table; exits non-zero only
# if something fails to run.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
DIR=${1:-$BUILD/bench-engine}
SECONDS_PER=${SECONDS_PER:-10}
VOL_MIB=${VOL_MIB:-2048}
BIG_MIB=${BIG_MIB:-8192}
BENCH=$BUILD/bench/engine_bench
[ -x "$BENCH" ] || { echo "build first: cmake --build --preset release" >&2; exit 1; }
command -v fio >/dev/null || { echo "fio is missing: apt-get install fio" >&2; exit 1; }
mkdir -p "$DIR"
OUT=$(mktemp)
trap 'rm -f "$OUT" "$DIR"/raw.img "$DIR"/*.pool "$DIR"/*.pool.lock' EXIT

fio_iops() {  # rw
  fio --name=peer --filename="$DIR/raw.img" --size="${VOL_MIB}M" --rw="$1" --bs=4k \
      --iodepth=32 --ioengine=io_uring --direct=1 --time_based --runtime="$SECONDS_PER" \
      --output-format=json 2>/dev/null |
    python3 -c 'import json,sys; j=json.load(sys.stdin)["jobs"][0]; print(round(j["write"]["iops"]+j["read"]["iops"]))'
}

echo "laying out a ${VOL_MIB} MiB raw file for fio..." >&2
fio --name=layout --filename="$DIR/raw.img" --size="${VOL_MIB}M" --rw=write --bs=1M \
    --ioengine=io_uring --direct=1 --output-format=terse >/dev/null 2>&1
# Each engine figure sits between two fio runs of the same pattern; the peer
# figure is their mean, so drift on a shared machine hurts both alike.
echo "fio randwrite / engine randwrite (buffered, then direct) / fio randwrite..." >&2
W1=$(fio_iops randwrite)
"$BENCH" --dir "$DIR" --scenario randwrite --volume-mib "$VOL_MIB" --seconds "$SECONDS_PER" >>"$OUT"
"$BENCH" --dir "$DIR" --scenario randwrite --volume-mib "$VOL_MIB" --seconds "$SECONDS_PER" --direct >>"$OUT"
W2=$(fio_iops randwrite)
echo "fio randread / engine randread / fio randread..." >&2
R1=$(fio_iops randread)
"$BENCH" --dir "$DIR" --scenario randread --volume-mib "$VOL_MIB" --seconds "$SECONDS_PER" >>"$OUT"
"$BENCH" --dir "$DIR" --scenario randread --volume-mib "$VOL_MIB" --seconds "$SECONDS_PER" --direct >>"$OUT"
R2=$(fio_iops randread)
rm -f "$DIR/raw.img"
echo "snapshot create, diff and reopen on ${BIG_MIB} MiB written..." >&2
"$BENCH" --dir "$DIR" --scenario snapshot --volume-mib "$BIG_MIB" >>"$OUT"
"$BENCH" --dir "$DIR" --scenario diff --volume-mib "$BIG_MIB" >>"$OUT"
"$BENCH" --dir "$DIR" --scenario reopen --volume-mib "$BIG_MIB" >>"$OUT"

python3 - "$OUT" "$W1" "$W2" "$R1" "$R2" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
w = (int(sys.argv[2]) + int(sys.argv[3])) / 2
r = (int(sys.argv[4]) + int(sys.argv[5])) / 2
def get(scenario, direct=None):
    for x in rows:
        if x["scenario"] == scenario and (direct is None or x.get("direct") == direct):
            return x
def mark(ok): return "yes" if ok else "NO"
print(f"{'figure':58} {'value':>12} {'target':>10} {'met':>4}")
for direct in (False, True):
    x = get("randwrite", direct); mode = "O_DIRECT" if direct else "buffered"
    print(f"{'fio randwrite 4K QD32 direct, raw file (mean of 2) IOPS':58} {w:12.0f}")
    print(f"{'engine randwrite 4K QD32 steady, ' + mode + ' IOPS':58} {x['steady_iops']:12.0f}")
    print(f"{'  ratio to fio':58} {x['steady_iops']/w:12.3f} {'>= 0.8':>10} {mark(x['steady_iops']/w >= 0.8):>4}")
    print(f"{'engine randwrite right after a snapshot, ' + mode + ' IOPS':58} {x['after_snapshot_iops']:12.0f}")
    print(f"{'  ratio to steady':58} {x['ratio']:12.3f} {'>= 0.8':>10} {mark(x['ratio'] >= 0.8):>4}")
for direct in (False, True):
    x = get("randread", direct); mode = "O_DIRECT" if direct else "buffered"
    print(f"{'fio randread 4K QD32 direct, raw file (mean of 2) IOPS':58} {r:12.0f}")
    print(f"{'engine randread, no snapshots, ' + mode + ' IOPS':58} {x['no_snapshots_iops']:12.0f}")
    print(f"{'engine randread, 1000 snapshots, ' + mode + ' IOPS':58} {x['with_1000_snapshots_iops']:12.0f}")
    print(f"{'  ratio with/without snapshots':58} {x['ratio']:12.3f} {'>= 0.9':>10} {mark(x['ratio'] >= 0.9):>4}")
s = get("snapshot")
print(f"{'snapshot create median, 64 MiB written (ms)':58} {s['create_ms_median_64mib']:12.4f}")
print(f"{'snapshot create median, %d MiB written (ms)' % s['big_written_mib']:58} {s['create_ms_median_big']:12.4f} {'< 1':>10} {mark(s['create_ms_median_big'] < 1):>4}")
print(f"{'  ratio big/small':58} {s['create_ratio']:12.3f} {'<= 2':>10} {mark(s['create_ratio'] <= 2):>4}")
print(f"{'snapshot create + commit (durable) median, 64 MiB (ms)':58} {s['durable_ms_median_64mib']:12.3f}")
print(f"{'snapshot create + commit (durable) median, big (ms)':58} {s['durable_ms_median_big']:12.3f}")
print(f"{'  ratio big/small':58} {s['durable_ratio']:12.3f} {'<= 2':>10} {mark(s['durable_ratio'] <= 2):>4}")
d = get("diff")
print(f"{'diff of snapshots 1 block apart, %d MiB written (ms)' % d['written_mib']:58} {d['diff_ms_median']:12.4f} {'< 5':>10} {mark(d['diff_ms_median'] < 5):>4}")
o = get("reopen")
print(f"{'reopen after crash, %d MiB written, first open (ms)' % o['written_mib']:58} {o['first_open_ms']:12.3f} {'< 200':>10} {mark(o['first_open_ms'] < 200):>4}")
PY
