#!/usr/bin/env bash
# The backup issue's figures in one run, on one file system, on the same data:
#  1. a physical full backup (BackupJob, defaults: 1 MiB chunks, zstd -1, 2
#     workers, 4 reads in flight) into a fresh directory store, against its two
#     limits: reading the volume through the Volume API (unlimited profile,
#     1 MiB reads, pool file buffered) and `zstd -T0 -1` on a raw image of the
#     same bytes. Target: backup >= 0.8x the slower of the two.
#  2. a snapshot backup after 1% of the blocks changed reads only those blocks.
#  3. (QOS=1) a physical full of a PL1 volume held to the profile's limit,
#     with QOS_WORKERS (8, so that the limit is what binds; "2 8": both).
# Diagnosis rows (not targets): one full with DIAG_WORKERS (8; empty: skip)
# worker threads, and (COMPONENTS=1) the per-chunk steps one at a time.
#
#   bench/backup_vs_zstd.sh [DIR]
#   VOL_MIB=2048 REPEATS=3 QOS=1 QOS_PROFILES="PL1 PL2" BUILD=build/bench-backup \
#     bench/backup_vs_zstd.sh /tmp/b
#
# Page cache: the pool file and the raw image are read once before the first
# repeat (and stay cached: RAM >> 2x VOL_MIB), so reads and zstd measure CPU
# and the I/O stack, not the disk. The backup's store is on DIR's file system
# and its puts are durable (fdatasync), so the backup's figure includes writing
# the compressed data to the disk; the peers write nothing.
#
# Needs ~5x VOL_MIB of free space in DIR (stores are kept until the end).
# Exits non-zero only if something fails to run; PASS/MISS is printed. The raw
# key=value lines are kept in DIR/backup_vs_zstd.out.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
DIR=${1:-$BUILD/bench-backup-data}
VOL_MIB=${VOL_MIB:-2048}
REPEATS=${REPEATS:-3}
QOS=${QOS:-1}
QOS_PROFILES=${QOS_PROFILES:-PL1}
QOS_MIB=${QOS_MIB:-512}
QOS_WORKERS=${QOS_WORKERS:-8}
COMPONENTS=${COMPONENTS:-1}
DIAG_WORKERS=${DIAG_WORKERS-8}
BENCH=$BUILD/bench/backup_bench
[ -x "$BENCH" ] || { echo "build first: cmake --build $BUILD --target backup_bench" >&2; exit 1; }
command -v zstd >/dev/null || { echo "zstd is missing: apt-get install zstd" >&2; exit 1; }
mkdir -p "$DIR"
OUT=$(mktemp)
trap 'rm -rf "$OUT" "$DIR"/raw.img "$DIR"/*.pool "$DIR"/*.pool.lock "$DIR"/store.*' EXIT

rm -rf "$DIR"/store.*  # a stopped run's, removed before anything is timed
load() { cut -d' ' -f1-3 /proc/loadavg; }
echo "load_start=$(load | tr ' ' ,) nproc=$(nproc)" >>"$OUT"

echo "preparing a ${VOL_MIB} MiB volume and its raw image..." >&2
"$BENCH" --scenario prepare --dir "$DIR" --volume-mib "$VOL_MIB" --raw "$DIR/raw.img" >>"$OUT"
cat "$DIR/backup.pool" "$DIR/raw.img" >/dev/null  # warm the page cache for both

zstd_run() {  # one zstd -T0 -1 pass over the raw image to /dev/null
  local t0 t1
  t0=$(date +%s.%N)
  zstd -q -T0 -1 -c "$DIR/raw.img" >/dev/null
  t1=$(date +%s.%N)
  python3 -c "import sys; b=$VOL_MIB*2**20; s=$t1-$t0; print(f'scenario=zstd bytes={b} seconds={s:.3f} mbps={b/s/1e6:.1f}')"
}
zstd_size() { zstd -q -T0 -1 -c "$DIR/raw.img" | wc -c; }
echo "zstd_bytes=$(zstd_size)" >>"$OUT"  # also a warm-up of zstd

for ((r = 1; r <= REPEATS; r++)); do
  echo "repeat $r/$REPEATS..." >&2
  echo "repeat=$r load=$(load | tr ' ' ,)" >>"$OUT"
  # Alternate the order so drift on a shared machine hurts each alike.
  if ((r % 2)); then order="read zstd full"; else order="full zstd read"; fi
  for what in $order; do
    case $what in
      read) "$BENCH" --scenario read --dir "$DIR" >>"$OUT" ;;
      zstd) zstd_run >>"$OUT" ;;
      full)
        # Stores are removed only at the end: creating files right after
        # deleting thousands costs ext4 (recently_deleted() scans in inode
        # allocation: ~20% of the backup's CPU in a profile) and would bias
        # whichever run follows a removal.
        "$BENCH" --scenario full --dir "$DIR" --store "$DIR/store.$r" >>"$OUT"
        ;;
    esac
  done
done

if [ -n "$DIAG_WORKERS" ]; then
  echo "diagnosis: one full backup with $DIAG_WORKERS worker threads..." >&2
  "$BENCH" --scenario full --dir "$DIR" --store "$DIR/store.diag" --workers "$DIAG_WORKERS" \
    | sed 's/scenario=full/scenario=full_diag/' >>"$OUT"
fi
if [ "$COMPONENTS" = 1 ]; then
  echo "per-chunk steps, one thread each..." >&2
  "$BENCH" --scenario components --dir "$DIR" --store "$DIR/store.components" >>"$OUT"
fi
echo "snapshot backup, 1% of the blocks changed, snapshot backup..." >&2
"$BENCH" --scenario changed --dir "$DIR" --store "$DIR/store.changed" --change-pct 1 >>"$OUT"
if [ "$QOS" = 1 ]; then
  for p in $QOS_PROFILES; do
    # 8 workers by default: with the default 2 the backup alone runs below
    # PL1's limit on this kind of machine, and the limit would hold nothing.
    for w in $QOS_WORKERS; do
      echo "physical full of a $p volume (${QOS_MIB} MiB written), $w workers..." >&2
      "$BENCH" --scenario qos --dir "$DIR" --store "$DIR/store.qos.$p.$w" --profile "$p" \
        --qos-mib "$QOS_MIB" --workers "$w" >>"$OUT"
    done
  done
fi
echo "load_end=$(load | tr ' ' ,)" >>"$OUT"
cp "$OUT" "$DIR/backup_vs_zstd.out"  # the raw key=value lines, kept

python3 - "$OUT" <<'PY'
import statistics, sys
rows = []
for line in open(sys.argv[1]):
    kv = dict(f.split("=", 1) for f in line.split())
    if kv: rows.append(kv)
def all_of(s): return [r for r in rows if r.get("scenario") == s]
def first(key): return next(r[key] for r in rows if key in r)
def med(s, k): return statistics.median(float(r[k]) for r in all_of(s))
def mark(ok): return "PASS" if ok else "MISS"
def runs(s, k): return " ".join(f"{float(r[k]):.0f}" for r in all_of(s))
prep = all_of("prepare")[0]
vol = int(prep["volume_bytes"])
print(f"load average (1,5,15 min): start {first('load_start')}, end {first('load_end')}; "
      f"{first('nproc')} cores; per repeat: " + " ".join(r["load"] for r in rows if "load" in r))
print(f"volume {vol >> 20} MiB, page cache warm for pool and raw image; "
      f"zstd -1 ratio {vol / int(first('zstd_bytes')):.2f}x, "
      f"backup store ratio {med('full', 'compression'):.2f}x")
print(f"{'figure (median of %d, MB/s = 10^6 B/s)' % len(all_of('full')):58} {'value':>10} {'target':>8} {'met':>5}   runs")
rd, zs, fb = med("read", "mbps"), med("zstd", "mbps"), med("full", "mbps")
print(f"{'(a) volume read, 1 MiB x %s in flight, unlimited (MB/s)' % all_of('read')[0]['depth']:58} {rd:10.1f} {'':>8} {'':>5}   {runs('read', 'mbps')}")
print(f"{'(b) zstd -T0 -1 on the raw image (MB/s)':58} {zs:10.1f} {'':>8} {'':>5}   {runs('zstd', 'mbps')}")
print(f"{'(c) physical full backup into a dir store (MB/s)':58} {fb:10.1f} {'':>8} {'':>5}   {runs('full', 'mbps')}")
lim = min(rd, zs)
print(f"{'    backup / min(a, b)':58} {fb / lim:10.3f} {'>= 0.8':>8} {mark(fb / lim >= 0.8):>5}")
print(f"{'    backup / (a),  backup / (b)':58} {fb / rd:10.3f} {fb / zs:8.3f}")
for d in all_of("full_diag"):
    print(f"{'    diagnosis: the same with %s worker threads (1 run, MB/s)' % d['workers']:58} {float(d['mbps']):10.1f} {float(d['mbps']) / lim:8.3f}")
c = next(iter(all_of("components")), None)
if c:
    print(f"{'per-chunk steps, 1 thread: XXH3-128 / zstd -1 (MB/s)':58} {float(c['hash_mbps']):10.1f} {float(c['zstd_mbps']):8.1f}")
    print(f"{'store puts from %s threads, raw MB/s (ms per put)' % c['put_threads']:58} {float(c['put_mbps_raw']):10.1f} {float(c['put_ms_per_chunk']):8.2f}")
ch = all_of("changed")[0]
changed, read2 = int(ch["changed_bytes"]), int(ch["second_read_bytes"])
print(f"{'snapshot backup 1: bytes read / seconds':58} {int(ch['first_read_bytes']):10d} {float(ch['first_seconds']):8.2f}")
print(f"{'    chunk objects put by backup 1, by backup 2':58} {int(ch['first_new_chunks']):10d} {int(ch['second_new_chunks']):8d}")
print(f"{'snapshot backup 2 after %s blocks (1%%) changed: bytes read' % ch['changed_blocks']:58} {read2:10d} {'= ' + str(changed):>8} {mark(read2 == changed):>5}")
print(f"{'    bytes read / volume':58} {read2 / vol:10.4%}")
print(f"{'    seconds, and ratio to backup 1':58} {float(ch['second_seconds']):10.3f} {float(ch['time_ratio']):8.4f}")
for q in all_of("qos"):
    print(f"{'physical full, %s %s GiB, %s MiB written, %s workers (MB/s)' % (q['profile'], q['capacity_gib'], int(q['written_bytes']) >> 20, q['workers']):58} {float(q['mbps']):10.1f} {'<= ' + q['limit_mbps']:>8}")
    print(f"{'    ratio to the profile limit %s MB/s' % q['limit_mbps']:58} {float(q['ratio']):10.3f} {'<= 1.0':>8} {mark(float(q['ratio']) <= 1.02):>5}")
PY
