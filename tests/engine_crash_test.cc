// Crash enumeration for the engine: seeded short workloads (writes aligned and
// not, trims, write-zeroes, flushes, commits, snapshots, clones, rollbacks,
// grows, volume create/delete) on a pool over a FaultDevice; for every device
// op k the workload causes, the disk dies at op k (nothing from k on reaches
// it), the workload runs on into the errors, then the power fails
// (FaultDevice::Crash, several seeds: every write not covered by a flush is
// kept, dropped or torn). The surviving image is reopened and checked against
// a workload-level oracle (tests/support/crash_oracle.h): the pool opens
// without scanning data, fsck and scrub are clean, everything committed is
// there byte for byte, every block of an uncommitted write is all-old or
// all-new, every catalog operation is all there or not at all, every snapshot
// of the last commit is unchanged, and the pool is usable afterwards.
//
// Repeat with --seed N; raise the number of workloads with --scale N.
#include <gtest/gtest.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "disk/clock.h"
#include "disk/fault_device.h"
#include "disk/memory_device.h"
#include "engine/fsck.h"
#include "engine/pool.h"
#include "support/crash_oracle.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

using testing::CheckRecovered;
using testing::CrashOracle;
using testing::MakeDevice;
using testing::WorkloadOp;
using testing::WorkloadSpec;

struct CrashStats {
  uint64_t workloads = 0;
  uint64_t crash_points = 0;
  uint64_t states = 0;
  uint64_t landed_durable = 0;
  uint64_t landed_later = 0;  // a commit after the last successful flush landed
  uint64_t kept = 0, dropped = 0, torn = 0;
  uint64_t failures = 0;
  uint64_t skipped = 0;        // workloads that overfill a small pool
  uint64_t reused_blocks = 0;  // workloads in which a data-area block was written twice
};

struct CrashRun {
  std::unique_ptr<MemoryDevice> dev;
  CrashOracle oracle;
  std::vector<Status> statuses;
  uint64_t base_ops = 0;       // device ops of Pool::Create
  uint64_t total_ops = 0;      // device ops after the workload
  std::string fates;           // what the crash did to uncovered writes
  bool reused_blocks = false;  // a data-area block was written twice (a freed block reused)
};

// The crash mixes the seeds cycle through: the default (keep/drop/tear
// alike), tear-heavy, and keep-heavy.
CrashMix MixFor(uint64_t crash_seed) {
  switch (crash_seed % 3) {
    case 0:
      return CrashMix();
    case 1:
      return CrashMix{1, 1, 4, 0.5, 0.5};
    default:
      return CrashMix{4, 1, 1, 0.7, 0.8};
  }
}

// Runs the workload on a fresh pool over a FaultDevice. With `fail_at`, the
// disk refuses every op from that index on; with `crash_seed`, the power
// fails after the workload.
CrashRun RunWorkloadOnce(const WorkloadSpec& spec, const std::vector<WorkloadOp>& ops,
                         std::optional<uint64_t> fail_at, std::optional<uint64_t> crash_seed,
                         CrashStats* stats) {
  CrashRun run;
  run.dev = MakeDevice(spec.device_bytes, spec.sector_bytes);
  FaultDeviceOptions fault_options;
  fault_options.seed = spec.seed;
  ManualClock clock;
  FaultDevice fault(*run.dev, fault_options, clock);
  if (spec.reorder) {
    // Two independent delays on a third of the ops each: completions come
    // back out of submission order (0, 40, 90 or 130 us late).
    for (int64_t latency : {40'000, 90'000}) {
      FaultRule rule;
      rule.action = FaultAction::kLatency;
      rule.probability = 0.35;
      rule.persistent = true;
      rule.latency_ns = latency;
      SNAPDISK_CHECK(fault.AddRule(rule).ok(), "latency rule");
    }
  }
  // Pass-through; in the reference run it tells whether blocks get reused.
  testing::RecordingDevice recording(fault);
  recording.set_recording(!fail_at);
  auto created = Pool::Create(recording, spec.pool_options());
  SNAPDISK_CHECK(created.ok(), created.status().ToString().c_str());
  std::unique_ptr<Pool> pool = std::move(created).value();
  run.base_ops = fault.ops_submitted();
  if (fail_at) fault.FailAtOpIndex(*fail_at);
  testing::RunWorkload(pool, recording, spec.pool_options(), ops, &run.oracle, &run.statuses);
  run.total_ops = fault.ops_submitted();
  if (!fail_at && pool) {
    // Did the engine write a data-area block a second time (a freed block
    // reused, the case shadow paging must get right)?
    const uint64_t first_data = pool->space_map().first_data_block() * spec.block_bytes;
    std::set<uint64_t> written;
    for (const auto& op : recording.ops()) {
      if (op.op != IoOp::kWrite || op.offset_bytes < first_data) continue;
      for (uint64_t b = op.offset_bytes; b < op.offset_bytes + op.length_bytes;
           b += spec.block_bytes) {
        if (!written.insert(b).second) run.reused_blocks = true;
      }
    }
  }
  if (crash_seed) {
    Status s = fault.Crash(*crash_seed, MixFor(*crash_seed));
    EXPECT_TRUE(s.ok()) << s.ToString();
    for (const FaultEvent& e : fault.events()) {
      const char* fate = nullptr;
      switch (e.kind) {
        case FaultKind::kCrashKept:
          fate = "kept";
          ++stats->kept;
          break;
        case FaultKind::kCrashDropped:
          fate = "dropped";
          ++stats->dropped;
          break;
        case FaultKind::kCrashTorn:
          fate = "torn";
          ++stats->torn;
          break;
        default:
          break;
      }
      if (fate) {
        run.fates += std::string(" op#") + std::to_string(e.op_index) + " " + IoOpName(*e.op) +
                     " @" + std::to_string(e.offset_bytes) + "+" + std::to_string(e.length_bytes) +
                     " " + fate + (e.detail.empty() ? "" : " (" + e.detail + ")") + ";";
      }
    }
  }
  pool.reset();  // after a crash or failure its Close just fails
  return run;
}

std::string DescribeOps(const std::vector<WorkloadOp>& ops, const std::vector<Status>& statuses) {
  std::string out;
  for (size_t i = 0; i < ops.size(); ++i) {
    out += "    " + std::to_string(i) + ": " + testing::Describe(ops[i]);
    if (i < statuses.size()) out += " -> " + statuses[i].ToString();
    out += "\n";
  }
  return out;
}

// Every crash point of one workload, `seeds` crash seeds each.
// Crash points k with k % shards == shard (every workload's reference run
// and stats in each shard).
void EnumerateCrashes(const WorkloadSpec& spec, int seeds, uint64_t shard, uint64_t shards,
                      CrashStats* stats) {
  const std::vector<WorkloadOp> ops = testing::GenerateWorkload(spec);
  // The reference run: no fault; every op must succeed.
  CrashRun ref = RunWorkloadOnce(spec, ops, std::nullopt, std::nullopt, stats);
  for (size_t i = 0; i < ref.statuses.size(); ++i) {
    if (ref.statuses[i].IsNoSpace() && spec.max_volume_blocks > 0) {
      ++stats->skipped;  // a small pool this workload overfills: not a crash case
      if (std::getenv("CRASH_DEBUG")) {
        std::printf("skipped %s: op %zu %s: %s\n", spec.ToString().c_str(), i,
                    testing::Describe(ops[i]).c_str(), ref.statuses[i].ToString().c_str());
      }
      return;
    }
    ASSERT_TRUE(ref.statuses[i].ok())
        << spec.ToString() << ": op " << i << " " << testing::Describe(ops[i])
        << " failed without faults: " << ref.statuses[i].ToString();
  }
  ASSERT_EQ(ref.statuses.size(), ops.size());
  ++stats->workloads;
  stats->reused_blocks += ref.reused_blocks ? 1 : 0;
  for (uint64_t k = ref.base_ops; k <= ref.total_ops; ++k) {
    if (k % shards != shard) continue;
    ++stats->crash_points;
    for (int s = 0; s < seeds; ++s) {
      const uint64_t crash_seed = spec.seed * 1000 + k * 7 + static_cast<uint64_t>(s);
      CrashRun run = RunWorkloadOnce(spec, ops, k, crash_seed, stats);
      int landed = -1;
      std::vector<std::string> errors = run.oracle.violations();
      for (std::string& e :
           CheckRecovered(*run.dev, spec.pool_options(), run.oracle, {}, &landed)) {
        errors.push_back(std::move(e));
      }
      ++stats->states;
      if (landed == 0) ++stats->landed_durable;
      if (landed > 0) ++stats->landed_later;
      if (errors.empty()) continue;
      if (++stats->failures <= 6) {
        std::string msg;
        for (const std::string& e : errors) msg += "  - " + e + "\n";
        ADD_FAILURE() << spec.ToString() << ": disk dies at device op " << k << " (ops "
                      << ref.base_ops << ".." << ref.total_ops << "), crash seed " << crash_seed
                      << ":\n"
                      << msg << "  workload:\n"
                      << DescribeOps(ops, run.statuses) << "  crash fates:" << run.fates;
      }
    }
  }
}

// The crash points are split between two test cases (even and odd), so that
// ctest runs them on both cores: under the sanitizers the whole took ~8
// minutes on one.
void EveryCrashPointOfSeededWorkloads(uint64_t shard) {
  constexpr uint64_t kShards = 2;
  const uint64_t base = testing::TestSeed(7100);
  const uint64_t scale = testing::TestScale();
  const bool sanitized = testing::BuiltWithSanitizers();
  // Sanitized builds run ~15x slower: fewer workloads (every crash point of
  // 20, one seed) keep them under a minute; the release run covers all.
  const int workloads = static_cast<int>((sanitized ? 20 : 40) * scale);
  const int seeds = sanitized ? 1 : 3;
  const auto start = std::chrono::steady_clock::now();
  CrashStats stats;
  std::mt19937_64 rng(base);
  for (uint64_t i = 0; stats.workloads < static_cast<uint64_t>(workloads) && i < 4u * workloads;
       ++i) {
    WorkloadSpec spec;
    spec.seed = base + i;
    const uint32_t blocks[] = {4096, 4096, 8192, 4096, 65536};
    spec.block_bytes = blocks[i % 5];
    spec.sector_bytes = i % 2 == 1 ? 512 : 4096;  // 512: a crash can tear inside a block
    spec.cache_bytes = i % 3 == 2 ? 16 * spec.block_bytes : uint64_t{256} << 20;
    spec.ops = 10 + static_cast<int>(rng() % 31);
    spec.reorder = i % 3 == 1;
    if (i % 4 == 3) {
      // A small pool, small volumes, a long workload: much churn per block,
      // so freed blocks are reused (the case shadow paging must get right).
      spec.device_bytes = 256 * uint64_t{spec.block_bytes};
      spec.max_volume_blocks = 8;
      spec.ops = 50 + static_cast<int>(rng() % 31);
    }
    SCOPED_TRACE(spec.ToString());
    EnumerateCrashes(spec, seeds, shard, kShards, &stats);
    if (::testing::Test::HasFatalFailure()) break;
  }
  const double secs =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf(
      "[crash, shard %llu of %llu] %llu crash states checked over %llu workloads (%llu crash "
      "points x %d seeds) in "
      "%.1f s: %llu at the last successful flush, %llu at a later (early or interrupted) commit; "
      "uncovered writes kept %llu, "
      "dropped %llu, torn %llu; %llu workloads reused freed blocks (%llu skipped: overfilled a "
      "small pool); %llu failing states\n",
      static_cast<unsigned long long>(shard), static_cast<unsigned long long>(kShards),
      static_cast<unsigned long long>(stats.states),
      static_cast<unsigned long long>(stats.workloads),
      static_cast<unsigned long long>(stats.crash_points), seeds, secs,
      static_cast<unsigned long long>(stats.landed_durable),
      static_cast<unsigned long long>(stats.landed_later),
      static_cast<unsigned long long>(stats.kept), static_cast<unsigned long long>(stats.dropped),
      static_cast<unsigned long long>(stats.torn),
      static_cast<unsigned long long>(stats.reused_blocks),
      static_cast<unsigned long long>(stats.skipped),
      static_cast<unsigned long long>(stats.failures));
  std::fflush(stdout);
  EXPECT_GE(stats.workloads, 20u);
  EXPECT_GE(stats.reused_blocks, 3u) << "too few workloads exercise block reuse";
  EXPECT_EQ(stats.failures, 0u);
}

TEST(EngineCrashTest, EveryEvenCrashPointOfSeededWorkloads) { EveryCrashPointOfSeededWorkloads(0); }
TEST(EngineCrashTest, EveryOddCrashPointOfSeededWorkloads) { EveryCrashPointOfSeededWorkloads(1); }

// Power loss during Pool::Create: before Create returns, the device may hold
// no pool (Open: Corruption) or an empty one; once it returned OK, the pool
// is durable.
TEST(EngineCrashTest, CrashDuringCreate) {
  uint64_t states = 0;
  for (uint32_t bs : {4096u, 65536u}) {
    for (uint32_t sector : {512u, 4096u}) {
      PoolOptions options;
      options.block_bytes = bs;
      options.wall_clock_ns = &testing::FixedWallClockNs;
      uint64_t create_ops;
      {
        auto dev = MakeDevice(16 << 20, sector);
        FaultDevice fault(*dev);
        ASSERT_TRUE(Pool::Create(fault, options).ok());
        create_ops = fault.ops_submitted();
      }
      for (uint64_t k = 0; k <= create_ops; ++k) {
        for (uint64_t seed = 0; seed < 3; ++seed) {
          SCOPED_TRACE("block " + std::to_string(bs) + " sector " + std::to_string(sector) +
                       ": disk dies at op " + std::to_string(k) + ", crash seed " +
                       std::to_string(seed));
          auto dev = MakeDevice(16 << 20, sector);
          bool created = false;
          {
            FaultDevice fault(*dev);
            fault.FailAtOpIndex(k);
            auto pool = Pool::Create(fault, options);
            created = pool.ok();
            ASSERT_TRUE(fault.Crash(seed, MixFor(seed)).ok());
          }
          ++states;
          auto opened = Pool::Open(*dev, options);
          if (!opened.ok()) {
            EXPECT_FALSE(created) << "Create returned OK but the pool does not open: "
                                  << opened.status().ToString();
            EXPECT_TRUE(opened.status().IsCorruption()) << opened.status().ToString();
            continue;
          }
          EXPECT_EQ((*opened)->block_bytes(), bs);
          EXPECT_TRUE((*opened)->ListVolumes().empty());
          auto fsck = Fsck::Check(**opened);
          ASSERT_TRUE(fsck.ok()) << fsck.status().ToString();
          EXPECT_TRUE(fsck->clean()) << fsck->ToString();
          EXPECT_TRUE((*opened)->CreateVolume("v", 8 * uint64_t{bs}).ok());
          EXPECT_TRUE((*opened)->Commit().ok());
        }
      }
    }
  }
  std::printf("[crash] %llu crash states during Pool::Create checked\n",
              static_cast<unsigned long long>(states));
}

// Formatting a device that held a pool with bigger blocks: the old pool's
// superblock slot B (at its block size) is not where the new pool's slots are.
// Once Create returned, Open must find the new pool, not the old one.
TEST(EngineCrashTest, CreateOverAnOldPoolWithBiggerBlocks) {
  auto dev = MakeDevice(32 << 20, 4096);
  PoolOptions big;
  big.block_bytes = 65536;
  {
    auto old_pool = testing::MustCreatePool(*dev, big);
    ASSERT_TRUE(old_pool->CreateVolume("old", 1 << 20).ok());
    Volume* v = *old_pool->OpenVolume("old");
    for (int i = 0; i < 4; ++i) {
      ASSERT_TRUE(v->Write(0, testing::PatternBytes(i, 65536)).ok());
      ASSERT_TRUE(v->Flush().ok());  // generation 5 in slot B (at byte 65536)
    }
  }
  PoolOptions small;
  small.block_bytes = 4096;
  {
    auto fresh = Pool::Create(*dev, small);
    ASSERT_TRUE(fresh.ok()) << fresh.status().ToString();
    ASSERT_TRUE((*fresh)->Close().ok());  // nothing to commit: generation 1 stays current
  }
  auto opened = Pool::Open(*dev, small);
  ASSERT_TRUE(opened.ok()) << opened.status().ToString();
  EXPECT_EQ((*opened)->block_bytes(), 4096u)
      << "Open found the old pool's superblock (block size " << (*opened)->block_bytes()
      << ", generation " << (*opened)->Info().generation << ") instead of the new pool";
  EXPECT_TRUE((*opened)->ListVolumes().empty()) << "the old pool's volumes are back";
}

}  // namespace
}  // namespace snapdisk
