// Point-in-time restore against an oracle: a model of the volume's content
// by time (every write, trim and write-zeroes with its simulated time and
// LSN), data and log backups taken in between, then restores at many random
// times and LSNs compared byte for byte with the model. Takes a seed
// (SNAPDISK_SEED / --seed) and prints it.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>
#include <string>
#include <vector>

#include "engine/memory_worm_store.h"
#include "restore/restore_apply.h"
#include "restore/restore_plan.h"
#include "snapshot/backup.h"
#include "snapshot/backup_set.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = kKiB * kKiB;
constexpr uint64_t kBlock = 4096;
constexpr uint64_t kSize = 2 * kMiB;
constexpr int64_t kMsNs = 1'000'000;

// What the source volume held at every moment.
class Model {
 public:
  struct Op {
    int64_t unix_ns = 0;
    uint64_t lsn = 0;
    uint64_t lineage = 0;
    VolumeOp op = VolumeOp::kWrite;  // kWrite, kTrim, kWriteZeroes; kRead: a rollback
    uint64_t offset_bytes = 0;
    std::vector<std::byte> data;  // writes; for a rollback, the whole image
    uint64_t length_bytes = 0;
  };

  void Add(Op op) { ops_.push_back(std::move(op)); }

  // The content after every op done at or before `unix_ns`.
  std::vector<std::byte> AtTime(int64_t unix_ns) const {
    return Replay([&](const Op& op) { return op.unix_ns <= unix_ns; });
  }
  // The content after op LSN `lsn` of `lineage`.
  std::vector<std::byte> AtLsn(uint64_t lineage, uint64_t lsn) const {
    size_t last = 0;
    for (size_t i = 0; i < ops_.size(); ++i) {
      if (ops_[i].lineage == lineage && ops_[i].lsn <= lsn) last = i + 1;
    }
    size_t n = 0;
    return Replay([&](const Op&) { return n++ < last; });
  }
  const std::vector<Op>& ops() const { return ops_; }

 private:
  template <typename Keep>
  std::vector<std::byte> Replay(Keep keep) const {
    std::vector<std::byte> image(kSize);
    for (const Op& op : ops_) {
      if (!keep(op)) break;
      if (op.op == VolumeOp::kRead) {
        image = op.data;
      } else if (op.op == VolumeOp::kWrite) {
        std::copy(op.data.begin(), op.data.end(), image.begin() + op.offset_bytes);
      } else {
        std::fill_n(image.begin() + op.offset_bytes, op.length_bytes, std::byte{0});
      }
    }
    return image;
  }
  std::vector<Op> ops_;
};

class RestorePitrTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WormStoreConfig c;
    c.chunk_bytes = 64 * kKiB;
    store_ = std::make_unique<MemoryWormStore>(c);
    device_ = testing::NewMemoryDevice(512 * kMiB);
    PoolOptions po;
    po.wall_clock_ns = [this] { return store_->NowUnixNs(); };
    pool_ = testing::MustCreatePool(*device_, po);
    ASSERT_TRUE(pool_->CreateVolume("db", kSize).ok());
    vol_ = *pool_->OpenVolume("db");
  }

  VolumeInfo Info() { return *pool_->GetVolume("db"); }

  // One random op at the current time, then time moves on 1-3 ms.
  void RandomOp(std::mt19937_64& rng) {
    const bool aligned = rng() % 2 == 0;
    uint64_t off = aligned ? rng() % (kSize / kBlock) * kBlock : rng() % kSize;
    uint64_t len = aligned ? kBlock * (1 + rng() % 8) : 1 + rng() % 12000;
    len = std::min(len, kSize - off);
    Model::Op op;
    op.unix_ns = store_->NowUnixNs();
    op.offset_bytes = off;
    op.length_bytes = len;
    const int what = static_cast<int>(rng() % 10);
    Status s;
    if (what < 7) {
      op.op = VolumeOp::kWrite;
      op.data = testing::PatternBytes(rng(), len);
      s = vol_->Write(off, op.data);
    } else if (what < 9) {
      op.op = VolumeOp::kTrim;
      s = vol_->Trim(off, len);
    } else {
      op.op = VolumeOp::kWriteZeroes;
      s = vol_->WriteZeroes(off, len);
    }
    ASSERT_TRUE(s.ok()) << s.ToString();
    const VolumeInfo info = Info();
    op.lsn = info.lsn;
    op.lineage = info.lineage;
    model_.Add(std::move(op));
    store_->AdvanceNs(kMsNs * static_cast<int64_t>(1 + rng() % 3));
  }

  BackupSet Backup(BackupMethod method) {
    BackupOptions o;
    o.method = method;
    o.worker_threads = 2;
    auto job = BackupJob::Start(*pool_, *store_, "db", o);
    SNAPDISK_CHECK(job.ok(), job.status().ToString().c_str());
    Result<BackupSet> set = (*job)->Run();
    SNAPDISK_CHECK(set.ok(), set.status().ToString().c_str());
    // No op shares a backup's time: a backup's point is unambiguous.
    store_->AdvanceNs(kMsNs);
    sets_.push_back(*set);
    return std::move(set).value();
  }

  // A random history: ops, data backups of every kind and log backups,
  // ending with a log backup of everything.
  void History(std::mt19937_64& rng, int rounds) {
    for (int round = 0; round < rounds; ++round) {
      const int ops = 1 + static_cast<int>(rng() % 25);
      for (int i = 0; i < ops; ++i) RandomOp(rng);
      if (round == 0) {
        Backup(BackupMethod::kFull);
        continue;
      }
      const int dice = static_cast<int>(rng() % 12);
      if (dice < 2)
        Backup(BackupMethod::kFull);
      else if (dice < 4)
        Backup(BackupMethod::kDiff);
      else if (dice < 6)
        Backup(BackupMethod::kIncr);
      else if (dice < 7)
        Backup(BackupMethod::kSnapshot);
      if (rng() % 2 == 0) Backup(BackupMethod::kLog);
    }
    for (int i = 0; i < 5; ++i) RandomOp(rng);
    Backup(BackupMethod::kLog);
  }

  // Restores `target` into a new volume and compares it with `want`; returns
  // the restore's status (OK when restored and equal).
  Status RestoreAndCompare(const RestoreTarget& target, const std::vector<std::byte>& want,
                           const std::string& what) {
    const std::string name = "pitr-" + std::to_string(restores_++);
    Result<RestoreResult> r = RestoreToNewVolume(*pool_, *store_, target, name);
    if (!r.ok()) return r.status();
    std::vector<std::byte> got(kSize);
    Volume* v = *pool_->OpenVolume(name);
    EXPECT_EQ(v->size_bytes(), kSize);
    EXPECT_TRUE(v->Read(0, got).ok());
    if (got != want) {
      size_t at = 0;
      while (got[at] == want[at]) ++at;
      ADD_FAILURE() << what << ": restored volume differs from the model at byte " << at
                    << " (seed " << seed_ << ")\n"
                    << PlanRestore(*store_, target)->ToString();
    }
    EXPECT_TRUE(pool_->DeleteVolume(name).ok());
    return Status::OK();
  }

  int64_t FirstDataBackupNs() const {
    int64_t first = INT64_MAX;
    for (const BackupSet& s : sets_) {
      if (s.type != BackupType::kLog) first = std::min(first, s.consistent_unix_ns);
    }
    return first;
  }
  int64_t LastRecordNs() const {
    int64_t last = 0;
    for (const BackupSet& s : sets_) {
      if (s.type == BackupType::kLog) last = std::max(last, s.last_record_unix_ns);
    }
    return last;
  }

  uint64_t seed_ = 0;
  std::unique_ptr<MemoryWormStore> store_;
  std::unique_ptr<MemoryDevice> device_;
  std::unique_ptr<Pool> pool_;
  Volume* vol_ = nullptr;
  Model model_;
  std::vector<BackupSet> sets_;
  int restores_ = 0;
};

TEST_F(RestorePitrTest, RandomPointsInTimeAndLsnsMatchTheModel) {
  seed_ = testing::TestSeed(2024);
  std::mt19937_64 rng(seed_);
  History(rng, 30);
  const int64_t first = FirstDataBackupNs();
  const int64_t last = LastRecordNs();
  ASSERT_LT(first, last);

  std::vector<int64_t> times;
  for (int i = 0; i < 50; ++i)
    times.push_back(first + static_cast<int64_t>(rng() % (last - first + 1)));
  // Boundaries: every backup's point, and ops' exact times and just before.
  for (const BackupSet& s : sets_) {
    if (s.type != BackupType::kLog) times.push_back(s.consistent_unix_ns);
  }
  for (int i = 0; i < 10; ++i) {
    const Model::Op& op = model_.ops()[rng() % model_.ops().size()];
    if (op.unix_ns >= first) {
      times.push_back(op.unix_ns);
      times.push_back(op.unix_ns - 1);
    }
  }
  times.push_back(last);
  int checked = 0;
  for (int64_t t : times) {
    if (t < first) continue;
    Status s = RestoreAndCompare(RestoreTarget::PointInTime("db", t), model_.AtTime(t),
                                 "point in time " + FormatRfc3339(t));
    EXPECT_TRUE(s.ok()) << FormatRfc3339(t) << ": " << s.ToString() << " (seed " << seed_ << ")";
    ++checked;
  }
  EXPECT_GE(checked, 50);

  // Outside the backups: refused.
  Status before = RestoreAndCompare(RestoreTarget::PointInTime("db", first - 1), {}, "before");
  EXPECT_TRUE(before.IsNotFound()) << before.ToString();
  Status after = RestoreAndCompare(RestoreTarget::PointInTime("db", last + 1), {}, "after");
  EXPECT_TRUE(after.IsNotFound()) << after.ToString();

  // LSNs.
  const uint64_t lineage = Info().lineage;
  const uint64_t first_lsn = [&] {
    uint64_t n = UINT64_MAX;
    for (const BackupSet& s : sets_) {
      if (s.type != BackupType::kLog) n = std::min(n, s.last_lsn);
    }
    return n;
  }();
  const uint64_t last_lsn = Info().lsn;
  for (int i = 0; i < 15; ++i) {
    const uint64_t n = first_lsn + rng() % (last_lsn - first_lsn + 1);
    Status s = RestoreAndCompare(RestoreTarget::Lsn("db", n), model_.AtLsn(lineage, n),
                                 "LSN " + std::to_string(n));
    EXPECT_TRUE(s.ok()) << "LSN " << n << ": " << s.ToString() << " (seed " << seed_ << ")";
  }
  EXPECT_TRUE(RestoreAndCompare(RestoreTarget::Lsn("db", last_lsn + 1), {}, "").IsNotFound());
}

TEST_F(RestorePitrTest, StepwiseApplyWithStopsMatchesTheModel) {
  seed_ = testing::TestSeed(2025);
  std::mt19937_64 rng(seed_);
  History(rng, 20);
  const int64_t first = FirstDataBackupNs();
  const int64_t last = LastRecordNs();
  for (int round = 0; round < 8; ++round) {
    const int64_t t = first + static_cast<int64_t>(rng() % (last - first + 1));
    auto plan = PlanRestore(*store_, RestoreTarget::PointInTime("db", t));
    ASSERT_TRUE(plan.ok()) << plan.status().ToString();
    const std::string name = "steps-" + std::to_string(round);
    ASSERT_TRUE(pool_->CreateVolume(name, kSize).ok());
    for (const RestoreStep& step : plan->steps) {
      RestoreOptions o;
      if (step.set.type == BackupType::kLog) {
        if (step.through_lsn < step.set.last_lsn) o.stop.after_lsn = step.through_lsn;
        o.stop.after_unix_ns = step.stop_after_unix_ns;
      }
      auto r = ApplySet(*pool_, *store_, step.set.id, name, o);
      ASSERT_TRUE(r.ok()) << step.set.id << ": " << r.status().ToString();
    }
    ASSERT_TRUE(OpenRestoredVolume(*pool_, name).ok());
    std::vector<std::byte> got(kSize);
    ASSERT_TRUE((*pool_->OpenVolume(name))->Read(0, got).ok());
    EXPECT_TRUE(got == model_.AtTime(t)) << FormatRfc3339(t) << " (seed " << seed_ << ")\n"
                                         << plan->ToString();
  }
}

// Restores are never wrong: with a log segment's manifest gone and the
// source rolled back once (a new lineage), every point in time either
// restores to exactly the model or is refused — and the covered ones work.
TEST_F(RestorePitrTest, NeverWrongWithAGapAndARollback) {
  seed_ = testing::TestSeed(2026);
  std::mt19937_64 rng(seed_);
  History(rng, 12);
  // A rollback: back to a snapshot taken a while ago.
  ASSERT_TRUE(pool_->CreateSnapshot("db", "rb").ok());
  const int64_t snap_ns = store_->NowUnixNs();
  store_->AdvanceNs(kMsNs);
  for (int i = 0; i < 20; ++i) RandomOp(rng);
  Backup(BackupMethod::kLog);
  ASSERT_TRUE(pool_->Rollback("db", "rb").ok());
  ASSERT_TRUE(pool_->DeleteSnapshot("db", "rb").ok());
  {
    Model::Op rollback;
    rollback.unix_ns = store_->NowUnixNs();
    rollback.op = VolumeOp::kRead;
    rollback.data = model_.AtTime(snap_ns);
    rollback.lineage = Info().lineage;
    rollback.lsn = Info().lsn;
    model_.Add(std::move(rollback));
  }
  store_->AdvanceNs(kMsNs);
  for (int i = 0; i < 10; ++i) RandomOp(rng);
  Backup(BackupMethod::kFull);
  History(rng, 6);
  // Lose one log segment of the first lineage.
  std::vector<const BackupSet*> logs;
  for (const BackupSet& s : sets_) {
    if (s.type == BackupType::kLog) logs.push_back(&s);
  }
  ASSERT_GE(logs.size(), 3u);
  const BackupSet& lost = *logs[1];
  ASSERT_TRUE(store_->RemoveForTest(lost.key).ok());

  const int64_t first = FirstDataBackupNs();
  const int64_t last = LastRecordNs();
  int restored = 0, refused = 0;
  std::vector<int64_t> times = {lost.first_record_unix_ns, lost.last_record_unix_ns, last};
  for (int i = 0; i < 40; ++i)
    times.push_back(first + static_cast<int64_t>(rng() % (last - first + 1)));
  for (int64_t t : times) {
    Status s = RestoreAndCompare(RestoreTarget::PointInTime("db", t), model_.AtTime(t),
                                 "point in time " + FormatRfc3339(t));
    if (s.ok()) {
      ++restored;
    } else {
      EXPECT_TRUE(s.IsNotFound() || s.IsCorruption()) << s.ToString();
      ++refused;
    }
  }
  std::printf("restored %d, refused %d\n", restored, refused);
  EXPECT_GT(restored, 0);
  Status at_end = RestoreAndCompare(RestoreTarget::PointInTime("db", last), model_.AtTime(last),
                                    "the last record");
  EXPECT_TRUE(at_end.ok()) << at_end.ToString();
  Status in_gap = RestoreAndCompare(RestoreTarget::PointInTime("db", lost.last_record_unix_ns),
                                    model_.AtTime(lost.last_record_unix_ns), "in the gap");
  if (!in_gap.ok()) {
    EXPECT_TRUE(in_gap.IsCorruption()) << in_gap.ToString();
    EXPECT_NE(in_gap.message().find("log gap"), std::string::npos) << in_gap.ToString();
  }
}

// A disk fails; its volume is restored into a new pool under the same name
// and backed up into the same store again. The new volume's chain is its own:
// the newest point restores its data, never the old chain's log segments
// applied over its base (lineage ids are unique beyond their pool; when
// they were object ids, both volumes had lineage 1 and the latest restore
// returned a mix).
TEST(RestoreAcrossPoolsTest, AVolumeRestoredIntoAnotherPoolStartsItsOwnChain) {
  WormStoreConfig c;
  c.chunk_bytes = 64 * kKiB;
  MemoryWormStore store(c);
  PoolOptions po;
  po.wall_clock_ns = [&store] { return store.NowUnixNs(); };
  auto backup = [&store](Pool& pool, BackupMethod method) {
    store.AdvanceNs(kMsNs);
    BackupOptions o;
    o.method = method;
    auto job = BackupJob::Start(pool, store, "db", o);
    ASSERT_TRUE(job.ok()) << job.status().ToString();
    auto set = (*job)->Run();
    ASSERT_TRUE(set.ok()) << set.status().ToString();
  };
  auto write = [&store](Pool& pool, uint64_t seed, int count) {
    Volume* v = *pool.OpenVolume("db");
    for (int i = 0; i < count; ++i) {
      store.AdvanceNs(kMsNs);
      ASSERT_TRUE(
          v->Write(static_cast<uint64_t>(i) * kBlock, testing::PatternBytes(seed + i, kBlock))
              .ok());
    }
  };
  auto latest = [&store]() -> Result<std::vector<std::byte>> {
    auto sets = ListBackupSets(store, "db");
    if (!sets.ok()) return sets.status();
    SNAPDISK_ASSIGN_OR_RETURN(RestoreTarget target, LatestTarget(*sets, "db"));
    auto device = testing::NewMemoryDevice(64 * kMiB);
    auto pool = testing::MustCreatePool(*device);
    SNAPDISK_RETURN_IF_ERROR(RestoreToNewVolume(*pool, store, target, "r").status());
    std::vector<std::byte> image(kSize);
    SNAPDISK_RETURN_IF_ERROR((*pool->OpenVolume("r"))->Read(0, image));
    return image;
  };

  // The first disk: a full, then 40 writes shipped by a log backup.
  auto device_a = testing::NewMemoryDevice(64 * kMiB);
  auto pool_a = testing::MustCreatePool(*device_a, po);
  ASSERT_TRUE(pool_a->CreateVolume("db", kSize).ok());
  ASSERT_TRUE(pool_a->SetLogEnabled("db", true).ok());
  ASSERT_NO_FATAL_FAILURE(write(*pool_a, 100, 8));
  ASSERT_NO_FATAL_FAILURE(backup(*pool_a, BackupMethod::kFull));
  ASSERT_NO_FATAL_FAILURE(write(*pool_a, 200, 40));
  ASSERT_NO_FATAL_FAILURE(backup(*pool_a, BackupMethod::kLog));
  auto image_a = latest();
  ASSERT_TRUE(image_a.ok()) << image_a.status().ToString();

  // The replacement: "db" restored from the store, then backed up again.
  auto device_b = testing::NewMemoryDevice(64 * kMiB);
  auto pool_b = testing::MustCreatePool(*device_b, po);
  ASSERT_TRUE(
      RestoreToNewVolume(*pool_b, store, *LatestTarget(*ListBackupSets(store, "db"), "db"), "db")
          .ok());
  ASSERT_TRUE(pool_b->SetLogEnabled("db", true).ok());
  EXPECT_NE(pool_b->GetVolume("db")->lineage, pool_a->GetVolume("db")->lineage);
  ASSERT_NO_FATAL_FAILURE(backup(*pool_b, BackupMethod::kFull));
  ASSERT_NO_FATAL_FAILURE(write(*pool_b, 300, 3));
  ASSERT_NO_FATAL_FAILURE(backup(*pool_b, BackupMethod::kLog));
  std::vector<std::byte> expected(kSize);
  ASSERT_TRUE((*pool_b->OpenVolume("db"))->Read(0, expected).ok());
  auto image_b = latest();
  ASSERT_TRUE(image_b.ok()) << image_b.status().ToString();
  EXPECT_TRUE(*image_b == expected) << "the newest point mixes another chain into this one";
  EXPECT_FALSE(*image_b == *image_a);
}

}  // namespace
}  // namespace snapdisk
