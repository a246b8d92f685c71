#!/usr/bin/env bash
# device_vs_fio.sh [DIR]: FileDevice (bench/device_bench) against fio, on the
# same file system and the same pre-allocated file, in one run.
#
# Workloads, each as fio (ioengine=io_uring, direct=1, iodepth=$QD, numjobs=1,
# time_based) and as device_bench (O_DIRECT, $QD requests in flight):
#   randwrite_4k, randread_4k, write_1m (sequential), read_1m (sequential).
# The two tools alternate per workload (and swap who goes first each repeat)
# so drift in a noisy machine hits both alike. The table shows medians over
# $REPEATS runs, their ratio FileDevice / fio (which the targets are judged
# on), and the median of the per-repeat ratios (each a back-to-back pair).
#
# DIR: where the test file goes (default: a temp dir under <repo>/build).
# Environment:
#   SIZE_GIB (4)  RUNTIME (10, seconds per run)  QD (32)  REPEATS (5)
#   DEVICE_BENCH  path of the device_bench binary (default: the first of
#                 build/filedev, build/release, build/* that has one)
#   KEEP_FILE=1   keep the test file (it is reused when the size matches)
#   BENCH_ARGS    extra device_bench flags (e.g. --completion_batch=0)
# Exit status: non-zero only when something failed to run; a missed target
# is reported, not an error.
set -euo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
SIZE_GIB="${SIZE_GIB:-4}"
RUNTIME="${RUNTIME:-10}"
QD="${QD:-32}"
REPEATS="${REPEATS:-5}"
BENCH_ARGS="${BENCH_ARGS:-}"

die() { echo "device_vs_fio: $*" >&2; exit 1; }

command -v fio >/dev/null || die "fio is not installed"
command -v python3 >/dev/null || die "python3 is not installed (used to parse the JSON outputs)"

BENCH="${DEVICE_BENCH:-}"
if [[ -z "$BENCH" ]]; then
  for candidate in "$REPO/build/filedev/bench/device_bench" "$REPO/build/release/bench/device_bench" \
                   "$REPO"/build/*/bench/device_bench; do
    if [[ -x "$candidate" ]]; then BENCH="$candidate"; break; fi
  done
fi
[[ -n "$BENCH" && -x "$BENCH" ]] ||
  die "device_bench not found; build it (cmake --build <build dir> --target device_bench) or set DEVICE_BENCH"

if [[ $# -ge 1 ]]; then
  DIR="$1"
  mkdir -p "$DIR" || die "cannot create $DIR"
  CLEAN_DIR=""
else
  mkdir -p "$REPO/build"
  DIR="$(mktemp -d "$REPO/build/device-vs-fio.XXXXXX")"
  CLEAN_DIR="$DIR"
fi
FILE="$DIR/device_vs_fio.dat"
OUT="$(mktemp -d "${TMPDIR:-/tmp}/device-vs-fio-out.XXXXXX")"
cleanup() {
  rm -rf "$OUT"
  if [[ "${KEEP_FILE:-0}" != 1 ]]; then
    rm -f "$FILE"
    [[ -n "$CLEAN_DIR" ]] && rmdir "$CLEAN_DIR" 2>/dev/null
  fi
  return 0
}
trap cleanup EXIT

SIZE_BYTES=$((SIZE_GIB * 1024 * 1024 * 1024))
avail_kib=$(df -Pk "$DIR" | awk 'NR==2 {print $4}')
existing=0
[[ -f "$FILE" ]] && existing=$(stat -c %s "$FILE")
if [[ "$existing" != "$SIZE_BYTES" ]] && (( avail_kib * 1024 < SIZE_BYTES + (256 << 20) )); then
  die "not enough space in $DIR for a ${SIZE_GIB} GiB file"
fi

echo "== device_vs_fio: $(date -u +%FT%TZ)"
echo "   file:    $FILE ($(df -PT "$DIR" | awk 'NR==2 {print $2 " on " $1}'), ${SIZE_GIB} GiB)"
echo "   bench:   $BENCH $BENCH_ARGS"
echo "   fio:     $(fio --version)   kernel: $(uname -r)   cpus: $(nproc)"
echo "   runs:    ${RUNTIME}s each, QD ${QD}, ${REPEATS} repeats, loadavg $(cut -d' ' -f1-3 /proc/loadavg)"

# Lay the file out fully (every block written once), so neither side measures
# allocation. Reused when it already has the right size and no holes.
allocated=0
[[ -f "$FILE" ]] && allocated=$(( $(stat -c %b "$FILE") * $(stat -c %B "$FILE") ))
if [[ "$existing" != "$SIZE_BYTES" ]] || (( allocated < SIZE_BYTES )); then
  echo "== laying out $FILE"
  rm -f "$FILE"
  fio --name=layout --filename="$FILE" --size="$SIZE_BYTES" --rw=write --bs=1M --direct=1 \
      --ioengine=io_uring --iodepth=8 --end_fsync=1 --output-format=terse >/dev/null ||
    die "fio could not lay out $FILE"
fi

# name  fio-rw  block
WORKLOADS=(
  "randwrite_4k randwrite 4k"
  "randread_4k randread 4k"
  "write_1m write 1M"
  "read_1m read 1M"
)

run_fio() {  # name rw bs out
  fio --name="$1" --filename="$FILE" --size="$SIZE_BYTES" --rw="$2" --bs="$3" \
      --ioengine=io_uring --direct=1 --iodepth="$QD" --numjobs=1 \
      --time_based --runtime="$RUNTIME" --group_reporting \
      --output-format=json --output="$4" ||
    die "fio failed for $1 (see $4)"
}

run_bench() {  # name out
  # shellcheck disable=SC2086
  "$BENCH" --file="$FILE" --size="$SIZE_BYTES" --qd="$QD" --runtime="$RUNTIME" $BENCH_ARGS \
      --benchmark_filter="^$1/" --benchmark_format=json >"$2" 2>"$2.err" ||
    die "device_bench failed for $1: $(cat "$2.err")"
}

for ((r = 1; r <= REPEATS; r++)); do
  for w in "${WORKLOADS[@]}"; do
    read -r name rw bs <<<"$w"
    printf '   repeat %d/%d  %-13s' "$r" "$REPEATS" "$name"
    if (( r % 2 == 1 )); then
      run_fio "$name" "$rw" "$bs" "$OUT/fio.$name.$r.json"
      run_bench "$name" "$OUT/dev.$name.$r.json"
    else
      run_bench "$name" "$OUT/dev.$name.$r.json"
      run_fio "$name" "$rw" "$bs" "$OUT/fio.$name.$r.json"
    fi
    python3 - "$OUT/fio.$name.$r.json" "$OUT/dev.$name.$r.json" <<'EOF'
import json, sys
def load(path):
    text = open(path).read()
    return json.loads(text[text.index('{'):])  # fio may print notes before the JSON
job = load(sys.argv[1])['jobs'][0]
fio = job['read']['iops'] + job['write']['iops']
bench = load(sys.argv[2])['benchmarks'][0]
if bench.get('error_occurred'):
    sys.exit('device_bench error: ' + bench.get('error_message', '?'))
dev = bench['IOPS']
print(f'  fio {fio:10.0f}  FileDevice {dev:10.0f}  ratio {dev / fio:5.2f}')
EOF
  done
done

echo "   loadavg at end: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 - "$OUT" "$REPEATS" <<'EOF'
import json, statistics, sys
out, repeats = sys.argv[1], int(sys.argv[2])
def load(path):
    text = open(path).read()
    return json.loads(text[text.index('{'):])
targets = {'randwrite_4k': 0.9, 'randread_4k': 0.9}
rows = []
for name in ['randwrite_4k', 'randread_4k', 'write_1m', 'read_1m']:
    fio, dev, fio_bw, dev_bw = [], [], [], []
    for r in range(1, repeats + 1):
        job = load(f'{out}/fio.{name}.{r}.json')['jobs'][0]
        fio.append(job['read']['iops'] + job['write']['iops'])
        fio_bw.append(job['read']['bw_bytes'] + job['write']['bw_bytes'])
        b = load(f'{out}/dev.{name}.{r}.json')['benchmarks'][0]
        dev.append(b['IOPS'])
        dev_bw.append(b['bytes_per_second'])
    rows.append((name, statistics.median(fio), statistics.median(dev),
                 statistics.median(fio_bw), statistics.median(dev_bw), fio, dev))
print()
print(f"{'workload':<14}{'fio IOPS':>12}{'FileDevice IOPS':>17}{'ratio':>8}{'paired':>8}"
      f"{'fio MiB/s':>11}{'FD MiB/s':>10}   target")
met_all = True
for name, f, d, fbw, dbw, fio, dev in rows:
    ratio = d / f
    if name in targets:
        ok = ratio >= targets[name]
        met_all &= ok
        target = f">= {targets[name]:.1f}x: {'met' if ok else 'NOT met'}"
    else:
        target = '-'
    paired = statistics.median(b / a for a, b in zip(fio, dev))
    print(f'{name:<14}{f:>12.0f}{d:>17.0f}{ratio:>8.2f}{paired:>8.2f}'
          f'{fbw / 2**20:>11.0f}{dbw / 2**20:>10.0f}   {target}')
print()
print('(ratio = median FileDevice / median fio over %d runs; paired = median of per-repeat ratios)'
      % repeats)
print('(per-repeat ratios: %s)' % ('; '.join(
    f"{name} " + ' '.join(f'{d / f:.2f}' for f, d in zip(fio, dev)) for name, _, _, _, _, fio, dev in rows)))
print('targets (FileDevice >= 0.9x fio on 4 KiB random write and read): ' +
      ('all met' if met_all else 'NOT all met'))
EOF
