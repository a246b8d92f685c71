// backup_bench: the backup issue's scenario benchmarks, each printing
// `key=value` lines (one scenario's figures per line, prefixed by
// "scenario=NAME") so bench/backup_vs_zstd.sh can put them next to zstd's
// figure from the same run.
//
//   backup_bench --scenario NAME --dir DIR [options]
//
// Scenarios (pool file DIR/backup.pool, volume "v", buffered device — the
// default — unless said otherwise):
//   prepare    creates the pool with a --volume-mib MiB unlimited volume and
//              writes all of it with realistically compressible data (random
//              blocks, SQL-insert-like records, log lines; deterministic from
//              --seed, no two chunks alike so dedup cannot help); then, with
//              --raw FILE, exports the volume's bytes to FILE (read back
//              through the Volume API) for the zstd peer.
//   read       reads the whole volume through the Volume API, 1 MiB reads,
//              --depth in flight: the read limit of a backup.
//   full       a physical full backup (BackupJob, BackupOptions defaults) of
//              the volume into a fresh directory store --store (created with
//              the default config: 1 MiB chunks, zstd level 1); timed from
//              Start to Run's return. Deletes the job's snapshot afterwards
//              (untimed) so repeats see the same pool. --workers and --reads
//              override BackupOptions::worker_threads / max_reads_in_flight
//              (for diagnosis; the target is judged on the defaults).
//   changed    snapshot backup, then --change-pct % of the volume's blocks
//              rewritten (distinct random blocks, 4 KiB writes), then a second
//              snapshot backup, into the fresh store --store: bytes read and
//              time of both. Changes the pool (run it last).
//   qos        a thin volume of --profile (PL1/PL2, smallest capacity of the
//              level) in DIR/qos.pool with --qos-mib MiB written, then a full
//              backup into --store: its rate against the profile's limit
//              (--workers / --reads as for full).
//   components single-thread rates of the backup's per-chunk steps on the
//              volume's first --sample-mib MiB: XXH3-128 (ChunkHash), zstd
//              (EncodeChunkInto at the store's level), and puts of the encoded
//              chunks into a fresh store --store from --threads threads.
// Google Benchmark is not used: whole scenarios with costly setup, timed with
// the monotonic clock.
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <thread>
#include <unordered_set>
#include <vector>

#include "disk/clock.h"
#include "disk/essd_profile.h"
#include "engine/aligned_buffer.h"
#include "engine/pool_file.h"
#include "engine/volume.h"
#include "engine/worm_store.h"
#include "snapshot/backup.h"
#include "snapshot/backup_set.h"

namespace snapdisk {
namespace {

constexpr uint64_t kMiB = 1 << 20;
constexpr uint64_t kBlock = 4096;

struct Args {
  std::string scenario;
  std::string dir = ".";
  std::string store;
  std::string raw;
  uint64_t volume_mib = 2048;
  uint64_t seed = 1;
  uint32_t depth = BackupOptions{}.max_reads_in_flight;
  double change_pct = 1.0;
  std::string profile = "PL1";
  uint64_t qos_mib = 512;
  uint64_t sample_mib = 256;
  uint32_t threads = BackupOptions{}.worker_threads;
  // BackupOptions of the full scenario (defaults: BackupOptions's).
  uint32_t workers = BackupOptions{}.worker_threads;
  uint32_t reads = BackupOptions{}.max_reads_in_flight;
};

[[noreturn]] void Die(const std::string& what, const Status& s) {
  std::fprintf(stderr, "backup_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

double NowSeconds() { return SystemClock::Get().NowNs() / 1e9; }

std::string PoolPath(const Args& args, const char* name = "backup.pool") {
  return args.dir + "/" + name;
}

// ---- Data ------------------------------------------------------------------------

uint64_t SplitMix(uint64_t& x) {
  uint64_t z = (x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

// Writes `v` as exactly `width` decimal digits (zero-padded, truncated high).
char* PutDigits(char* p, uint64_t v, int width) {
  for (int i = width - 1; i >= 0; --i) {
    p[i] = static_cast<char>('0' + v % 10);
    v /= 10;
  }
  return p + width;
}

char* PutText(char* p, const char* s) {
  const size_t n = std::strlen(s);
  std::memcpy(p, s, n);
  return p + n;
}

constexpr const char* kNames[] = {
    "alice",   "bob",  "carol",  "dave",  "erin",   "frank", "grace", "heidi",  "ivan",   "judy",
    "mallory", "niaj", "olivia", "peggy", "rupert", "sybil", "trent", "victor", "walter", "yvonne"};
constexpr const char* kStatus[] = {"ACTIVE", "PENDING", "SHIPPED", "CANCELLED", "RETURNED"};
constexpr const char* kLevels[] = {"INFO ", "INFO ", "INFO ", "DEBUG", "WARN ", "ERROR"};
constexpr const char* kPaths[] = {"/api/v1/items", "/api/v1/orders", "/api/v2/users",
                                  "/healthz",      "/api/v1/cart",   "/static/app.js"};

// One 4 KiB block of the volume at block number `b`, deterministic from
// `seed`: ~30% random bytes, ~45% 128-byte SQL insert records, ~25% log lines.
// Every block carries its own number, so no two 1 MiB chunks are equal.
void GenerateBlock(uint64_t seed, uint64_t b, std::byte* out) {
  uint64_t s = seed * 0x100000001b3ull ^ (b * 0x9e3779b97f4a7c15ull);
  const uint64_t kind = SplitMix(s) % 100;
  char* p = reinterpret_cast<char*>(out);
  char* const end = p + kBlock;
  if (kind < 30) {
    auto* w = reinterpret_cast<uint64_t*>(out);
    for (size_t i = 0; i < kBlock / 8; ++i) w[i] = SplitMix(s);
    return;
  }
  if (kind < 75) {
    // 32 fixed-width records of 128 bytes.
    for (int r = 0; r < 32; ++r) {
      const uint64_t x = SplitMix(s);
      char* q = p + r * 128;
      char* const rec_end = q + 127;
      q = PutText(q, "INSERT INTO orders VALUES(");
      q = PutDigits(q, b * 32 + r, 10);
      q = PutText(q, ",'cust");
      q = PutDigits(q, x % 100000, 6);
      q = PutText(q, "','");
      q = PutText(q, kNames[(x >> 20) % 20]);
      q = PutText(q, "',");
      q = PutDigits(q, (x >> 25) % 100000, 5);
      *q++ = '.';
      q = PutDigits(q, (x >> 42) % 100, 2);
      q = PutText(q, ",'2024-");
      q = PutDigits(q, 1 + (x >> 49) % 12, 2);
      *q++ = '-';
      q = PutDigits(q, 1 + (x >> 53) % 28, 2);
      q = PutText(q, "','");
      q = PutText(q, kStatus[(x >> 58) % 5]);
      q = PutText(q, "');");
      while (q < rec_end) *q++ = ' ';
      *q = '\n';
    }
    return;
  }
  // Log lines until the block is full.
  uint64_t t = b * 977;
  while (p < end) {
    char line[160];
    char* q = line;
    const uint64_t x = SplitMix(s);
    t += x % 50;
    q = PutText(q, "2024-05-17T");
    q = PutDigits(q, (t / 3600000) % 24, 2);
    *q++ = ':';
    q = PutDigits(q, (t / 60000) % 60, 2);
    *q++ = ':';
    q = PutDigits(q, (t / 1000) % 60, 2);
    *q++ = '.';
    q = PutDigits(q, t % 1000, 3);
    q = PutText(q, "Z ");
    q = PutText(q, kLevels[x % 6]);
    q = PutText(q, " [worker-");
    q = PutDigits(q, (x >> 8) % 8, 1);
    q = PutText(q, "] request done path=");
    q = PutText(q, kPaths[(x >> 12) % 6]);
    *q++ = '/';
    q = PutDigits(q, (x >> 16) % 10000, 4);
    q = PutText(q, " status=");
    q = PutText(q, (x >> 30) % 10 == 0 ? "404" : "200");
    q = PutText(q, " ms=");
    q = PutDigits(q, (x >> 34) % 1000, 3);
    *q++ = '\n';
    const size_t n = std::min<size_t>(q - line, end - p);
    std::memcpy(p, line, n);
    p += n;
  }
}

// ---- Pool helpers ----------------------------------------------------------------

std::unique_ptr<PoolFile> CreatePool(const std::string& path, uint64_t size_bytes) {
  std::filesystem::remove(path);
  std::filesystem::remove(PoolFile::LockPath(path));
  auto pf = PoolFile::Create(path, size_bytes);
  if (!pf.ok()) Die("create pool " + path, pf.status());
  return std::move(pf).value();
}

std::unique_ptr<PoolFile> OpenPool(const std::string& path) {
  auto pf = PoolFile::Open(path);
  if (!pf.ok()) Die("open pool " + path, pf.status());
  return std::move(pf).value();
}

// Sequential 1 MiB requests over [0, bytes) of `v`, `depth` in flight. For
// writes, `fill(offset, buffer, length)` makes the data before each submit;
// for reads, `sink(offset, buffer, length)` sees the data on completion.
void Sequential(Pool& pool, Volume& v, VolumeOp op, uint64_t bytes, uint32_t depth,
                const std::function<void(uint64_t, std::byte*, uint64_t)>& fill,
                const std::function<void(uint64_t, const std::byte*, uint64_t)>& sink) {
  std::vector<AlignedBuffer> buffers;
  for (uint32_t i = 0; i < depth; ++i) buffers.emplace_back(kMiB);
  std::vector<VolumeRequest> reqs(depth);
  uint64_t next = 0;
  Status failure;
  std::function<void(uint32_t)> submit = [&](uint32_t i) {
    if (next >= bytes || !failure.ok()) return;
    const uint64_t len = std::min(kMiB, bytes - next);
    if (fill) fill(next, buffers[i].data(), len);
    reqs[i] = VolumeRequest{
        .op = op, .offset_bytes = next, .length_bytes = len, .data = buffers[i].data()};
    next += len;
    reqs[i].on_complete = [&, i](VolumeRequest& r, const Status& s) {
      if (!s.ok()) failure = s;
      if (s.ok() && sink) sink(r.offset_bytes, r.data, r.length_bytes);
      submit(i);
    };
    Status s = v.Submit(reqs[i]);
    if (!s.ok()) Die("submit", s);
  };
  for (uint32_t i = 0; i < depth; ++i) submit(i);
  while (pool.in_flight() > 0) pool.Poll(1);
  if (!failure.ok()) Die(op == VolumeOp::kRead ? "read" : "write", failure);
}

void FillVolume(Pool& pool, Volume& v, uint64_t bytes, uint64_t seed) {
  Sequential(pool, v, VolumeOp::kWrite, bytes, 8,
             [seed](uint64_t off, std::byte* buf, uint64_t len) {
               for (uint64_t o = 0; o < len; o += kBlock)
                 GenerateBlock(seed, (off + o) / kBlock, buf + o);
             },
             {});
  if (Status s = v.Flush(); !s.ok()) Die("flush", s);
}

// Deletes every "backup-*" snapshot of `volume` and commits.
void DeleteBackupSnapshots(Pool& pool, const std::string& volume) {
  auto snaps = pool.ListSnapshots(volume);
  if (!snaps.ok()) Die("list snapshots", snaps.status());
  for (const SnapshotInfo& s : *snaps) {
    if (s.name.rfind("backup-", 0) == 0) {
      if (Status st = pool.DeleteSnapshot(volume, s.name); !st.ok()) Die("delete snapshot", st);
    }
  }
  if (Status st = pool.Commit(); !st.ok()) Die("commit", st);
}

std::unique_ptr<WormStore> FreshStore(const std::string& dir) {
  if (dir.empty()) Die("--store", Status::InvalidArgument("is required"));
  std::error_code ec;
  std::filesystem::remove_all(dir, ec);
  if (Status s = CreateDirStore(dir); !s.ok()) Die("create store " + dir, s);
  auto store = OpenDirStore(dir);
  if (!store.ok()) Die("open store " + dir, store.status());
  return std::move(store).value();
}

struct BackupRun {
  double seconds = 0;
  BackupProgress progress;
  uint64_t new_chunks = 0;  // chunk objects the set put (one store put each)
};

BackupRun RunBackup(Pool& pool, WormStore& store, const std::string& volume, BackupMethod method,
                    const Args* tuning = nullptr) {
  BackupOptions options;
  options.method = method;
  if (tuning != nullptr) {
    options.worker_threads = tuning->workers;
    options.max_reads_in_flight = tuning->reads;
  }
  const double t0 = NowSeconds();
  auto job = BackupJob::Start(pool, store, volume, options);
  if (!job.ok()) Die("backup start", job.status());
  Result<BackupSet> set = (*job)->Run();
  BackupRun run;
  run.seconds = NowSeconds() - t0;
  if (!set.ok()) Die("backup", set.status());
  run.progress = (*job)->progress();
  for (const ChunkInfo& c : set->chunks) run.new_chunks += c.new_in_set ? 1 : 0;
  return run;
}

double Mbps(uint64_t bytes, double seconds) { return bytes / seconds / 1e6; }

// ---- Scenarios -------------------------------------------------------------------

void ScenarioPrepare(const Args& args) {
  const uint64_t size = args.volume_mib * kMiB;
  const double t0 = NowSeconds();
  auto pf = CreatePool(PoolPath(args), size + size / 4 + 256 * kMiB);
  Pool& pool = pf->pool();
  if (auto r = pool.CreateVolume("v", size); !r.ok()) Die("create volume", r.status());
  Volume& v = **pool.OpenVolume("v");
  FillVolume(pool, v, size, args.seed);
  const double t1 = NowSeconds();
  double export_s = 0;
  if (!args.raw.empty()) {
    // The raw image is the volume's bytes as the Volume API returns them.
    std::FILE* f = std::fopen(args.raw.c_str(), "wb");
    if (f == nullptr) Die("open " + args.raw, Status::FromErrno(errno, args.raw));
    Sequential(
        pool, v, VolumeOp::kRead, size, 4, {},
        [&](uint64_t off, const std::byte* buf, uint64_t len) {
          if (::pwrite(fileno(f), buf, len, static_cast<off_t>(off)) != static_cast<ssize_t>(len)) {
            Die("write " + args.raw, Status::FromErrno(errno, args.raw));
          }
        });
    // Durable before the measurements start, so its writeback competes with
    // none of them.
    if (::fdatasync(fileno(f)) != 0)
      Die("fdatasync " + args.raw, Status::FromErrno(errno, args.raw));
    std::fclose(f);
    export_s = NowSeconds() - t1;
  }
  std::printf("scenario=prepare volume_bytes=%llu fill_s=%.2f export_s=%.2f\n",
              static_cast<unsigned long long>(size), t1 - t0, export_s);
}

void ScenarioRead(const Args& args) {
  auto pf = OpenPool(PoolPath(args));
  Pool& pool = pf->pool();
  Volume& v = **pool.OpenVolume("v");
  const uint64_t size = v.size_bytes();
  const double t0 = NowSeconds();
  Sequential(pool, v, VolumeOp::kRead, size, args.depth, {}, {});
  const double s = NowSeconds() - t0;
  std::printf("scenario=read bytes=%llu depth=%u seconds=%.3f mbps=%.1f\n",
              static_cast<unsigned long long>(size), args.depth, s, Mbps(size, s));
}

void ScenarioFull(const Args& args) {
  auto pf = OpenPool(PoolPath(args));
  Pool& pool = pf->pool();
  DeleteBackupSnapshots(pool, "v");  // a previous run's, if any
  auto store = FreshStore(args.store);
  const BackupRun run = RunBackup(pool, *store, "v", BackupMethod::kFull, &args);
  const BackupProgress& p = run.progress;
  std::printf(
      "scenario=full workers=%u reads=%u total_bytes=%llu read_bytes=%llu stored_bytes=%llu "
      "seconds=%.3f "
      "mbps=%.1f job_mbps=%.1f compression=%.3f\n",
      args.workers, args.reads, static_cast<unsigned long long>(p.total_bytes),
      static_cast<unsigned long long>(p.read_bytes),
      static_cast<unsigned long long>(p.stored_bytes), run.seconds,
      Mbps(p.total_bytes, run.seconds), p.rate_bytes_per_s / 1e6,
      static_cast<double>(p.total_bytes) / std::max<uint64_t>(p.stored_bytes, 1));
  store.reset();
  DeleteBackupSnapshots(pool, "v");
}

void ScenarioChanged(const Args& args) {
  auto pf = OpenPool(PoolPath(args));
  Pool& pool = pf->pool();
  DeleteBackupSnapshots(pool, "v");
  auto store = FreshStore(args.store);
  Volume& v = **pool.OpenVolume("v");
  const uint64_t blocks = v.size_bytes() / kBlock;
  const BackupRun first = RunBackup(pool, *store, "v", BackupMethod::kSnapshot);

  // Distinct random blocks (Floyd's sampling), rewritten with fresh data.
  const uint64_t n = static_cast<uint64_t>(blocks * args.change_pct / 100.0);
  std::mt19937_64 rng(args.seed + 1000);
  std::unordered_set<uint64_t> chosen;
  for (uint64_t j = blocks - n; j < blocks; ++j) {
    const uint64_t t = rng() % (j + 1);
    if (!chosen.insert(t).second) chosen.insert(j);
  }
  std::vector<uint64_t> order(chosen.begin(), chosen.end());
  std::sort(order.begin(), order.end());
  std::shuffle(order.begin(), order.end(), rng);
  AlignedBuffer block(kBlock);
  const double tw = NowSeconds();
  for (uint64_t b : order) {
    GenerateBlock(args.seed + 7, b, block.data());
    if (Status s = v.Write(b * kBlock, block.span()); !s.ok()) Die("write", s);
  }
  if (Status s = v.Flush(); !s.ok()) Die("flush", s);
  const double write_s = NowSeconds() - tw;

  const BackupRun second = RunBackup(pool, *store, "v", BackupMethod::kSnapshot);
  const uint64_t changed = n * kBlock;
  std::printf(
      "scenario=changed volume_bytes=%llu changed_blocks=%llu changed_bytes=%llu "
      "write_s=%.3f first_read_bytes=%llu first_seconds=%.3f second_total_bytes=%llu "
      "second_read_bytes=%llu second_stored_bytes=%llu second_new_chunks=%llu "
      "first_new_chunks=%llu second_seconds=%.3f "
      "read_equals_changed=%d time_ratio=%.4f\n",
      static_cast<unsigned long long>(v.size_bytes()), static_cast<unsigned long long>(n),
      static_cast<unsigned long long>(changed), write_s,
      static_cast<unsigned long long>(first.progress.read_bytes), first.seconds,
      static_cast<unsigned long long>(second.progress.total_bytes),
      static_cast<unsigned long long>(second.progress.read_bytes),
      static_cast<unsigned long long>(second.progress.stored_bytes),
      static_cast<unsigned long long>(second.new_chunks),
      static_cast<unsigned long long>(first.new_chunks), second.seconds,
      second.progress.read_bytes == changed ? 1 : 0, second.seconds / first.seconds);
}

void ScenarioQos(const Args& args) {
  auto level = ParseEssdLevel(args.profile);
  if (!level.ok()) Die("--profile", level.status());
  // The level's smallest capacity; for "unlimited" (a baseline), the data.
  const uint64_t capacity = *level == EssdLevel::kUnlimited
                                ? args.qos_mib * kMiB
                                : EssdCapacityRangeGib(*level).min_gib * kBytesPerGiB;
  auto profile = EssdProfile::For(*level, capacity);
  if (!profile.ok()) Die("profile", profile.status());
  const uint64_t written = args.qos_mib * kMiB;
  // A thin volume may not be larger than its pool: the pool file is sparse.
  auto pf = CreatePool(PoolPath(args, "qos.pool"), capacity / 32 * 33 + written + 256 * kMiB);
  Pool& pool = pf->pool();
  if (auto r = pool.CreateVolume("q", capacity, *level); !r.ok()) Die("create volume", r.status());
  Volume& v = **pool.OpenVolume("q");
  const double t0 = NowSeconds();
  FillVolume(pool, v, written, args.seed);
  const double fill_s = NowSeconds() - t0;
  auto store = FreshStore(args.store);
  const BackupRun run = RunBackup(pool, *store, "q", BackupMethod::kFull, &args);
  const double limit = profile->throughput_bytes_per_s / 1e6;
  const double rate = Mbps(run.progress.total_bytes, run.seconds);
  std::printf(
      "scenario=qos workers=%u profile=%s capacity_gib=%llu limit_mbps=%.1f limit_iops=%llu "
      "written_bytes=%llu fill_mbps=%.1f total_bytes=%llu seconds=%.3f mbps=%.1f ratio=%.3f\n",
      args.workers, EssdLevelName(*level), static_cast<unsigned long long>(capacity / kBytesPerGiB),
      limit, static_cast<unsigned long long>(profile->iops_max),
      static_cast<unsigned long long>(written), Mbps(written, fill_s),
      static_cast<unsigned long long>(run.progress.total_bytes), run.seconds, rate, rate / limit);
  store.reset();
  pf.reset();
  std::filesystem::remove(PoolPath(args, "qos.pool"));
  std::filesystem::remove(PoolFile::LockPath(PoolPath(args, "qos.pool")));
}

void ScenarioComponents(const Args& args) {
  // The sample, read through the volume (the bytes the backup sees).
  std::vector<std::vector<std::byte>> chunks;
  uint64_t sample = 0;
  {
    auto pf = OpenPool(PoolPath(args));
    Pool& pool = pf->pool();
    Volume& v = **pool.OpenVolume("v");
    sample = std::min(args.sample_mib * kMiB, v.size_bytes());
    Sequential(
        pool, v, VolumeOp::kRead, sample, 4, {},
        [&](uint64_t, const std::byte* buf, uint64_t len) { chunks.emplace_back(buf, buf + len); });
  }
  const int level = WormStoreConfig{}.zstd_level;
  double t0 = NowSeconds();
  std::vector<std::string> hashes;
  for (const auto& c : chunks) hashes.push_back(ChunkHash(c));
  const double hash_s = NowSeconds() - t0;
  std::vector<std::vector<std::byte>> encoded(chunks.size());
  t0 = NowSeconds();
  for (size_t i = 0; i < chunks.size(); ++i) EncodeChunkInto(chunks[i], level, encoded[i]);
  const double zstd_s = NowSeconds() - t0;
  uint64_t encoded_bytes = 0;
  for (const auto& e : encoded) encoded_bytes += e.size();

  auto store = FreshStore(args.store);
  const int64_t until = store->NowUnixNs() + int64_t{8} * 86'400 * 1'000'000'000;
  std::atomic<size_t> next{0};
  t0 = NowSeconds();
  std::vector<std::thread> threads;
  for (uint32_t t = 0; t < args.threads; ++t) {
    threads.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < encoded.size();) {
        if (Status s = store->Put(ChunkKey(hashes[i]), encoded[i], until); !s.ok()) {
          Die("put", s);
        }
      }
    });
  }
  for (auto& t : threads) t.join();
  const double put_s = NowSeconds() - t0;
  std::printf(
      "scenario=components sample_bytes=%llu chunks=%zu hash_mbps=%.1f zstd_mbps=%.1f "
      "compression=%.3f put_threads=%u put_mbps_raw=%.1f put_mbps_stored=%.1f "
      "put_ms_per_chunk=%.3f\n",
      static_cast<unsigned long long>(sample), chunks.size(), Mbps(sample, hash_s),
      Mbps(sample, zstd_s), static_cast<double>(sample) / encoded_bytes, args.threads,
      Mbps(sample, put_s), Mbps(encoded_bytes, put_s), put_s * 1e3 / chunks.size() * args.threads);
}

}  // namespace
}  // namespace snapdisk

int main(int argc, char** argv) {
  snapdisk::Args args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "backup_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--scenario")
      args.scenario = value();
    else if (a == "--dir")
      args.dir = value();
    else if (a == "--store")
      args.store = value();
    else if (a == "--raw")
      args.raw = value();
    else if (a == "--volume-mib")
      args.volume_mib = std::stoull(value());
    else if (a == "--seed")
      args.seed = std::stoull(value());
    else if (a == "--depth")
      args.depth = static_cast<uint32_t>(std::stoul(value()));
    else if (a == "--change-pct")
      args.change_pct = std::stod(value());
    else if (a == "--profile")
      args.profile = value();
    else if (a == "--qos-mib")
      args.qos_mib = std::stoull(value());
    else if (a == "--sample-mib")
      args.sample_mib = std::stoull(value());
    else if (a == "--threads")
      args.threads = static_cast<uint32_t>(std::stoul(value()));
    else if (a == "--workers")
      args.workers = static_cast<uint32_t>(std::stoul(value()));
    else if (a == "--reads")
      args.reads = static_cast<uint32_t>(std::stoul(value()));
    else {
      std::fprintf(stderr,
                   "usage: backup_bench --scenario prepare|read|full|changed|qos|components "
                   "--dir DIR [--store DIR] [--raw FILE] [--volume-mib N] [--seed N] "
                   "[--depth N] [--change-pct P] [--profile PL1|PL2] [--qos-mib N] "
                   "[--sample-mib N] [--threads N] [--workers N] [--reads N]\n");
      return 2;
    }
  }
  if (args.depth < 1) args.depth = 1;
  if (args.threads < 1) args.threads = 1;
  if (args.scenario == "prepare")
    snapdisk::ScenarioPrepare(args);
  else if (args.scenario == "read")
    snapdisk::ScenarioRead(args);
  else if (args.scenario == "full")
    snapdisk::ScenarioFull(args);
  else if (args.scenario == "changed")
    snapdisk::ScenarioChanged(args);
  else if (args.scenario == "qos")
    snapdisk::ScenarioQos(args);
  else if (args.scenario == "components")
    snapdisk::ScenarioComponents(args);
  else {
    std::fprintf(stderr, "backup_bench: unknown scenario '%s'\n", args.scenario.c_str());
    return 2;
  }
  return 0;
}
