// engine_bench: the engine's scenario benchmarks (issue "The engine"), each
// printing one JSON object per line so bench/engine_vs_fio.sh can put them
// next to fio's figures from the same run.
//
//   engine_bench --dir DIR --scenario NAME [--seconds S] [--volume-mib N] [--direct] [--log on|off]
//
// Scenarios (all on a pool file in DIR, unlimited profile, in-process):
//   randwrite   4 KiB random writes, QD32, no flush, on a fully written
//               volume: steady IOPS, then IOPS in the S seconds right after
//               a snapshot.
//   randread    4 KiB random reads, QD32: IOPS with no snapshot, then with
//               1,000 snapshots present (one block changed between each).
//   snapshot    snapshot create on a volume with 64 MiB written and on one
//               with --volume-mib written: median and p90, with and without
//               the commit that makes it durable.
//   diff        diff of two snapshots differing in one block, on a volume
//               with --volume-mib written: median.
//   reopen      open of the pool after a crash (a child process writes
//               without flushing and exits without closing): time of
//               PoolFile::Open, first and median of 5.
// Google Benchmark is not used here: these are whole scenarios with costly
// setup, timed with the monotonic clock.
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "bench/closed_loop.h"
#include "disk/clock.h"
#include "engine/aligned_buffer.h"
#include "engine/pool_file.h"
#include "engine/volume.h"

namespace snapdisk {
namespace {

struct Args {
  std::string dir = ".";
  std::string scenario;
  double seconds = 10;
  uint64_t volume_mib = 8192;
  bool direct = false;
  bool log = true;  // the volume's write log (on by default, as for every volume)
};

constexpr uint64_t kMiB = 1 << 20;

[[noreturn]] void Die(const std::string& what, const Status& s) {
  std::fprintf(stderr, "engine_bench: %s: %s\n", what.c_str(), s.ToString().c_str());
  std::exit(1);
}

double NowSeconds() { return SystemClock::Get().NowNs() / 1e9; }

std::unique_ptr<PoolFile> NewPool(const Args& args, const std::string& name, uint64_t size_bytes) {
  const std::string path = args.dir + "/" + name;
  std::filesystem::remove(path);
  std::filesystem::remove(PoolFile::LockPath(path));
  FileDeviceOptions dev;
  dev.direct_io = args.direct;
  auto pf = PoolFile::Create(path, size_bytes, PoolOptions{}, dev);
  if (!pf.ok()) Die("create pool " + path, pf.status());
  return std::move(pf).value();
}

// Writes [0, bytes) of the volume sequentially in 1 MiB requests, QD8, then flushes.
void Fill(Pool& pool, Volume& v, uint64_t bytes, uint64_t seed) {
  const int kDepth = 8;
  std::vector<AlignedBuffer> buffers;
  std::mt19937_64 rng(seed);
  for (int i = 0; i < kDepth; ++i) {
    buffers.emplace_back(kMiB);
    auto* words = reinterpret_cast<uint64_t*>(buffers.back().data());
    for (size_t w = 0; w < kMiB / 8; ++w) words[w] = rng();
  }
  std::vector<VolumeRequest> reqs(kDepth);
  uint64_t next = 0;
  Status failure;
  std::function<void(int)> submit = [&](int i) {
    if (next >= bytes) return;
    reqs[i] = VolumeRequest{.op = VolumeOp::kWrite,
                            .offset_bytes = next,
                            .length_bytes = std::min(kMiB, bytes - next),
                            .data = buffers[i].data()};
    next += reqs[i].length_bytes;
    reqs[i].on_complete = [&, i](VolumeRequest&, const Status& s) {
      if (!s.ok()) failure = s;
      buffers[i].data()[0] = static_cast<std::byte>(next >> 20);  // blocks differ between passes
      submit(i);
    };
    Status s = v.Submit(reqs[i]);
    if (!s.ok()) Die("fill submit", s);
  };
  for (int i = 0; i < kDepth; ++i) submit(i);
  while (pool.in_flight() > 0) pool.Poll(1);
  if (!failure.ok()) Die("fill", failure);
  Status s = v.Flush();
  if (!s.ok()) Die("fill flush", s);
}

// QD32 random 4 KiB reads or writes over [0, span) for `seconds`; returns IOPS.
double RandomIops(Pool& pool, Volume& v, VolumeOp op, uint64_t span, double seconds,
                  uint64_t seed) {
  auto iops = ClosedLoopRandomIops(pool, v, op == VolumeOp::kRead ? 100 : 0, span, seconds, seed);
  if (!iops.ok()) Die("random I/O", iops.status());
  return *iops;
}

double Percentile(std::vector<double> v, double p) {
  std::sort(v.begin(), v.end());
  return v[static_cast<size_t>(p * (v.size() - 1))];
}

void ScenarioRandWrite(const Args& args) {
  const uint64_t size = args.volume_mib * kMiB;
  auto pf = NewPool(args, "randwrite.pool", size * 5 / 2 + 256 * kMiB);  // room for the snapshot
  Pool& pool = pf->pool();
  if (auto r = pool.CreateVolume("v", size); !r.ok()) Die("create volume", r.status());
  if (!args.log) {
    if (Status s = pool.SetLogEnabled("v", false); !s.ok()) Die("log off", s);
  }
  Volume& v = **pool.OpenVolume("v");
  Fill(pool, v, size, 1);
  // Steady state: the volume's blocks are all written; writes replace them.
  (void)RandomIops(pool, v, VolumeOp::kWrite, size, 2, 2);  // warm up
  const double steady = RandomIops(pool, v, VolumeOp::kWrite, size, args.seconds, 3);
  if (Status s = pool.Commit(); !s.ok()) Die("commit", s);
  if (auto r = pool.CreateSnapshot("v", "s"); !r.ok()) Die("snapshot", r.status());
  const double after = RandomIops(pool, v, VolumeOp::kWrite, size, args.seconds, 4);
  std::printf(
      "{\"scenario\":\"randwrite\",\"volume_mib\":%llu,\"direct\":%s,"
      "\"steady_iops\":%.0f,\"after_snapshot_iops\":%.0f,\"ratio\":%.3f}\n",
      static_cast<unsigned long long>(args.volume_mib), args.direct ? "true" : "false", steady,
      after, after / steady);
}

void ScenarioRandRead(const Args& args) {
  const uint64_t size = args.volume_mib * kMiB;
  auto pf = NewPool(args, "randread.pool", size + size / 4 + 512 * kMiB);
  Pool& pool = pf->pool();
  if (auto r = pool.CreateVolume("v", size); !r.ok()) Die("create volume", r.status());
  Volume& v = **pool.OpenVolume("v");
  Fill(pool, v, size, 1);
  (void)RandomIops(pool, v, VolumeOp::kRead, size, 2, 5);  // warm up
  const double none = RandomIops(pool, v, VolumeOp::kRead, size, args.seconds, 6);
  AlignedBuffer block(4096);
  std::mt19937_64 rng(7);
  for (int i = 0; i < 1000; ++i) {
    std::memset(block.data(), i & 0xff, 4096);
    if (Status s = v.Write(rng() % (size / 4096) * 4096, block.span()); !s.ok()) Die("write", s);
    if (auto r = pool.CreateSnapshot("v", "s" + std::to_string(i)); !r.ok())
      Die("snapshot", r.status());
  }
  if (Status s = pool.Commit(); !s.ok()) Die("commit", s);
  const double with = RandomIops(pool, v, VolumeOp::kRead, size, args.seconds, 6);
  std::printf(
      "{\"scenario\":\"randread\",\"volume_mib\":%llu,\"direct\":%s,"
      "\"no_snapshots_iops\":%.0f,\"with_1000_snapshots_iops\":%.0f,\"ratio\":%.3f}\n",
      static_cast<unsigned long long>(args.volume_mib), args.direct ? "true" : "false", none, with,
      with / none);
}

struct SnapshotTimes {
  double create_ms_median, create_ms_p90, durable_ms_median, durable_ms_p90;
};

SnapshotTimes TimeSnapshots(Pool& pool, Volume& v, uint64_t written) {
  std::vector<double> create, durable;
  AlignedBuffer block(4096);
  for (int i = 0; i < 101; ++i) {
    // A write between snapshots, so each one has something of its own.
    std::memset(block.data(), i, 4096);
    if (Status s = v.Write((i * 7919) % (written / 4096) * 4096, block.span()); !s.ok())
      Die("write", s);
    const double t0 = NowSeconds();
    if (auto r = pool.CreateSnapshot("v", "t" + std::to_string(i)); !r.ok())
      Die("snapshot", r.status());
    const double t1 = NowSeconds();
    if (Status s = pool.Commit(); !s.ok()) Die("commit", s);
    const double t2 = NowSeconds();
    create.push_back((t1 - t0) * 1e3);
    durable.push_back((t2 - t0) * 1e3);
  }
  return {Percentile(create, 0.5), Percentile(create, 0.9), Percentile(durable, 0.5),
          Percentile(durable, 0.9)};
}

// The big volume shared by the snapshot, diff and reopen scenarios.
std::unique_ptr<PoolFile> BigPool(const Args& args) {
  const uint64_t size = args.volume_mib * kMiB;
  auto pf = NewPool(args, "big.pool", size + size / 4 + 256 * kMiB);
  Pool& pool = pf->pool();
  if (auto r = pool.CreateVolume("v", size); !r.ok()) Die("create volume", r.status());
  Fill(pool, **pool.OpenVolume("v"), size, 9);
  return pf;
}

void ScenarioSnapshot(const Args& args) {
  auto small = NewPool(args, "small.pool", 512 * kMiB);
  if (auto r = small->pool().CreateVolume("v", 64 * kMiB); !r.ok()) Die("create", r.status());
  Volume& sv = **small->pool().OpenVolume("v");
  Fill(small->pool(), sv, 64 * kMiB, 8);
  const SnapshotTimes s64 = TimeSnapshots(small->pool(), sv, 64 * kMiB);
  small.reset();
  auto big = BigPool(args);
  const SnapshotTimes sbig =
      TimeSnapshots(big->pool(), **big->pool().OpenVolume("v"), args.volume_mib * kMiB);
  std::printf(
      "{\"scenario\":\"snapshot\",\"big_written_mib\":%llu,"
      "\"create_ms_median_64mib\":%.4f,\"create_ms_p90_64mib\":%.4f,"
      "\"create_ms_median_big\":%.4f,\"create_ms_p90_big\":%.4f,\"create_ratio\":%.3f,"
      "\"durable_ms_median_64mib\":%.3f,\"durable_ms_median_big\":%.3f,\"durable_ratio\":%.3f}\n",
      static_cast<unsigned long long>(args.volume_mib), s64.create_ms_median, s64.create_ms_p90,
      sbig.create_ms_median, sbig.create_ms_p90, sbig.create_ms_median / s64.create_ms_median,
      s64.durable_ms_median, sbig.durable_ms_median,
      sbig.durable_ms_median / s64.durable_ms_median);
}

void ScenarioDiff(const Args& args) {
  auto pf = BigPool(args);
  Pool& pool = pf->pool();
  Volume& v = **pool.OpenVolume("v");
  AlignedBuffer block(4096);
  std::vector<double> ms;
  size_t extents = 0;
  for (int i = 0; i < 21; ++i) {
    const std::string a = "a" + std::to_string(i), b = "b" + std::to_string(i);
    if (auto r = pool.CreateSnapshot("v", a); !r.ok()) Die("snapshot", r.status());
    std::memset(block.data(), i + 1, 4096);
    if (Status s =
            v.Write((uint64_t(i) * 104729) % (args.volume_mib * kMiB / 4096) * 4096, block.span());
        !s.ok())
      Die("write", s);
    if (auto r = pool.CreateSnapshot("v", b); !r.ok()) Die("snapshot", r.status());
    if (Status s = pool.Commit(); !s.ok()) Die("commit", s);
    const double t0 = NowSeconds();
    auto d = pool.Diff("v", a, b);
    ms.push_back((NowSeconds() - t0) * 1e3);
    if (!d.ok()) Die("diff", d.status());
    extents = d->size();
  }
  std::printf(
      "{\"scenario\":\"diff\",\"written_mib\":%llu,\"extents\":%zu,"
      "\"diff_ms_median\":%.4f,\"diff_ms_max\":%.4f}\n",
      static_cast<unsigned long long>(args.volume_mib), extents, Percentile(ms, 0.5),
      Percentile(ms, 1.0));
}

void ScenarioReopen(const Args& args) {
  const std::string path = args.dir + "/big.pool";
  { auto pf = BigPool(args); }
  // The crash: a child writes without flushing and dies without closing.
  pid_t child = fork();
  if (child == 0) {
    auto pf = PoolFile::Open(path);
    if (!pf.ok()) _exit(2);
    Pool& pool = (*pf)->pool();
    Volume& v = **pool.OpenVolume("v");
    (void)RandomIops(pool, v, VolumeOp::kWrite, args.volume_mib * kMiB, 1, 11);
    _exit(0);  // no commit, no close
  }
  int status = 0;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) Die("crash child", Status::IOError("failed"));
  std::vector<double> ms;
  for (int i = 0; i < 5; ++i) {
    const double t0 = NowSeconds();
    auto pf = PoolFile::Open(path);
    ms.push_back((NowSeconds() - t0) * 1e3);
    if (!pf.ok()) Die("reopen", pf.status());
  }
  std::printf(
      "{\"scenario\":\"reopen\",\"written_mib\":%llu,\"first_open_ms\":%.3f,"
      "\"open_ms_median\":%.3f}\n",
      static_cast<unsigned long long>(args.volume_mib), ms[0], Percentile(ms, 0.5));
}

}  // namespace
}  // namespace snapdisk

int main(int argc, char** argv) {
  snapdisk::Args args;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "engine_bench: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--dir")
      args.dir = value();
    else if (a == "--scenario")
      args.scenario = value();
    else if (a == "--seconds")
      args.seconds = std::stod(value());
    else if (a == "--volume-mib")
      args.volume_mib = std::stoull(value());
    else if (a == "--direct")
      args.direct = true;
    else if (a == "--log")
      args.log = std::string(value()) != "off";
    else {
      std::fprintf(
          stderr,
          "usage: engine_bench --dir DIR --scenario randwrite|randread|snapshot|diff|reopen "
          "[--seconds S] [--volume-mib N] [--direct] [--log on|off]\n");
      return 2;
    }
  }
  if (args.scenario == "randwrite")
    snapdisk::ScenarioRandWrite(args);
  else if (args.scenario == "randread")
    snapdisk::ScenarioRandRead(args);
  else if (args.scenario == "snapshot")
    snapdisk::ScenarioSnapshot(args);
  else if (args.scenario == "diff")
    snapdisk::ScenarioDiff(args);
  else if (args.scenario == "reopen")
    snapdisk::ScenarioReopen(args);
  else {
    std::fprintf(stderr, "engine_bench: unknown scenario '%s'\n", args.scenario.c_str());
    return 2;
  }
  return 0;
}
