// Log backups (snapshot/log_backup.h): segments replay to the volume, the
// chain is contiguous in LSN, gaps are errors at once, shipped records leave
// the pool, lineages get their own segments.
#include <gtest/gtest.h>


#include <random>

#include "engine/fsck.h"
#include "snapshot/log_backup.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"
#include "support/ticking_clock.h"

namespace snapdisk {
namespace {

using testing::MustCreatePool;
using testing::NewMemoryDevice;
using testing::PatternBytes;

constexpr uint64_t kMiB = 1 << 20;

class LogBackupTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_dir_ = dir_.File("store");
    WormStoreConfig config;
    config.chunk_bytes = 64 * 1024;  // several chunks per segment
    ASSERT_TRUE(CreateDirStore(store_dir_, config).ok());
    DirStoreOptions so;
    so.now_unix_ns = [this] { return now_; };
    auto store = OpenDirStore(store_dir_, so);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    dev_ = NewMemoryDevice(256 * kMiB);
    PoolOptions po;
    po.wall_clock_ns = [this] { return now_; };
    pool_ = MustCreatePool(*dev_, po);
    ASSERT_TRUE(pool_->CreateVolume("v", kSize).ok());
    vol_ = *pool_->OpenVolume("v");
  }

  Result<BackupSet> Ship() {
    BackupOptions o;
    o.method = BackupMethod::kLog;
    SNAPDISK_ASSIGN_OR_RETURN(auto job, LogBackupJob::Start(*pool_, *store_, "v", o));
    while (!job->Step()) {
    }
    return job->result();
  }

  // Applies `segment`'s records to `image`.
  void Replay(const BackupSet& segment, std::vector<std::byte>& image, uint64_t* last_lsn) {
    Status s = ForEachLogRecord(*store_, segment, [&](const LogStreamRecord& r) {
      EXPECT_EQ(r.lsn, *last_lsn + 1) << "records of a segment are contiguous";
      *last_lsn = r.lsn;
      if (r.op == VolumeOp::kWrite) {
        std::copy(r.data.begin(), r.data.end(), image.begin() + r.offset_bytes);
      } else {
        std::fill(image.begin() + r.offset_bytes, image.begin() + r.offset_bytes + r.length_bytes,
                  std::byte{0});
      }
      return Status::OK();
    });
    ASSERT_TRUE(s.ok()) << s.ToString();
  }

  void RandomWrites(std::mt19937_64& rng, int n, std::vector<std::byte>& model) {
    for (int i = 0; i < n; ++i) {
      const uint64_t off = rng() % kSize;
      const uint64_t len = 1 + rng() % std::min<uint64_t>(kSize - off, 20000);
      if (rng() % 5 == 0) {
        ASSERT_TRUE(vol_->Trim(off, len).ok());
        std::fill(model.begin() + off, model.begin() + off + len, std::byte{0});
      } else {
        auto data = PatternBytes(rng(), len);
        ASSERT_TRUE(vol_->Write(off, data).ok());
        std::copy(data.begin(), data.end(), model.begin() + off);
      }
      now_ += 1'000'000;  // 1 ms per write
    }
  }

  static constexpr uint64_t kSize = 4 * kMiB;
  testing::ScratchDir dir_;
  std::string store_dir_;
  int64_t now_ = int64_t{1'780'000'000} * 1'000'000'000;
  std::unique_ptr<WormStore> store_;
  std::unique_ptr<MemoryDevice> dev_;
  std::unique_ptr<Pool> pool_;
  Volume* vol_ = nullptr;
};

TEST_F(LogBackupTest, SegmentsReplayToTheVolumeAndLeaveThePool) {
  const uint64_t seed = testing::TestSeed(77);
  std::mt19937_64 rng(seed);
  std::vector<std::byte> model(kSize), replay(kSize);
  uint64_t last_lsn = 0;
  std::string prev_id;
  for (int round = 0; round < 4; ++round) {
    RandomWrites(rng, 60, model);
    auto set = Ship();
    ASSERT_TRUE(set.ok()) << set.status().ToString();
    EXPECT_EQ(set->type, BackupType::kLog);
    EXPECT_EQ(set->id[0], 'L');
    EXPECT_EQ(set->first_lsn, last_lsn + 1);
    EXPECT_EQ(set->last_lsn, pool_->GetVolume("v")->lsn);
    EXPECT_EQ(set->base, prev_id) << "a segment's base is the previous one";
    EXPECT_LE(set->first_record_unix_ns, set->last_record_unix_ns);
    EXPECT_GT(set->chunks.size(), 1u);
    prev_id = set->id;
    Replay(*set, replay, &last_lsn);
    EXPECT_TRUE(replay == model) << "round " << round << " seed " << seed;
    EXPECT_EQ(pool_->GetLogInfo("v")->records, 0u) << "shipped records are dropped";
  }
  // Nothing new: nothing to ship.
  auto again = Ship();
  EXPECT_TRUE(again.status().IsNotFound()) << again.status().ToString();
  auto verify = store_->Verify();
  ASSERT_TRUE(verify.ok());
  EXPECT_TRUE(verify->ok());
  auto fsck = Fsck::Check(*pool_);
  ASSERT_TRUE(fsck.ok());
  EXPECT_TRUE(fsck->clean()) << fsck->ToString();
}

TEST_F(LogBackupTest, AGapIsAnErrorAtOnceNamingTheMissingLsns) {
  ASSERT_TRUE(vol_->Write(0, PatternBytes(1, 4096)).ok());
  auto first = Ship();
  ASSERT_TRUE(first.ok()) << first.status().ToString();
  ASSERT_EQ(first->last_lsn, 1u);
  // Writes 2 and 3 go unlogged.
  ASSERT_TRUE(pool_->SetLogEnabled("v", false).ok());
  ASSERT_TRUE(vol_->Write(0, PatternBytes(2, 4096)).ok());
  ASSERT_TRUE(vol_->Write(0, PatternBytes(3, 4096)).ok());
  ASSERT_TRUE(pool_->SetLogEnabled("v", true).ok());
  ASSERT_TRUE(vol_->Write(0, PatternBytes(4, 4096)).ok());
  auto gap = Ship();
  ASSERT_TRUE(gap.status().IsCorruption()) << gap.status().ToString();
  EXPECT_NE(gap.status().message().find("log gap"), std::string::npos);
  EXPECT_NE(gap.status().message().find("LSN 2-3 missing"), std::string::npos)
      << gap.status().ToString();
  EXPECT_NE(gap.status().message().find(first->id), std::string::npos) << gap.status().ToString();
  EXPECT_EQ(pool_->GetLogInfo("v")->records, 1u) << "nothing shipped, nothing dropped";
  auto sets = ListBackupSets(*store_, "v");
  ASSERT_TRUE(sets.ok());
  EXPECT_EQ(sets->size(), 1u);
}

TEST_F(LogBackupTest, AGapInsideTheCutShipsWhatIsContiguousThenFails) {
  ASSERT_TRUE(vol_->Write(0, PatternBytes(1, 4096)).ok());
  ASSERT_TRUE(vol_->Write(0, PatternBytes(2, 4096)).ok());
  ASSERT_TRUE(pool_->SetLogEnabled("v", false).ok());  // drops 1 and 2
  ASSERT_TRUE(pool_->SetLogEnabled("v", true).ok());
  ASSERT_TRUE(vol_->Write(0, PatternBytes(3, 4096)).ok());
  ASSERT_TRUE(pool_->SetLogEnabled("v", false).ok());
  ASSERT_TRUE(pool_->SetLogEnabled("v", true).ok());
  ASSERT_TRUE(vol_->Write(0, PatternBytes(4, 4096)).ok());
  // The log now holds nothing of LSN 1-3 but 4. A first segment without any
  // data backup may start anywhere.
  auto set = Ship();
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ(set->first_lsn, 4u);
}

TEST_F(LogBackupTest, EachLineageGetsItsOwnSegment) {
  ASSERT_TRUE(vol_->Write(0, PatternBytes(1, 4096)).ok());
  ASSERT_TRUE(pool_->CreateSnapshot("v", "s").ok());
  ASSERT_TRUE(vol_->Write(0, PatternBytes(2, 4096)).ok());
  const uint64_t old_lineage = pool_->GetVolume("v")->lineage;
  ASSERT_TRUE(pool_->Rollback("v", "s").ok());
  ASSERT_TRUE(vol_->Write(4096, PatternBytes(3, 4096)).ok());
  BackupOptions o;
  o.method = BackupMethod::kLog;
  auto job = LogBackupJob::Start(*pool_, *store_, "v", o);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  while (!(*job)->Step()) {
  }
  ASSERT_TRUE((*job)->result().ok()) << (*job)->result().status().ToString();
  const auto& segments = (*job)->segments();
  ASSERT_EQ(segments.size(), 2u);
  EXPECT_EQ(segments[0].lineage, old_lineage);
  EXPECT_EQ(segments[0].first_lsn, 1u);
  EXPECT_EQ(segments[0].last_lsn, 2u);
  EXPECT_NE(segments[1].lineage, old_lineage);
  EXPECT_EQ(segments[1].first_lsn, 2u) << "the new lineage goes on from the snapshot's LSN";
  EXPECT_TRUE(segments[1].base.empty());
}

TEST_F(LogBackupTest, CancelShipsNothing) {
  std::mt19937_64 rng(3);
  std::vector<std::byte> model(kSize);
  RandomWrites(rng, 200, model);
  BackupOptions o;
  o.method = BackupMethod::kLog;
  auto job = LogBackupJob::Start(*pool_, *store_, "v", o);
  ASSERT_TRUE(job.ok());
  (*job)->Cancel();
  while (!(*job)->Step()) {
  }
  EXPECT_TRUE((*job)->result().status().IsCancelled()) << (*job)->result().status().ToString();
  auto sets = ListBackupSets(*store_, "v");
  ASSERT_TRUE(sets.ok());
  EXPECT_TRUE(sets->empty()) << "a cancelled segment leaves no set";
  EXPECT_EQ(pool_->GetLogInfo("v")->records, 200u);
}

// A step stops taking records once it has held the pool's thread for
// kBackupStepBudgetNs, so a big log does not stall the pool's requests for
// the whole of an 8 MiB step; with time standing still, the byte budget is
// the only limit.
TEST_F(LogBackupTest, AStepStopsAtItsTimeBudget) {
  std::mt19937_64 rng(5);
  std::vector<std::byte> model(kSize);
  RandomWrites(rng, 300, model);  // ~3 MiB of records
  // Bytes read by Start (it steps until the first segment opens) and by
  // the first Step after it.
  auto first_steps_read = [&](Clock& clock) -> std::pair<uint64_t, uint64_t> {
    BackupOptions o;
    o.method = BackupMethod::kLog;
    o.clock = &clock;
    auto job = LogBackupJob::Start(*pool_, *store_, "v", o);
    EXPECT_TRUE(job.ok()) << job.status().ToString();
    if (!job.ok()) return {0, 0};
    const uint64_t at_start = (*job)->progress().read_bytes;
    (void)(*job)->Step();
    const uint64_t step = (*job)->progress().read_bytes - at_start;
    (*job)->Cancel();
    while (!(*job)->Step()) {
    }
    return {at_start, step};
  };
  // A third of the budget per clock read: a step takes a few records
  // (each at most 20000 bytes).
  testing::TickingClock ticking(kBackupStepBudgetNs / 3);
  const auto [ticked_start, ticked_step] = first_steps_read(ticking);
  EXPECT_GT(ticked_start, 0u);
  EXPECT_LE(ticked_start, 4u * 20000);
  EXPECT_GT(ticked_step, 0u);
  EXPECT_LE(ticked_step, 4u * 20000);
  // Time standing still, the first step reads until the job's chunk
  // buffers are all full (20 of 64 KiB here), far beyond.
  ManualClock still;
  const auto [still_start, still_step] = first_steps_read(still);
  EXPECT_GT(still_start, 10u * 4 * 20000);
  (void)still_step;
  // Both jobs were cancelled: the records are all still there to ship, whole.
  auto shipped = Ship();
  ASSERT_TRUE(shipped.ok()) << shipped.status().ToString();
  std::vector<std::byte> image(kSize);
  uint64_t last_lsn = 0;
  Replay(*shipped, image, &last_lsn);
  EXPECT_EQ(image, model);
}

}  // namespace
}  // namespace snapdisk
