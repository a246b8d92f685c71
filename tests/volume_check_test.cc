// Checking a volume in steps (restore/volume_check.h): every bad block is
// found at its volume offset (inside a long extent too), steps are bounded
// and never wait for their reads, clients writing and trimming meanwhile
// never cause a false problem (a bad block they rewrite is no longer
// reported), cancel, every refusal with its message; and the check of a
// restored volume: recorded in its restore state (sync before open, async
// after it with clients writing, a corrupted block found), interrupted by a
// crash and run again, cleared by the next restore step.
#include "restore/volume_check.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "engine/aligned_buffer.h"
#include "restore/restore_apply.h"
#include "snapshot/backup.h"
#include "support/backup_restore.h"
#include "engine/memory_worm_store.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {


constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = kKiB * kKiB;
constexpr uint32_t kBlock = 4096;

// Small slices, reads and windows, so that a few MiB take many steps.
VolumeCheckOptions SmallSteps() {
  VolumeCheckOptions o;
  o.slice_bytes = 64 * kKiB;
  o.read_bytes = 32 * kKiB;
  o.max_reads_in_flight = 4;
  o.map_window_bytes = 1 * kMiB;
  return o;
}

// The device offset of the block holding exactly `block` (a unique pattern).
int64_t FindBlock(BlockDevice& device, const std::vector<std::byte>& block) {
  AlignedBuffer buf(kBlock);
  for (uint64_t at = 0; at + kBlock <= device.size_bytes(); at += kBlock) {
    if (!device.Read(at, buf.span()).ok()) return -1;
    if (std::memcmp(buf.data(), block.data(), kBlock) == 0) return static_cast<int64_t>(at);
  }
  return -1;
}

// Bit rot: one byte of the stored block changed behind the pool's back.
void Rot(BlockDevice& device, int64_t at) {
  ASSERT_GE(at, 0);
  AlignedBuffer buf(kBlock);
  ASSERT_TRUE(device.Read(static_cast<uint64_t>(at), buf.span()).ok());
  buf.data()[100] ^= std::byte{0x5a};
  ASSERT_TRUE(device.Write(static_cast<uint64_t>(at), buf.span()).ok());
}

std::set<uint64_t> Offsets(const std::vector<VolumeCheckProblem>& problems) {
  std::set<uint64_t> out;
  for (const VolumeCheckProblem& p : problems) out.insert(p.offset_bytes);
  return out;
}

std::string ToString(const std::set<uint64_t>& offsets) {
  std::string s;
  for (uint64_t o : offsets) s += (s.empty() ? "" : ",") + std::to_string(o);
  return "{" + s + "}";
}

class VolumeCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    device_ = testing::NewMemoryDevice(64 * kMiB);
    pool_ = testing::MustCreatePool(*device_);
    ASSERT_TRUE(pool_->CreateVolume("v", 8 * kMiB).ok());
    v_ = *pool_->OpenVolume("v");
  }
  // Writes unique blocks [first, first + count) (seed per block).
  void WriteBlocks(uint64_t first, uint64_t count) {
    for (uint64_t b = first; b < first + count; ++b) {
      ASSERT_TRUE(v_->Write(b * kBlock, Block(b)).ok());
    }
  }
  static std::vector<std::byte> Block(uint64_t b) { return testing::PatternBytes(1000 + b, kBlock); }

  std::unique_ptr<MemoryDevice> device_;
  std::unique_ptr<Pool> pool_;
  Volume* v_ = nullptr;
};

TEST_F(VolumeCheckTest, FindsEveryBadBlockAtItsVolumeOffset) {
  WriteBlocks(0, 512);     // 2 MiB in one extent
  WriteBlocks(700, 3);     // a short one
  WriteBlocks(2047, 1);    // the last block
  ASSERT_TRUE(pool_->Commit().ok());
  const uint64_t mapped = (512 + 3 + 1) * kBlock;

  auto clean = VolumeCheck::Start(*pool_, "v", SmallSteps());
  ASSERT_TRUE(clean.ok()) << clean.status().ToString();
  ASSERT_TRUE((*clean)->Run().ok());
  VolumeCheckProgress p = (*clean)->progress();
  EXPECT_EQ(p.state, VolumeCheckState::kClean);
  EXPECT_EQ(p.total_bytes, mapped);
  EXPECT_EQ(p.checked_bytes, mapped);
  EXPECT_EQ(p.problems, 0u);
  EXPECT_TRUE((*clean)->problems().empty());

  // Two adjacent bad blocks inside the long extent, one in the short one,
  // the last block.
  for (uint64_t b : {200, 201, 701, 2047}) Rot(*device_, FindBlock(*device_, Block(b)));
  auto bad = VolumeCheck::Start(*pool_, "v", SmallSteps());
  ASSERT_TRUE(bad.ok());
  ASSERT_TRUE((*bad)->Run().ok()) << (*bad)->result().ToString();
  p = (*bad)->progress();
  EXPECT_EQ(p.state, VolumeCheckState::kProblems);
  EXPECT_EQ(p.checked_bytes, mapped);
  EXPECT_EQ(p.problems, 4u);
  EXPECT_EQ(ToString(Offsets((*bad)->problems())),
            ToString({200 * kBlock, 201 * kBlock, 701 * kBlock, 2047 * kBlock}));
  for (const VolumeCheckProblem& problem : (*bad)->problems()) {
    EXPECT_NE(problem.detail.find("volume 'v': checksum mismatch at offset " +
                                  std::to_string(problem.offset_bytes)),
              std::string::npos)
        << problem.detail;
  }
  // The volume is free again: it can be deleted once the checks are gone.
  bad->reset();
  clean->reset();
  EXPECT_FALSE(v_->in_use());
}

TEST_F(VolumeCheckTest, StepsAreBoundedAndDoNotWaitForTheirReads) {
  WriteBlocks(0, 1024);  // 4 MiB
  ASSERT_TRUE(pool_->Commit().ok());
  VolumeCheckOptions o = SmallSteps();
  auto check = VolumeCheck::Start(*pool_, "v", o);
  ASSERT_TRUE(check.ok());
  EXPECT_TRUE(v_->in_use()) << "the check holds the volume";
  EXPECT_TRUE(pool_->DeleteVolume("v").IsBusy());
  uint64_t steps = 0, steps_with_reads_outstanding = 0;
  uint64_t last_checked = 0;
  while (!(*check)->Step()) {
    ++steps;
    EXPECT_LE(pool_->in_flight(), o.max_reads_in_flight);
    if (pool_->in_flight() > 0) ++steps_with_reads_outstanding;
    const VolumeCheckProgress p = (*check)->progress();
    if (!p.mapping) {
      EXPECT_EQ(p.total_bytes, 4 * kMiB);
    }
    // One step submits at most a slice: what completes per poll is bounded.
    EXPECT_LE(p.checked_bytes - last_checked, o.slice_bytes + o.read_bytes * o.max_reads_in_flight);
    last_checked = p.checked_bytes;
    pool_->Poll(1);
  }
  EXPECT_GE(steps, 4 * kMiB / o.slice_bytes);
  EXPECT_GT(steps_with_reads_outstanding, 0u) << "a step returns with its reads in flight";
  EXPECT_EQ((*check)->progress().checked_bytes, 4 * kMiB);
  EXPECT_GT((*check)->progress().rate_bytes_per_s, 0);
  EXPECT_FALSE(v_->in_use());
}

// Clients write, trim and write-zeroes between and during the steps (random,
// seeded): no problem is ever reported. A bad block that a client rewrites or
// trims before the check reads it is not reported; one left alone is.
TEST_F(VolumeCheckTest, ConcurrentWritesAndTrimsNeverCauseAFalseProblem) {
  const uint64_t seed = testing::TestSeed(71);
  std::mt19937_64 rng(seed);
  WriteBlocks(0, 2048);
  ASSERT_TRUE(pool_->Commit().ok());
  // Bad blocks near the end (read last): 1900 is rewritten, 1950 trimmed,
  // 2000 stays bad.
  for (uint64_t b : {1900, 1950, 2000}) Rot(*device_, FindBlock(*device_, Block(b)));

  auto check = VolumeCheck::Start(*pool_, "v", SmallSteps());
  ASSERT_TRUE(check.ok());
  std::vector<std::vector<std::byte>> buffers(8, std::vector<std::byte>(64 * kKiB));
  std::vector<VolumeRequest> requests(8);
  std::vector<char> busy(requests.size(), 0);
  int outstanding = 0;
  uint64_t client_ops = 0;
  bool fixed = false;
  while (!(*check)->Step()) {
    // A few client requests, asynchronous, some still in flight at the next step.
    for (size_t i = 0; i < requests.size(); ++i) {
      if (busy[i] || rng() % 3 != 0) continue;
      VolumeRequest& r = requests[i];
      const uint64_t what = rng() % 10;
      r.op = what < 6 ? VolumeOp::kWrite : what < 8 ? VolumeOp::kTrim : VolumeOp::kWriteZeroes;
      r.offset_bytes = (rng() % (1800 * 8)) * 512;  // unaligned too; away from the bad blocks
      r.length_bytes = 1 + rng() % (60 * kKiB);
      auto fill = testing::PatternBytes(rng(), r.length_bytes);
      std::memcpy(buffers[i].data(), fill.data(), fill.size());
      r.data = buffers[i].data();
      r.on_complete = [&outstanding, &busy, i](VolumeRequest&, const Status& s) {
        EXPECT_TRUE(s.ok()) << s.ToString();
        busy[i] = 0;
        --outstanding;
      };
      ASSERT_TRUE(v_->Submit(r).ok());
      busy[i] = 1;
      ++outstanding;
      ++client_ops;
    }
    if (!fixed && (*check)->progress().checked_bytes > 0) {
      ASSERT_TRUE(v_->Write(1900 * kBlock, testing::PatternBytes(5, kBlock)).ok());
      ASSERT_TRUE(v_->Trim(1950 * kBlock, kBlock).ok());
      fixed = true;
    }
    pool_->Poll(1);
  }
  while (outstanding > 0) pool_->Poll(1);
  std::printf("seed %llu: %llu client requests during the check\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(client_ops));
  ASSERT_TRUE((*check)->result().ok()) << (*check)->result().ToString();
  EXPECT_GT(client_ops, 20u);
  EXPECT_EQ(ToString(Offsets((*check)->problems())), ToString({2000 * kBlock}))
      << "seed " << seed;
}

TEST_F(VolumeCheckTest, CancelStopsAfterTheReadsInFlight) {
  WriteBlocks(0, 1024);
  auto check = VolumeCheck::Start(*pool_, "v", SmallSteps());
  ASSERT_TRUE(check.ok());
  for (int i = 0; i < 40 && !(*check)->Step(); ++i) pool_->Poll(0);
  (*check)->Cancel();
  Status s = (*check)->Run();
  EXPECT_TRUE(s.IsCancelled()) << s.ToString();
  EXPECT_EQ(s.message(), "check of volume 'v' cancelled");
  EXPECT_EQ((*check)->progress().state, VolumeCheckState::kCancelled);
  EXPECT_LT((*check)->progress().checked_bytes, 4 * kMiB);
  EXPECT_EQ(pool_->in_flight(), 0u);
  EXPECT_FALSE(v_->in_use());
  // A progress callback returning false cancels too.
  auto again = VolumeCheck::Start(*pool_, "v", SmallSteps());
  ASSERT_TRUE(again.ok());
  EXPECT_TRUE((*again)->Run([](const VolumeCheckProgress&) { return false; }).IsCancelled());
}

TEST_F(VolumeCheckTest, RefusalsSayWhy) {
  auto missing = VolumeCheck::Start(*pool_, "nope");
  EXPECT_TRUE(missing.status().IsNotFound()) << missing.status().ToString();
  VolumeCheckOptions o;
  o.read_bytes = 100;
  auto bad = VolumeCheck::Start(*pool_, "v", o);
  EXPECT_TRUE(bad.status().IsInvalidArgument());
  EXPECT_EQ(bad.status().message(),
            "volume check options: slice_bytes, read_bytes and map_window_bytes must be at least "
            "a block (4096 bytes), max_reads_in_flight at least 1, rate_mb_per_s not negative");
  ASSERT_TRUE(pool_->CreateVolume("h", 1 * kMiB).ok());
  ASSERT_TRUE(pool_->BeginHydration("h", {Extent{0, 1 * kMiB, false}}).ok());
  auto hydrating = VolumeCheck::Start(*pool_, "h");
  EXPECT_TRUE(hydrating.status().IsBusy());
  EXPECT_EQ(hydrating.status().message(),
            "volume 'h' is hydrating (1048576 bytes still to come from its backup): check it once "
            "it is hydrated");
  // Not a restored volume.
  auto plain = RestoreCheckJob::Start(*pool_, "v", RestoreCheckMode::kSync);
  EXPECT_TRUE(plain.status().IsInvalidArgument());
  EXPECT_EQ(plain.status().message(),
            "volume 'v' has no restore state (it was not restored from a backup); `snapdisk pool "
            "scrub` checks every volume of a pool");
}

TEST_F(VolumeCheckTest, ARateCapSlowsTheReads) {
  WriteBlocks(0, 256);  // 1 MiB
  ManualClock clock(1'000'000'000);
  VolumeCheckOptions o = SmallSteps();
  o.rate_mb_per_s = 1;  // 1 MB/s: about a second of (manual) time
  o.clock = &clock;
  auto check = VolumeCheck::Start(*pool_, "v", o);
  ASSERT_TRUE(check.ok());
  ASSERT_TRUE((*check)->Run().ok());
  const int64_t last_read_ns =
      static_cast<int64_t>(1'000'000'000 * (1 * kMiB - 32 * kKiB) / 1'000'000);
  EXPECT_GE(clock.NowNs() - 1'000'000'000, last_read_ns);
  EXPECT_EQ((*check)->progress().checked_bytes, 1 * kMiB);
}

// ---- The check of a restored volume ------------------------------------------------

WormStoreConfig SmallChunks() {
  WormStoreConfig c;
  c.chunk_bytes = 64 * kKiB;
  return c;
}

// A source pool with volume "db" backed up (full) into a store, and a target
// pool on its own device where "r" is restored (so the target device holds
// r's blocks and nothing else's).
class RestoredCheckTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::make_unique<MemoryWormStore>(SmallChunks());
    source_device_ = testing::NewMemoryDevice(64 * kMiB);
    source_ = testing::MustCreatePool(*source_device_, Options());
    ASSERT_TRUE(source_->CreateVolume("db", 4 * kMiB).ok());
    Volume* db = *source_->OpenVolume("db");
    for (uint64_t b = 0; b < 768; ++b) {
      ASSERT_TRUE(db->Write(b * kBlock, testing::PatternBytes(3000 + b, kBlock)).ok());
    }
    full_ = Backup(BackupMethod::kFull);
    target_device_ = testing::NewMemoryDevice(64 * kMiB);
    target_ = testing::MustCreatePool(*target_device_, Options());
    ASSERT_TRUE(target_->CreateVolume("r", 4 * kMiB).ok());
    auto applied = ApplySet(*target_, *store_, full_.id, "r");
    ASSERT_TRUE(applied.ok()) << applied.status().ToString();
  }
  PoolOptions Options() {
    PoolOptions po;
    po.wall_clock_ns = [this] { return store_->NowUnixNs(); };
    return po;
  }
  BackupSet Backup(BackupMethod method) {
    store_->AdvanceNs(1'000'000);
    BackupOptions o;
    o.method = method;
    auto job = BackupJob::Start(*source_, *store_, "db", o);
    SNAPDISK_CHECK(job.ok(), job.status().ToString().c_str());
    Result<BackupSet> set = (*job)->Run();
    SNAPDISK_CHECK(set.ok(), set.status().ToString().c_str());
    store_->AdvanceNs(1'000'000);
    return std::move(set).value();
  }
  RestoreState State(Pool& pool) {
    auto s = GetRestoreState(pool, "r");
    SNAPDISK_CHECK(s.ok() && s->has_value(), "restore state");
    return **s;
  }

  std::unique_ptr<MemoryWormStore> store_;
  std::unique_ptr<MemoryDevice> source_device_;
  std::unique_ptr<Pool> source_;
  BackupSet full_;
  std::unique_ptr<MemoryDevice> target_device_;
  std::unique_ptr<Pool> target_;
};

TEST_F(RestoredCheckTest, SyncCheckThenOpenRecordsACleanCheck) {
  auto job = RestoreCheckJob::Start(*target_, "r", RestoreCheckMode::kSync, SmallSteps());
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  EXPECT_EQ(State(*target_).check->state, RestoreCheckState::kRunning) << "recorded at start";
  EXPECT_TRUE(RestoreCheckRunning(*target_, "r"));
  auto again = RestoreCheckJob::Start(*target_, "r", RestoreCheckMode::kSync);
  EXPECT_TRUE(again.status().IsBusy());
  EXPECT_EQ(again.status().message(),
            "a check of volume 'r' is running already (see `snapdisk backup jobs`)");
  ASSERT_TRUE((*job)->Run().ok()) << (*job)->result().ToString();
  EXPECT_FALSE(RestoreCheckRunning(*target_, "r"));
  RestoreState s = State(*target_);
  ASSERT_TRUE(s.check);
  EXPECT_EQ(s.phase, RestorePhase::kRestoring);
  EXPECT_EQ(s.check->mode, RestoreCheckMode::kSync);
  EXPECT_EQ(s.check->state, RestoreCheckState::kClean);
  EXPECT_EQ(s.check->checked_bytes, 768 * kBlock);
  EXPECT_EQ(s.check->problems, 0u);
  EXPECT_GE(s.check->finished_unix_ns, s.check->started_unix_ns);
  ASSERT_TRUE(OpenRestoredVolume(*target_, "r").ok());
  s = State(*target_);
  EXPECT_EQ(s.phase, RestorePhase::kOpen);
  ASSERT_TRUE(s.check) << "opening keeps the check";
  EXPECT_EQ(s.check->state, RestoreCheckState::kClean);
}

// Async: the volume is open and a client writes while the check runs; the
// check is clean and recorded; the data matches the backup where untouched.
TEST_F(RestoredCheckTest, AsyncCheckWithAWriterIsCleanAndRecorded) {
  const uint64_t seed = testing::TestSeed(72);
  std::mt19937_64 rng(seed);
  ASSERT_TRUE(OpenRestoredVolume(*target_, "r").ok());
  Volume* r = *target_->OpenVolume("r");
  auto job = RestoreCheckJob::Start(*target_, "r", RestoreCheckMode::kAsync, SmallSteps());
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  uint64_t writes = 0;
  while (!(*job)->Step()) {
    if (rng() % 2 == 0) {
      const uint64_t off = rng() % (4 * kMiB - 20000);
      Status w = rng() % 4 == 0 ? r->Trim(off, 1 + rng() % 16384)
                                : r->Write(off, testing::PatternBytes(rng(), 1 + rng() % 16384));
      ASSERT_TRUE(w.ok()) << w.ToString();
      ++writes;
    }
    target_->Poll(0);
  }
  std::printf("seed %llu: %llu client writes during the check\n",
              static_cast<unsigned long long>(seed), static_cast<unsigned long long>(writes));
  ASSERT_TRUE((*job)->result().ok()) << (*job)->result().ToString();
  EXPECT_GT(writes, 10u);
  const RestoreState s = State(*target_);
  ASSERT_TRUE(s.check);
  EXPECT_EQ(s.check->mode, RestoreCheckMode::kAsync);
  EXPECT_EQ(s.check->state, RestoreCheckState::kClean) << s.check->first_problem;
  EXPECT_EQ(s.check->problems, 0u);
  EXPECT_GT(s.check->checked_bytes, 0u);
}

// A block of r rots after the restore: the async check finds it at its
// offset and records the problem; the volume stays open and writable.
TEST_F(RestoredCheckTest, AsyncCheckFindsACorruptedBlock) {
  Rot(*target_device_, FindBlock(*target_device_, testing::PatternBytes(3000 + 300, kBlock)));
  ASSERT_TRUE(OpenRestoredVolume(*target_, "r").ok());
  auto job = RestoreCheckJob::Start(*target_, "r", RestoreCheckMode::kAsync, SmallSteps());
  ASSERT_TRUE(job.ok());
  ASSERT_TRUE((*job)->Run().ok()) << (*job)->result().ToString();
  ASSERT_EQ((*job)->problems().size(), 1u);
  EXPECT_EQ((*job)->problems()[0].offset_bytes, 300 * kBlock);
  const RestoreState s = State(*target_);
  EXPECT_EQ(s.phase, RestorePhase::kOpen);
  ASSERT_TRUE(s.check);
  EXPECT_EQ(s.check->state, RestoreCheckState::kProblems);
  EXPECT_EQ(s.check->problems, 1u);
  EXPECT_EQ(s.check->first_problem.rfind("offset 1228800: volume 'r': checksum mismatch at "
                                         "offset 1228800 (block ",
                                         0),
            0u)
      << s.check->first_problem;
  EXPECT_TRUE((*target_->OpenVolume("r"))->Write(0, testing::PatternBytes(1, kBlock)).ok());
}

// A crash while the check runs: the reopened pool shows it "running" with no
// job, i.e. interrupted; a new check replaces it. A job destroyed unfinished
// records nothing either.
TEST_F(RestoredCheckTest, AnInterruptedCheckShowsAsSuchAndRunsAgain) {
  auto job = RestoreCheckJob::Start(*target_, "r", RestoreCheckMode::kAsync, SmallSteps());
  ASSERT_TRUE(job.ok());
  for (int i = 0; i < 5; ++i) {
    ASSERT_FALSE((*job)->Step());
    target_->Poll(0);
  }
  const RestoreCheck running = *State(*target_).check;
  EXPECT_EQ(ShownRestoreCheck(*target_, "r", running).state, RestoreCheckState::kRunning);

  std::unique_ptr<MemoryDevice> crashed = target_device_->Clone();
  {
    std::unique_ptr<Pool> after = testing::MustOpenPool(*crashed, Options());
    const RestoreCheck recorded = *State(*after).check;
    EXPECT_EQ(recorded.state, RestoreCheckState::kRunning);
    EXPECT_FALSE(RestoreCheckRunning(*after, "r"));
    EXPECT_EQ(ShownRestoreCheck(*after, "r", recorded).state, RestoreCheckState::kInterrupted);
    auto rerun = RestoreCheckJob::Start(*after, "r", RestoreCheckMode::kSync);
    ASSERT_TRUE(rerun.ok()) << rerun.status().ToString();
    ASSERT_TRUE((*rerun)->Run().ok());
    EXPECT_EQ(State(*after).check->state, RestoreCheckState::kClean);
    EXPECT_EQ(State(*after).check->mode, RestoreCheckMode::kSync);
  }
  job->reset();  // unfinished: nothing recorded
  EXPECT_EQ(ShownRestoreCheck(*target_, "r", *State(*target_).check).state,
            RestoreCheckState::kInterrupted);
  EXPECT_FALSE((*target_->OpenVolume("r"))->in_use());
}

// A cancelled check is recorded as such; the next restore step clears the
// check (it says nothing of the data the step wrote).
TEST_F(RestoredCheckTest, CancelledIsRecordedAndTheNextStepClearsTheCheck) {
  Volume* db = *source_->OpenVolume("db");
  ASSERT_TRUE(db->Write(0, testing::PatternBytes(9, 64 * kKiB)).ok());
  const BackupSet incr = Backup(BackupMethod::kIncr);
  auto job = RestoreCheckJob::Start(*target_, "r", RestoreCheckMode::kSync, SmallSteps());
  ASSERT_TRUE(job.ok());
  EXPECT_TRUE(ApplySet(*target_, *store_, incr.id, "r").status().IsBusy())
      << "the check holds the volume";
  (*job)->Cancel();
  EXPECT_TRUE((*job)->Run().IsCancelled());
  EXPECT_EQ(State(*target_).check->state, RestoreCheckState::kCancelled);
  auto applied = ApplySet(*target_, *store_, incr.id, "r");
  ASSERT_TRUE(applied.ok()) << applied.status().ToString();
  EXPECT_FALSE(State(*target_).check);
}

// ---- The state's "check" object ----------------------------------------------------

TEST(RestoreStateCheckTest, EncodesDecodesAndOldStatesHaveNone) {
  // A state written before checks were recorded.
  const std::string old =
      R"({"format":"snapdisk-restore-state","version":1,"state":"open","source_volume":"db",)"
      R"("source_volume_id":1,"lineage":1,"lsn":7,"unix_ns":5,"full":"F1","last_set":"F1",)"
      R"("last_data_set":"F1","volume_lsn":3,"log_paused":false})";
  auto decoded = DecodeRestoreState(old, "r");
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_FALSE(decoded->check);
  EXPECT_EQ(EncodeRestoreState(*decoded).find("check"), std::string::npos);

  RestoreState s = *decoded;
  s.check = RestoreCheck{RestoreCheckMode::kAsync, RestoreCheckState::kProblems, 8192, 2,
                         "offset 4096: bad", "", 10, 20};
  auto back = DecodeRestoreState(EncodeRestoreState(s), "r");
  ASSERT_TRUE(back.ok()) << back.status().ToString();
  ASSERT_TRUE(back->check);
  EXPECT_EQ(back->check->mode, RestoreCheckMode::kAsync);
  EXPECT_EQ(back->check->state, RestoreCheckState::kProblems);
  EXPECT_EQ(back->check->checked_bytes, 8192u);
  EXPECT_EQ(back->check->problems, 2u);
  EXPECT_EQ(back->check->first_problem, "offset 4096: bad");
  EXPECT_EQ(back->check->started_unix_ns, 10);
  EXPECT_EQ(back->check->finished_unix_ns, 20);

  // Bad check objects are refused with what is wrong.
  auto with = [&](const std::string& check) {
    return DecodeRestoreState(old.substr(0, old.size() - 1) + R"(,"check":)" + check + "}", "r")
        .status();
  };
  EXPECT_EQ(with("3").message(), "restore state of volume 'r': field 'check' is not an object");
  EXPECT_EQ(with(R"({"mode":"later"})").message(),
            "restore state of volume 'r': field 'check' has mode \"later\", not \"sync\" or "
            "\"async\"");
  EXPECT_EQ(with(R"({"mode":"sync","state":"interrupted"})").message(),
            "restore state of volume 'r': field 'check' has an unknown state \"interrupted\"");
  EXPECT_EQ(with(R"({"mode":"sync","state":"clean"})").message(),
            "restore state of volume 'r': field 'checked_bytes' is missing");
}

}  // namespace
}  // namespace snapdisk
