// Applying backup chains to volumes (restore/restore_apply.h): each point of
// a full + diff + incr + incr chain restores byte for byte, stepwise or as a
// copy; every refusal of the stepwise flow has its exact message and writes
// nothing; a damaged chunk, a device error, a crash or a cancel leaves the
// target as it was before the step; a busy volume is refused.
#include "restore/restore_apply.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "disk/fault_device.h"
#include "engine/fsck.h"
#include "snapshot/backup.h"
#include "support/backup_restore.h"
#include "engine/memory_worm_store.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

using testing::CompareVolumes;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = kKiB * kKiB;
constexpr uint32_t kBlock = 4096;
constexpr int64_t kMsNs = 1'000'000;

WormStoreConfig SmallChunks() {
  WormStoreConfig c;
  c.chunk_bytes = 64 * kKiB;
  return c;
}

// A pool whose wall clock is the store's (so record and backup times agree)
// and helpers to write, back up and compare.
class Env {
 public:
  // Creates a pool on `device`, or opens the one on it.
  Env(BlockDevice& device, MemoryWormStore& store, bool create = true) : store_(store) {
    pool_ = create ? testing::MustCreatePool(device, Options())
                   : testing::MustOpenPool(device, Options());
  }
  PoolOptions Options() {
    PoolOptions po;
    po.wall_clock_ns = [this] { return store_.NowUnixNs(); };
    return po;
  }
  void Reopen(BlockDevice& device) {
    pool_.reset();
    pool_ = testing::MustOpenPool(device, Options());
  }
  Pool& pool() { return *pool_; }
  MemoryWormStore& store() { return store_; }

  Volume* NewVolume(const std::string& name, uint64_t size_bytes) {
    Result<VolumeInfo> v = pool_->CreateVolume(name, size_bytes);
    SNAPDISK_CHECK(v.ok(), v.status().ToString().c_str());
    return *pool_->OpenVolume(name);
  }
  Volume* Vol(const std::string& name) { return *pool_->OpenVolume(name); }

  // Writes (aligned and not), trims and write-zeroes; 1 ms per op.
  void Churn(const std::string& name, std::mt19937_64& rng, int ops) {
    Volume* v = Vol(name);
    const uint64_t size = v->size_bytes();
    for (int i = 0; i < ops; ++i) {
      const bool aligned = rng() % 2 == 0;
      uint64_t off = aligned ? rng() % (size / kBlock) * kBlock : rng() % size;
      uint64_t len = aligned ? kBlock * (1 + rng() % (rng() % 4 == 0 ? 48 : 4)) : 1 + rng() % 9000;
      len = std::min(len, size - off);
      const int what = static_cast<int>(rng() % 10);
      Status s;
      if (what < 7) {
        s = v->Write(off, testing::PatternBytes(rng(), len));
      } else if (what < 9) {
        s = v->Trim(off, len);
      } else {
        s = v->WriteZeroes(off, len);
      }
      SNAPDISK_CHECK(s.ok(), s.ToString().c_str());
      store_.AdvanceNs(kMsNs);
    }
  }

  BackupSet Backup(const std::string& volume, BackupMethod method) {
    store_.AdvanceNs(kMsNs);
    BackupOptions o;
    o.method = method;
    o.worker_threads = 2;
    auto job = BackupJob::Start(*pool_, store_, volume, o);
    SNAPDISK_CHECK(job.ok(), job.status().ToString().c_str());
    Result<BackupSet> set = (*job)->Run();
    SNAPDISK_CHECK(set.ok(), set.status().ToString().c_str());
    store_.AdvanceNs(kMsNs);
    return std::move(set).value();
  }

  // A snapshot of `volume` now, committed (it survives a pool failure).
  Volume* Oracle(const std::string& volume, const std::string& name) {
    SNAPDISK_CHECK(pool_->CreateSnapshot(volume, name).ok(), "oracle snapshot");
    SNAPDISK_CHECK(pool_->Commit().ok(), "commit");
    return *pool_->OpenSnapshot(volume, name);
  }
  Volume* Snap(const std::string& volume, const std::string& name) {
    return *pool_->OpenSnapshot(volume, name);
  }
  uint64_t Lsn(const std::string& volume) { return pool_->GetVolume(volume)->lsn; }
  std::optional<RestoreState> State(const std::string& volume) {
    auto s = GetRestoreState(*pool_, volume);
    SNAPDISK_CHECK(s.ok(), s.status().ToString().c_str());
    return *s;
  }
  // Snapshots of `volume` a restore left behind (there should be none).
  std::vector<std::string> UndoSnapshots(const std::string& volume) {
    std::vector<std::string> out;
    const std::vector<SnapshotInfo> snaps = *pool_->ListSnapshots(volume);
    for (const SnapshotInfo& s : snaps) {
      if (s.name.rfind("restore-undo-", 0) == 0) out.push_back(s.name);
    }
    return out;
  }

 private:
  MemoryWormStore& store_;
  std::unique_ptr<Pool> pool_;
};

class RestoreApplyTest : public ::testing::Test {
 protected:
  void SetUp() override {
    store_ = std::make_unique<MemoryWormStore>(SmallChunks());
    device_ = testing::NewMemoryDevice(512 * kMiB);
    env_ = std::make_unique<Env>(*device_, *store_);
  }
  Pool& pool() { return env_->pool(); }

  std::unique_ptr<MemoryWormStore> store_;
  std::unique_ptr<MemoryDevice> device_;
  std::unique_ptr<Env> env_;
};

std::string Encoded(const std::optional<RestoreState>& s) {
  return s ? EncodeRestoreState(*s) : std::string("(none)");
}

TEST_F(RestoreApplyTest, FullDiffIncrIncrRestoresEveryPointAsCopyAndStepwise) {
  std::mt19937_64 rng(testing::TestSeed(41));
  env_->NewVolume("db", 8 * kMiB);
  env_->Churn("db", rng, 300);
  BackupSet f = env_->Backup("db", BackupMethod::kFull);
  env_->Oracle("db", "at-f");
  env_->Churn("db", rng, 150);
  BackupSet d = env_->Backup("db", BackupMethod::kDiff);
  env_->Oracle("db", "at-d");
  env_->Churn("db", rng, 150);
  BackupSet i1 = env_->Backup("db", BackupMethod::kIncr);
  env_->Oracle("db", "at-i1");
  // The source grows before the last incr: the restore grows with it.
  ASSERT_TRUE(pool().GrowVolume("db", 10 * kMiB).ok());
  env_->Churn("db", rng, 150);
  BackupSet i2 = env_->Backup("db", BackupMethod::kIncr);
  env_->Oracle("db", "at-i2");
  ASSERT_EQ(d.base, f.id);
  ASSERT_EQ(i1.base, d.id);
  ASSERT_EQ(i2.base, i1.id);

  const std::vector<std::pair<BackupSet, std::string>> points = {
      {f, "at-f"}, {d, "at-d"}, {i1, "at-i1"}, {i2, "at-i2"}};
  // Copy restores of each point.
  for (const auto& [set, oracle] : points) {
    const std::string name = "copy-" + set.id;
    Result<RestoreResult> r =
        RestoreToNewVolume(pool(), *store_, RestoreTarget::Backup(set.id), name);
    ASSERT_TRUE(r.ok()) << set.id << ": " << r.status().ToString();
    EXPECT_EQ(CompareVolumes(*env_->Vol(name), *env_->Snap("db", oracle)), "") << set.id;
    EXPECT_EQ(r->applied.back(), set.id);
    EXPECT_EQ(r->state.phase, RestorePhase::kOpen);
    EXPECT_EQ(r->state.lsn, set.last_lsn);
    EXPECT_EQ(r->state.full, f.id);
    EXPECT_TRUE(pool().GetLogInfo(name)->enabled) << "the log is back on once open";
    EXPECT_TRUE(env_->UndoSnapshots(name).empty());
  }
  // Stepwise onto one volume, compared after each step.
  env_->NewVolume("steps", 4 * kMiB);
  for (const auto& [set, oracle] : points) {
    Result<RestoreResult> r = ApplySet(pool(), *store_, set.id, "steps");
    ASSERT_TRUE(r.ok()) << set.id << ": " << r.status().ToString();
    EXPECT_EQ(CompareVolumes(*env_->Vol("steps"), *env_->Snap("db", oracle)), "") << set.id;
    EXPECT_EQ(r->state.phase, RestorePhase::kRestoring);
    EXPECT_EQ(r->state.last_set, set.id);
    EXPECT_EQ(r->first_read_ns, 0) << "a restoring volume serves no reads yet";
  }
  ASSERT_TRUE(OpenRestoredVolume(pool(), "steps").ok());
  EXPECT_EQ(env_->State("steps")->phase, RestorePhase::kOpen);
  EXPECT_TRUE(OpenRestoredVolume(pool(), "steps").IsInvalidArgument());
  auto fsck = Fsck::Check(pool());
  ASSERT_TRUE(fsck.ok());
  EXPECT_TRUE(fsck->clean()) << fsck->ToString();
}

TEST_F(RestoreApplyTest, SnapshotSetsRestoreAlone) {
  std::mt19937_64 rng(testing::TestSeed(42));
  env_->NewVolume("db", 4 * kMiB);
  env_->Churn("db", rng, 200);
  BackupSet s1 = env_->Backup("db", BackupMethod::kSnapshot);
  env_->Oracle("db", "at-s1");
  env_->Churn("db", rng, 200);
  BackupSet s2 = env_->Backup("db", BackupMethod::kSnapshot);
  env_->Oracle("db", "at-s2");
  for (const auto& [id, oracle] : {std::pair{s1.id, "at-s1"}, std::pair{s2.id, "at-s2"}}) {
    auto plan = PlanRestore(*store_, RestoreTarget::Backup(id));
    ASSERT_TRUE(plan.ok());
    ASSERT_EQ(plan->steps.size(), 1u);
    auto r = RestoreToNewVolume(pool(), *store_, *plan, "r-" + id);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    EXPECT_EQ(CompareVolumes(*env_->Vol("r-" + id), *env_->Snap("db", oracle)), "");
  }
  // A second snapshot set offered to the restoring chain of the first.
  ASSERT_TRUE(ApplySet(pool(), *store_, s1.id, "r-" + s2.id).status().IsInvalidArgument())
      << "an open volume";
  env_->NewVolume("steps", 4 * kMiB);
  ASSERT_TRUE(ApplySet(pool(), *store_, s1.id, "steps").ok());
  Status s = ApplySet(pool(), *store_, s2.id, "steps").status();
  EXPECT_EQ(s.message(), "backup " + s2.id +
                             " is a snapshot backup; only differential, incremental or log "
                             "backups can be applied now");
}

TEST_F(RestoreApplyTest, EveryRefusalHasItsMessageAndWritesNothing) {
  std::mt19937_64 rng(testing::TestSeed(43));
  env_->NewVolume("db", 4 * kMiB);
  env_->Churn("db", rng, 100);
  BackupSet f = env_->Backup("db", BackupMethod::kFull);
  env_->Churn("db", rng, 60);
  BackupSet la = env_->Backup("db", BackupMethod::kLog);  // 1..a: partly before f
  env_->Churn("db", rng, 60);
  BackupSet lb = env_->Backup("db", BackupMethod::kLog);
  env_->Churn("db", rng, 60);
  BackupSet d = env_->Backup("db", BackupMethod::kDiff);
  env_->Churn("db", rng, 60);
  BackupSet i = env_->Backup("db", BackupMethod::kIncr);
  env_->Churn("db", rng, 60);
  BackupSet lc = env_->Backup("db", BackupMethod::kLog);
  env_->Oracle("db", "at-lc");
  env_->Churn("db", rng, 60);
  BackupSet f2 = env_->Backup("db", BackupMethod::kFull);
  env_->Churn("db", rng, 60);
  BackupSet d2 = env_->Backup("db", BackupMethod::kDiff);
  BackupSet s = env_->Backup("db", BackupMethod::kSnapshot);
  env_->NewVolume("other", 4 * kMiB);
  env_->Churn("other", rng, 50);
  BackupSet fo = env_->Backup("other", BackupMethod::kFull);
  env_->Churn("other", rng, 50);
  BackupSet lo = env_->Backup("other", BackupMethod::kLog);
  ASSERT_EQ(la.first_lsn, 1u);
  ASSERT_GT(la.last_lsn, f.last_lsn);
  ASSERT_EQ(lb.first_lsn, la.last_lsn + 1);
  ASSERT_GT(d.last_lsn, lb.last_lsn);
  ASSERT_EQ(lc.first_lsn, lb.last_lsn + 1);
  ASSERT_GT(lc.last_lsn, i.last_lsn);
  const VolumeInfo db = *pool().GetVolume("db");
  const VolumeInfo other = *pool().GetVolume("other");

  env_->NewVolume("r", 4 * kMiB);
  // Applies `id` to r expecting a refusal with exactly `message`, and checks
  // that nothing was written and the state did not change.
  auto refused = [&](const std::string& id, const std::string& message, ApplyStop stop = {}) {
    const uint64_t lsn = env_->Lsn("r");
    const std::string state = Encoded(env_->State("r"));
    RestoreOptions o;
    o.stop = stop;
    Status st = ApplySet(pool(), *store_, id, "r", o).status();
    EXPECT_TRUE(st.IsInvalidArgument()) << id << ": " << st.ToString();
    EXPECT_EQ(st.message(), message) << id;
    EXPECT_EQ(env_->Lsn("r"), lsn) << id << ": nothing may be written";
    EXPECT_EQ(Encoded(env_->State("r")), state) << id;
    EXPECT_TRUE(env_->UndoSnapshots("r").empty());
  };
  auto applied = [&](const std::string& id) {
    Result<RestoreResult> r = ApplySet(pool(), *store_, id, "r");
    ASSERT_TRUE(r.ok()) << id << ": " << r.status().ToString();
  };

  // An empty target takes a full (or snapshot) backup first.
  const std::string first = ": it holds no restored backup; apply a full backup first";
  refused(d.id, "differential backup " + d.id + " cannot be applied to volume 'r'" + first);
  refused(i.id, "incremental backup " + i.id + " cannot be applied to volume 'r'" + first);
  refused(la.id, "log backup " + la.id + " cannot be applied to volume 'r'" + first);
  applied(f.id);
  EXPECT_EQ(env_->State("r")->lsn, f.last_lsn);

  // Fulls and snapshot sets only start a chain.
  const std::string only = " backup; only differential, incremental or log backups can be applied now";
  refused(f.id, "backup " + f.id + " is a full" + only);
  refused(f2.id, "backup " + f2.id + " is a full" + only);
  refused(s.id, "backup " + s.id + " is a snapshot" + only);
  // Out of order: the log that follows is too recent; the message names the
  // sets that hold the next LSN.
  refused(lb.id, "log backup " + lb.id + " begins at LSN " + std::to_string(lb.first_lsn) +
                     ", which is too recent to apply: the volume is at LSN " +
                     std::to_string(f.last_lsn) + "; apply " + la.id + " (LSN " +
                     std::to_string(la.first_lsn) + "-" + std::to_string(la.last_lsn) + ") or " +
                     d.id + " (LSN " + std::to_string(d.first_lsn) + "-" +
                     std::to_string(d.last_lsn) + ") first");
  // An incremental whose base is not applied yet: named by LSN, with what to
  // apply first (as SQL Server's 4305 does).
  refused(i.id, "incremental backup " + i.id + " begins at LSN " + std::to_string(i.first_lsn) +
                    ", which is too recent to apply: the volume is at LSN " +
                    std::to_string(f.last_lsn) + "; apply " + d.id + " (LSN " +
                    std::to_string(d.first_lsn) + "-" + std::to_string(d.last_lsn) + ") first");
  // Wrong bases.
  refused(d2.id, "differential backup " + d2.id + " is based on " + f2.id +
                     ", but volume 'r' was restored from " + f.id);
  // Another volume.
  refused(lo.id, "log backup " + lo.id + " is of volume 'other' (id " + std::to_string(other.id) +
                     ") lineage " + std::to_string(other.lineage) +
                     ", but volume 'r' is being restored from volume 'db' (id " +
                     std::to_string(db.id) + ") lineage " + std::to_string(db.lineage));
  refused(fo.id, "full backup " + fo.id + " is of volume 'other' (id " + std::to_string(other.id) +
                     ") lineage " + std::to_string(other.lineage) +
                     ", but volume 'r' is being restored from volume 'db' (id " +
                     std::to_string(db.id) + ") lineage " + std::to_string(db.lineage));
  refused(d.id, "differential backup " + d.id + ": a stop LSN or time applies to log backups only",
          ApplyStop{d.last_lsn, std::nullopt});

  // In order: la is partly covered (applied from f's LSN + 1), then lb.
  applied(la.id);
  EXPECT_EQ(env_->State("r")->lsn, la.last_lsn);
  applied(lb.id);
  refused(la.id, "log backup " + la.id + " ends at LSN " + std::to_string(la.last_lsn) +
                     ", which is too early to apply: the volume is at LSN " +
                     std::to_string(lb.last_lsn));
  refused(lb.id, "log backup " + lb.id + " is already applied to volume 'r' (it is at LSN " +
                     std::to_string(lb.last_lsn) + ")");
  refused(lc.id, "stop at LSN " + std::to_string(lb.last_lsn) + ": volume 'r' is already at LSN " +
                     std::to_string(lb.last_lsn),
          ApplyStop{lb.last_lsn, std::nullopt});
  // A diff only directly onto its full, an incr only onto its base: they
  // cannot express a block that was a hole at both ends.
  refused(d.id, "differential backup " + d.id + " applies only directly onto its full backup " +
                    f.id + ", but volume 'r' has moved on from it (it is at LSN " +
                    std::to_string(lb.last_lsn) + ", after " + lb.id + "); restore " + f.id +
                    " again to apply " + d.id);
  refused(i.id, "incremental backup " + i.id + " is based on " + d.id +
                    ", but the last backup applied to volume 'r' is " + lb.id);
  applied(lc.id);
  EXPECT_EQ(CompareVolumes(*env_->Vol("r"), *env_->Snap("db", "at-lc")), "")
      << "full + logs only";

  // The same point through the diff and the incr, then the log from the
  // incr's LSN + 1 (partly covered).
  env_->NewVolume("r4", 4 * kMiB);
  for (const BackupSet* set : {&f, &d, &i, &lc}) {
    ASSERT_TRUE(ApplySet(pool(), *store_, set->id, "r4").ok()) << set->id;
  }
  EXPECT_EQ(env_->State("r4")->lsn, lc.last_lsn);
  EXPECT_EQ(CompareVolumes(*env_->Vol("r4"), *env_->Snap("db", "at-lc")), "");
  Status again = ApplySet(pool(), *store_, d.id, "r4").status();
  EXPECT_EQ(again.message(), "differential backup " + d.id +
                                 " applies only directly onto its full backup " + f.id +
                                 ", but volume 'r4' has moved on from it (it is at LSN " +
                                 std::to_string(lc.last_lsn) + ", after " + lc.id + "); restore " +
                                 f.id + " again to apply " + d.id);
  again = ApplySet(pool(), *store_, i.id, "r4").status();
  EXPECT_EQ(again.message(), "incremental backup " + i.id + " is already applied to volume 'r4' "
                             "(it is at LSN " + std::to_string(lc.last_lsn) + ")");

  // Open: nothing more.
  ASSERT_TRUE(OpenRestoredVolume(pool(), "r").ok());
  refused(d2.id, "volume 'r' is open (its restore was finished at LSN " +
                     std::to_string(lc.last_lsn) + " with " + lc.id +
                     "); backups can no longer be applied to it: restore onto it again to start "
                     "over");

  // Written to while restoring (clients cannot: the write fence refuses
  // them; a handle exempt from it can, as a pool restored by an older build
  // could be): its content no longer matches the chain.
  env_->NewVolume("r2", 4 * kMiB);
  ASSERT_TRUE(ApplySet(pool(), *store_, f.id, "r2").ok());
  const uint64_t after_f = env_->Lsn("r2");
  EXPECT_TRUE(env_->Vol("r2")->Write(0, testing::PatternBytes(1, 4096)).IsPermissionDenied());
  env_->Vol("r2")->SetWriteFenceExempt(true);
  ASSERT_TRUE(env_->Vol("r2")->Write(0, testing::PatternBytes(1, 4096)).ok());
  env_->Vol("r2")->SetWriteFenceExempt(false);
  Status w = ApplySet(pool(), *store_, la.id, "r2").status();
  EXPECT_EQ(w.message(), "volume 'r2' was written to since " + f.id +
                             " was applied to it (its own LSN moved from " +
                             std::to_string(after_f) + " to " + std::to_string(after_f + 1) +
                             "): it no longer holds what the backups describe; restore onto it "
                             "again to start over");
}

// ---- The write fence of a restoring volume -----------------------------------------

// The engine's fence on its own: an attribute; mutations refused with its
// text, reads and flushes served; an exempt handle writes; it survives a
// reopen; removing it lets writes through.
TEST(WriteFenceTest, TheEngineHonoursTheFenceAttribute) {
  auto device = testing::NewMemoryDevice(64 * kMiB);
  auto pool = testing::MustCreatePool(*device);
  ASSERT_TRUE(pool->CreateVolume("v", 1 * kMiB).ok());
  Volume* v = *pool->OpenVolume("v");
  ASSERT_TRUE(v->Write(0, testing::PatternBytes(1, 8192)).ok());
  ASSERT_TRUE(pool->CreateSnapshot("v", "s").ok());
  ASSERT_TRUE(pool->SetAttribute("v", Pool::kWriteFenceAttribute, "it is frozen for a test").ok());
  const uint64_t lsn = pool->GetVolume("v")->lsn;
  Status w = v->Write(4096, testing::PatternBytes(2, 100));
  EXPECT_TRUE(w.IsPermissionDenied()) << w.ToString();
  EXPECT_EQ(w.message(), "volume 'v': write at offset 4096 length 100 refused: it is frozen for a test");
  EXPECT_EQ(v->Trim(0, 4096).message(),
            "volume 'v': trim at offset 0 length 4096 refused: it is frozen for a test");
  EXPECT_EQ(v->WriteZeroes(0, 512).message(),
            "volume 'v': write-zeroes at offset 0 length 512 refused: it is frozen for a test");
  // Asynchronous submits are refused synchronously, with no callback.
  std::vector<std::byte> buf(4096);
  VolumeRequest r{.op = VolumeOp::kWrite, .offset_bytes = 0, .length_bytes = 4096, .data = buf.data()};
  bool called = false;
  r.on_complete = [&](VolumeRequest&, const Status&) { called = true; };
  EXPECT_TRUE(v->Submit(r).IsPermissionDenied());
  pool->Poll(0);
  EXPECT_FALSE(called);
  EXPECT_EQ(pool->GetVolume("v")->lsn, lsn);
  EXPECT_EQ(testing::ReadAll(*v, 0, 8192), testing::PatternBytes(1, 8192)) << "reads are served";
  EXPECT_TRUE(v->Flush().ok());
  // Snapshots, clones and rollback are catalog operations: not fenced; a
  // clone is a volume of its own, without the fence.
  ASSERT_TRUE(pool->Clone("v", "s", "c").ok());
  EXPECT_TRUE((*pool->OpenVolume("c"))->Write(0, testing::PatternBytes(3, 4096)).ok());
  // The fence's owner writes through it.
  v->SetWriteFenceExempt(true);
  EXPECT_TRUE(v->Write(0, testing::PatternBytes(4, 4096)).ok());
  v->SetWriteFenceExempt(false);
  EXPECT_TRUE(v->Write(0, testing::PatternBytes(4, 4096)).IsPermissionDenied());
  // Committed like any attribute: a reopened pool (any user of it) is fenced.
  ASSERT_TRUE(pool->Close().ok());
  pool.reset();
  pool = testing::MustOpenPool(*device);
  v = *pool->OpenVolume("v");
  EXPECT_TRUE(v->Write(0, testing::PatternBytes(5, 4096)).IsPermissionDenied());
  ASSERT_TRUE(pool->RemoveAttribute("v", Pool::kWriteFenceAttribute).ok());
  EXPECT_TRUE(v->Write(0, testing::PatternBytes(5, 4096)).ok());
}

// A restoring volume refuses clients' writes with the restore's message,
// also after the pool is reopened; its restore steps still write; open lifts
// the fence. A failed first step (the volume had no state) lifts it too.
TEST_F(RestoreApplyTest, ARestoringVolumeRefusesClientWritesUntilOpen) {
  std::mt19937_64 rng(testing::TestSeed(47));
  env_->NewVolume("db", 4 * kMiB);
  env_->Churn("db", rng, 80);
  BackupSet f = env_->Backup("db", BackupMethod::kFull);
  env_->Churn("db", rng, 80);
  BackupSet i = env_->Backup("db", BackupMethod::kIncr);
  const std::string why =
      " refused: the volume is being restored (apply the next backup with `snapdisk restore "
      "apply`, or make it live with `snapdisk restore open`)";

  Volume* r = env_->NewVolume("r", 4 * kMiB);
  ASSERT_TRUE(r->Write(0, testing::PatternBytes(1, 4096)).ok()) << "no state: writable";
  RestoreOptions replace;
  replace.replace = true;  // r now holds a write of its own
  ASSERT_TRUE(ApplySet(pool(), *store_, f.id, "r", replace).ok());
  const uint64_t lsn = env_->Lsn("r");
  Status w = r->Write(8192, testing::PatternBytes(2, 4096));
  EXPECT_TRUE(w.IsPermissionDenied()) << w.ToString();
  EXPECT_EQ(w.message(), "volume 'r': write at offset 8192 length 4096" + why);
  EXPECT_EQ(r->Trim(0, 4096).message(), "volume 'r': trim at offset 0 length 4096" + why);
  EXPECT_EQ(r->WriteZeroes(512, 1024).message(),
            "volume 'r': write-zeroes at offset 512 length 1024" + why);
  EXPECT_EQ(env_->Lsn("r"), lsn);

  // Reopened (as after a restart): still fenced; the next step still applies.
  ASSERT_TRUE(pool().Close().ok());
  env_->Reopen(*device_);
  r = env_->Vol("r");
  EXPECT_TRUE(r->Write(0, testing::PatternBytes(3, 4096)).IsPermissionDenied());
  auto applied = ApplySet(pool(), *store_, i.id, "r");
  ASSERT_TRUE(applied.ok()) << applied.status().ToString();
  EXPECT_TRUE(r->Write(0, testing::PatternBytes(3, 4096)).IsPermissionDenied());

  ASSERT_TRUE(OpenRestoredVolume(pool(), "r").ok());
  EXPECT_TRUE(r->Write(0, testing::PatternBytes(3, 4096)).ok());
  EXPECT_TRUE(pool().GetAttribute("r", Pool::kWriteFenceAttribute).status().IsNotFound());

  // A copy restore that stays restoring is fenced; one that opens is not.
  ASSERT_TRUE(RestoreToNewVolume(pool(), *store_, RestoreTarget::Backup(i.id), "copy").ok());
  EXPECT_TRUE(env_->Vol("copy")->Write(0, testing::PatternBytes(4, 4096)).ok());
  RestoreOptions keep;
  keep.open = false;
  ASSERT_TRUE(RestoreOnto(pool(), *store_, RestoreTarget::Backup(i.id), "copy", keep).ok());
  EXPECT_TRUE(env_->Vol("copy")->Write(0, testing::PatternBytes(4, 4096)).IsPermissionDenied());

  // A first step that fails leaves no state and no fence.
  env_->NewVolume("r3", 4 * kMiB);
  RestoreOptions cancel;
  cancel.progress = [](const RestoreProgress&) { return false; };
  EXPECT_TRUE(ApplySet(pool(), *store_, f.id, "r3", cancel).status().IsCancelled());
  EXPECT_FALSE(env_->State("r3"));
  EXPECT_TRUE(env_->Vol("r3")->Write(0, testing::PatternBytes(5, 4096)).ok());
}

TEST_F(RestoreApplyTest, TooRecentSaysWhenNoBackupCoversTheNextLsn) {
  std::mt19937_64 rng(testing::TestSeed(44));
  env_->NewVolume("db", 4 * kMiB);
  env_->Churn("db", rng, 50);
  BackupSet f = env_->Backup("db", BackupMethod::kFull);
  env_->Churn("db", rng, 50);
  BackupSet la = env_->Backup("db", BackupMethod::kLog);
  env_->Churn("db", rng, 50);
  BackupSet lb = env_->Backup("db", BackupMethod::kLog);
  ASSERT_TRUE(store_->RemoveForTest(la.key).ok());  // la's manifest is lost
  env_->NewVolume("r", 4 * kMiB);
  ASSERT_TRUE(ApplySet(pool(), *store_, f.id, "r").ok());
  Status s = ApplySet(pool(), *store_, lb.id, "r").status();
  EXPECT_EQ(s.message(), "log backup " + lb.id + " begins at LSN " + std::to_string(lb.first_lsn) +
                             ", which is too recent to apply: the volume is at LSN " +
                             std::to_string(f.last_lsn) + "; no backup in the store covers LSN " +
                             std::to_string(f.last_lsn + 1));
  // The planner sees the same hole.
  auto plan = PlanRestore(*store_, RestoreTarget::Lsn("db", lb.last_lsn));
  EXPECT_TRUE(plan.status().IsCorruption()) << plan.status().ToString();
  EXPECT_NE(plan.status().message().find("LSN " + std::to_string(f.last_lsn + 1) + "-" +
                                         std::to_string(lb.first_lsn - 1) + " missing between " +
                                         f.id),
            std::string::npos)
      << plan.status().ToString();
}

TEST_F(RestoreApplyTest, AFullOntoAnExistingVolumeLeavesNoOldData) {
  std::mt19937_64 rng(testing::TestSeed(45));
  env_->NewVolume("db", 4 * kMiB);
  // A sparse source: a few ranges only.
  ASSERT_TRUE(env_->Vol("db")->Write(64 * kKiB, testing::PatternBytes(1, 128 * kKiB)).ok());
  ASSERT_TRUE(env_->Vol("db")->Write(3 * kMiB, testing::PatternBytes(2, 5000)).ok());
  BackupSet f = env_->Backup("db", BackupMethod::kFull);
  env_->Oracle("db", "at-f");
  // A target full of other data, a little larger than the source.
  Volume* x = env_->NewVolume("x", 5 * kMiB);
  ASSERT_TRUE(x->Write(0, testing::PatternBytes(9, 5 * kMiB)).ok());
  RestoreOptions replace;
  replace.replace = true;  // x is not db: WITH REPLACE
  auto r = RestoreOnto(pool(), *store_, RestoreTarget::Backup(f.id), "x", replace);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::vector<std::byte> got(5 * kMiB), want(4 * kMiB);
  ASSERT_TRUE(x->Read(0, got).ok());
  ASSERT_TRUE(env_->Snap("db", "at-f")->Read(0, want).ok());
  EXPECT_TRUE(std::equal(want.begin(), want.end(), got.begin())) << "the source's bytes";
  EXPECT_TRUE(std::all_of(got.begin() + 4 * kMiB, got.end(), [](std::byte b) { return b == std::byte{0}; }))
      << "past the source's size: zeros";
  // Onto a smaller volume: grown.
  env_->NewVolume("small", 1 * kMiB);
  ASSERT_TRUE(RestoreOnto(pool(), *store_, RestoreTarget::Backup(f.id), "small").ok());
  EXPECT_EQ(CompareVolumes(*env_->Vol("small"), *env_->Snap("db", "at-f")), "");
  // RestoreOnto replaces an open restore too.
  ASSERT_TRUE(RestoreOnto(pool(), *store_, RestoreTarget::Backup(f.id), "small").ok());
  EXPECT_EQ(CompareVolumes(*env_->Vol("small"), *env_->Snap("db", "at-f")), "");
  EXPECT_TRUE(RestoreOnto(pool(), *store_, RestoreTarget::Backup(f.id), "nope").status().IsNotFound());
  EXPECT_TRUE(RestoreToNewVolume(pool(), *store_, RestoreTarget::Backup(f.id), "x")
                  .status()
                  .IsAlreadyExists());
}

TEST_F(RestoreApplyTest, AVolumeInUseOrWithIoInFlightIsBusy) {
  std::mt19937_64 rng(testing::TestSeed(46));
  env_->NewVolume("db", 4 * kMiB);
  env_->Churn("db", rng, 50);
  BackupSet f = env_->Backup("db", BackupMethod::kFull);
  Volume* x = env_->NewVolume("x", 4 * kMiB);
  ASSERT_TRUE(x->Write(0, testing::PatternBytes(3, 8192)).ok());
  const uint64_t lsn = env_->Lsn("x");
  x->SetInUse(true);
  Status s = RestoreOnto(pool(), *store_, RestoreTarget::Backup(f.id), "x").status();
  EXPECT_TRUE(s.IsBusy()) << s.ToString();
  EXPECT_EQ(s.message(), "volume 'x' is in use (open by a client); restore refused");
  EXPECT_TRUE(ApplySet(pool(), *store_, f.id, "x").status().IsBusy());
  x->SetInUse(false);
  // A read in flight (submitted, not yet polled).
  std::vector<std::byte> buf(4096);
  VolumeRequest read;
  read.op = VolumeOp::kRead;
  read.offset_bytes = 0;
  read.length_bytes = 4096;
  read.data = buf.data();
  bool done = false;
  read.on_complete = [&](VolumeRequest&, const Status&) { done = true; };
  ASSERT_TRUE(x->Submit(read).ok());
  if (x->in_flight() > 0) {
    s = RestoreOnto(pool(), *store_, RestoreTarget::Backup(f.id), "x").status();
    EXPECT_TRUE(s.IsBusy()) << s.ToString();
    EXPECT_EQ(s.message(), "volume 'x' has 1 requests in flight; restore refused");
  }
  while (!done) pool().Poll(1);
  EXPECT_EQ(env_->Lsn("x"), lsn);
  EXPECT_FALSE(env_->State("x"));
  // x holds data of its own and is not db: replacing it takes `replace`.
  Status refused = RestoreOnto(pool(), *store_, RestoreTarget::Backup(f.id), "x").status();
  EXPECT_TRUE(refused.IsInvalidArgument()) << refused.ToString();
  EXPECT_EQ(refused.message(),
            "restoring " + f.id + " (volume 'db', 4 MiB) onto volume 'x' (4 MiB) refused: it is "
            "not the backup's source volume; replace it anyway with --replace "
            "(RestoreOptions::replace)");
  EXPECT_EQ(env_->Lsn("x"), lsn);
  RestoreOptions replace;
  replace.replace = true;
  ASSERT_TRUE(RestoreOnto(pool(), *store_, RestoreTarget::Backup(f.id), "x", replace).ok());
}

// The chunk of `set` that its last extent uses (so a step fails after it
// wrote everything before).
const ChunkInfo& LastUsedChunk(const BackupSet& set) {
  const std::string& hash = set.extents.back().chunk;
  for (const ChunkInfo& c : set.chunks) {
    if (c.hash == hash) return c;
  }
  SNAPDISK_CHECK(false, "extent without its chunk");
  return set.chunks.front();
}

TEST_F(RestoreApplyTest, ACorruptChunkStopsTheStepAndLeavesTheTargetAsBefore) {
  std::mt19937_64 rng(testing::TestSeed(47));
  env_->NewVolume("db", 4 * kMiB);
  env_->Churn("db", rng, 200);
  BackupSet f = env_->Backup("db", BackupMethod::kFull);
  env_->Oracle("db", "at-f");
  env_->Churn("db", rng, 200);
  BackupSet d = env_->Backup("db", BackupMethod::kDiff);
  env_->Oracle("db", "at-d");
  env_->Churn("db", rng, 200);
  BackupSet i = env_->Backup("db", BackupMethod::kIncr);
  env_->Churn("db", rng, 200);
  BackupSet l = env_->Backup("db", BackupMethod::kLog);
  ASSERT_GT(i.chunks.size(), 2u);
  ASSERT_GT(l.chunks.size(), 2u);
  const ChunkInfo victim = LastUsedChunk(i);
  ASSERT_TRUE(victim.new_in_set);
  // A careful rewrite (the store's own checksum updated): only the content
  // hash can tell.
  ASSERT_TRUE(store_
                  ->TamperForTest(
                      victim.key, [](std::vector<std::byte>& b) { b[b.size() - 3] ^= std::byte{4}; },
                      /*consistent=*/true)
                  .ok());

  // Stepwise: the failing step writes some chunks, then is rolled back.
  env_->NewVolume("r", 4 * kMiB);
  ASSERT_TRUE(ApplySet(pool(), *store_, f.id, "r").ok());
  ASSERT_TRUE(ApplySet(pool(), *store_, d.id, "r").ok());
  env_->Oracle("r", "before");
  const std::string state = Encoded(env_->State("r"));
  uint64_t written_before_failure = 0;
  RestoreOptions o;
  o.progress = [&](const RestoreProgress& p) {
    written_before_failure = p.written_bytes;
    return true;
  };
  Status s = ApplySet(pool(), *store_, i.id, "r", o).status();
  ASSERT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("set " + i.id), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find(victim.hash), std::string::npos) << s.ToString();
  EXPECT_GT(written_before_failure, 0u) << "the step had written data before the bad chunk";
  EXPECT_EQ(CompareVolumes(*env_->Vol("r"), *env_->Snap("r", "before")), "");
  EXPECT_EQ(CompareVolumes(*env_->Vol("r"), *env_->Snap("db", "at-d")), "");
  EXPECT_EQ(Encoded(env_->State("r")), state);
  EXPECT_TRUE(env_->UndoSnapshots("r").empty());

  // A copy restore failing in step 3 keeps the volume restoring at step 2.
  Result<RestoreResult> copy = RestoreToNewVolume(pool(), *store_, RestoreTarget::Backup(i.id), "c");
  ASSERT_TRUE(copy.status().IsCorruption()) << copy.status().ToString();
  EXPECT_NE(copy.status().message().find("volume 'c' is left restoring at LSN " +
                                         std::to_string(d.last_lsn) + " (after " + d.id + ")"),
            std::string::npos)
      << copy.status().ToString();
  EXPECT_NE(copy.status().message().find(victim.hash), std::string::npos);
  EXPECT_EQ(CompareVolumes(*env_->Vol("c"), *env_->Snap("db", "at-d")), "");
  EXPECT_EQ(env_->State("c")->last_set, d.id);

  // A bad chunk in the first step: the new volume is not left behind.
  const ChunkInfo full_victim = LastUsedChunk(f);
  ASSERT_TRUE(store_
                  ->TamperForTest(
                      full_victim.key, [](std::vector<std::byte>& b) { b[20] ^= std::byte{1}; },
                      /*consistent=*/false)  // bit rot: the store's checksum fails
                  .ok());
  Result<RestoreResult> none = RestoreToNewVolume(pool(), *store_, RestoreTarget::Backup(f.id), "n");
  ASSERT_TRUE(none.status().IsCorruption()) << none.status().ToString();
  EXPECT_NE(none.status().message().find("set " + f.id), std::string::npos);
  EXPECT_NE(none.status().message().find(full_victim.hash), std::string::npos)
      << none.status().ToString();
  EXPECT_TRUE(pool().GetVolume("n").status().IsNotFound());
  // ... and onto an existing volume, it stays as it was, state and all.
  Status onto = RestoreOnto(pool(), *store_, RestoreTarget::Backup(f.id), "r").status();
  ASSERT_TRUE(onto.IsCorruption()) << onto.ToString();
  EXPECT_EQ(CompareVolumes(*env_->Vol("r"), *env_->Snap("r", "before")), "");
  EXPECT_EQ(Encoded(env_->State("r")), state);
  EXPECT_TRUE(env_->UndoSnapshots("r").empty());
}

TEST_F(RestoreApplyTest, ADamagedLogChunkRollsTheLogStepBack) {
  std::mt19937_64 rng(testing::TestSeed(48));
  env_->NewVolume("db", 4 * kMiB);
  env_->Churn("db", rng, 100);
  BackupSet f = env_->Backup("db", BackupMethod::kFull);
  env_->Oracle("db", "at-f");
  env_->Churn("db", rng, 300);
  BackupSet l = env_->Backup("db", BackupMethod::kLog);
  ASSERT_GT(l.chunks.size(), 3u);
  const ChunkInfo victim = l.chunks[l.chunks.size() / 2];
  ASSERT_TRUE(store_
                  ->TamperForTest(
                      victim.key, [](std::vector<std::byte>& b) { b[b.size() / 2] ^= std::byte{8}; },
                      /*consistent=*/true)
                  .ok());
  env_->NewVolume("r", 4 * kMiB);
  ASSERT_TRUE(ApplySet(pool(), *store_, f.id, "r").ok());
  const std::string state = Encoded(env_->State("r"));
  Status s = ApplySet(pool(), *store_, l.id, "r").status();
  ASSERT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("log backup " + l.id), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find(victim.hash), std::string::npos) << s.ToString();
  EXPECT_EQ(CompareVolumes(*env_->Vol("r"), *env_->Snap("db", "at-f")), "");
  EXPECT_EQ(Encoded(env_->State("r")), state);
  EXPECT_TRUE(env_->UndoSnapshots("r").empty());
}

TEST_F(RestoreApplyTest, CancelRollsTheStepBack) {
  std::mt19937_64 rng(testing::TestSeed(49));
  env_->NewVolume("db", 4 * kMiB);
  env_->Churn("db", rng, 300);
  BackupSet f = env_->Backup("db", BackupMethod::kFull);
  Volume* x = env_->NewVolume("x", 4 * kMiB);
  ASSERT_TRUE(x->Write(0, testing::PatternBytes(5, 4 * kMiB)).ok());
  env_->Oracle("x", "before");
  int calls = 0;
  RestoreOptions o;
  o.replace = true;  // x is not db
  o.progress = [&](const RestoreProgress& p) {
    EXPECT_LE(p.done_bytes, p.total_bytes);
    EXPECT_EQ(p.steps, 1u);
    return ++calls < 3;
  };
  Status s = RestoreOnto(pool(), *store_, RestoreTarget::Backup(f.id), "x", o).status();
  EXPECT_TRUE(s.IsCancelled()) << s.ToString();
  EXPECT_EQ(calls, 3);
  EXPECT_EQ(CompareVolumes(*x, *env_->Snap("x", "before")), "");
  EXPECT_FALSE(env_->State("x"));
  EXPECT_TRUE(env_->UndoSnapshots("x").empty());
}

TEST_F(RestoreApplyTest, ResultsCarryRtoFiguresAndByteCounts) {
  std::mt19937_64 rng(testing::TestSeed(50));
  env_->NewVolume("db", 4 * kMiB);
  env_->Churn("db", rng, 200);
  BackupSet f = env_->Backup("db", BackupMethod::kFull);
  env_->Churn("db", rng, 100);
  BackupSet i = env_->Backup("db", BackupMethod::kIncr);
  auto plan = PlanRestore(*store_, RestoreTarget::Backup(i.id));
  ASSERT_TRUE(plan.ok());
  ManualClock clock(1000);
  RestoreOptions o;
  o.clock = &clock;
  uint64_t last_done = 0;
  o.progress = [&](const RestoreProgress& p) {
    EXPECT_GE(p.done_bytes, last_done);
    last_done = p.done_bytes;
    EXPECT_EQ(p.total_bytes, plan->data_bytes());
    clock.AdvanceNs(1'000'000);  // 1 ms per chunk
    return true;
  };
  auto r = RestoreToNewVolume(pool(), *store_, *plan, "r", o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_EQ(last_done, plan->data_bytes());
  EXPECT_EQ(r->read_bytes, plan->read_bytes());
  uint64_t chunks = 0;
  for (const RestoreStep& s : plan->steps) chunks += s.set.chunks.size();
  EXPECT_EQ(r->chunks_read, chunks);
  EXPECT_EQ(r->written_bytes, plan->data_bytes());
  EXPECT_GE(r->zeroed_bytes, 4 * kMiB) << "the full trims the whole volume first";
  EXPECT_GT(r->complete_ns, 0);
  EXPECT_EQ(r->first_read_ns, r->complete_ns) << "a copy restore serves reads once complete";
  EXPECT_EQ(r->applied, (std::vector<std::string>{f.id, i.id}));
  std::printf("%s", plan->ToString().c_str());
}

TEST_F(RestoreApplyTest, BadOptionsAreRefused) {
  RestoreOptions o;
  o.write_buffer_bytes = 1000;
  EXPECT_TRUE(ApplySet(pool(), *store_, "F1", "x", o).status().IsInvalidArgument());
  o = {};
  o.fetch_threads = 0;
  EXPECT_TRUE(RestoreToNewVolume(pool(), *store_, RestorePlan{}, "x", o).status().IsInvalidArgument());
}

// ---- Faults ---------------------------------------------------------------------

// Device write errors during a step: the target is as before it, at once or
// (when the pool failed) after reopening; then the step goes through.
class RestoreFaultTest : public ::testing::TestWithParam<int> {};

TEST_P(RestoreFaultTest, DeviceWriteErrorsLeaveTheTargetAsBeforeTheStep) {
  const int round = GetParam();
  MemoryWormStore store(SmallChunks());
  auto mem = testing::NewMemoryDevice(256 * kMiB);
  FaultDeviceOptions fo;
  fo.seed = testing::TestSeed(100 + round);
  FaultDevice fault(*mem, fo);
  Env env(fault, store);
  std::mt19937_64 rng(fo.seed);
  env.NewVolume("db", 4 * kMiB);
  env.Churn("db", rng, 200);
  BackupSet f = env.Backup("db", BackupMethod::kFull);
  env.Churn("db", rng, 200);
  BackupSet d = env.Backup("db", BackupMethod::kDiff);
  env.Churn("db", rng, 300);
  BackupSet l = env.Backup("db", BackupMethod::kLog);
  env.Oracle("db", "at-l");
  env.NewVolume("r", 4 * kMiB);
  ASSERT_TRUE(ApplySet(env.pool(), store, f.id, "r").ok());
  ASSERT_TRUE(ApplySet(env.pool(), store, d.id, "r").ok());
  env.Oracle("r", "before");
  const std::string state = Encoded(env.State("r"));

  FaultRule rule;
  rule.action = FaultAction::kIOError;
  rule.op = IoOp::kWrite;
  rule.probability = 0.02 + 0.04 * (round % 5);
  rule.persistent = true;
  const uint32_t id = *fault.AddRule(rule);
  Status s = ApplySet(env.pool(), store, l.id, "r").status();
  ASSERT_TRUE(fault.RemoveRule(id).ok());
  if (s.ok()) GTEST_SKIP() << "no write failed";
  EXPECT_TRUE(s.IsIOError() || s.IsNoSpace()) << s.ToString();
  std::printf("step failed with %s; pool %s\n", s.ToString().c_str(),
              env.pool().health().ok() ? "healthy" : "failed: reopened");
  if (!env.pool().health().ok()) {
    env.Reopen(fault);
  } else {
    EXPECT_EQ(CompareVolumes(*env.Vol("r"), *env.Snap("r", "before")), "") << s.ToString();
  }
  // Undoing the step may itself have hit an error (the message says so);
  // RecoverRestoreStep, which every restore call runs first, finishes it.
  ASSERT_TRUE(RecoverRestoreStep(env.pool(), "r").ok());
  EXPECT_EQ(CompareVolumes(*env.Vol("r"), *env.Snap("r", "before")), "") << s.ToString();
  EXPECT_EQ(Encoded(env.State("r")), state);
  EXPECT_TRUE(env.UndoSnapshots("r").empty());
  auto again = ApplySet(env.pool(), store, l.id, "r");
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  EXPECT_EQ(CompareVolumes(*env.Vol("r"), *env.Snap("db", "at-l")), "");
  auto fsck = Fsck::Check(env.pool());
  ASSERT_TRUE(fsck.ok());
  EXPECT_TRUE(fsck->clean()) << fsck->ToString();
}

INSTANTIATE_TEST_SUITE_P(Rounds, RestoreFaultTest, ::testing::Range(0, 10));

// Power loss in the middle of a step: the pool reopens at a commit that holds
// the undo snapshot, and the next restore call rolls the step back.
TEST(RestoreCrashTest, PowerLossMidStepIsRolledBackOnReopen) {
  for (int round = 0; round < 4; ++round) {
    MemoryWormStore store(SmallChunks());
    auto mem = testing::NewMemoryDevice(256 * kMiB);
    const uint64_t seed = testing::TestSeed(200) + round;
    auto fault = std::make_unique<FaultDevice>(*mem);
    auto env = std::make_unique<Env>(*fault, store);
    std::mt19937_64 rng(seed);
    env->NewVolume("db", 4 * kMiB);
    env->Churn("db", rng, 300);
    BackupSet f = env->Backup("db", BackupMethod::kFull);
    env->Churn("db", rng, 300);
    BackupSet i = env->Backup("db", BackupMethod::kIncr);
    env->Oracle("db", "at-i");
    ASSERT_GT(i.chunks.size(), 3u);
    env->NewVolume("r", 4 * kMiB);
    ASSERT_TRUE(ApplySet(env->pool(), store, f.id, "r").ok());
    env->Oracle("r", "before");
    const std::string state = Encoded(env->State("r"));
    int calls = 0;
    RestoreOptions o;
    o.progress = [&](const RestoreProgress&) {
      if (++calls == 2 + round) {
        EXPECT_TRUE(fault->Crash(seed).ok());
      }
      return true;
    };
    Status s = ApplySet(env->pool(), store, i.id, "r", o).status();
    ASSERT_TRUE(fault->crashed()) << "round " << round;
    EXPECT_FALSE(s.ok());
    env.reset();  // the pool goes without a commit (the device is dead)
    fault.reset();
    Env reopened(*mem, store, /*create=*/false);
    ASSERT_TRUE(reopened.State("r")) << "round " << round;
    EXPECT_TRUE(reopened.State("r")->pending()) << "the crash came inside the step";
    EXPECT_TRUE(reopened.Vol("r")->Write(0, testing::PatternBytes(1, 4096)).IsPermissionDenied())
        << "still fenced after the crash";
    EXPECT_EQ(reopened.UndoSnapshots("r").size(), 1u);
    ASSERT_TRUE(RecoverRestoreStep(reopened.pool(), "r").ok());
    EXPECT_EQ(CompareVolumes(*reopened.Vol("r"), *reopened.Snap("r", "before")), "")
        << "round " << round;
    EXPECT_EQ(Encoded(reopened.State("r")), state) << "round " << round;
    EXPECT_TRUE(reopened.UndoSnapshots("r").empty());
    auto fsck = Fsck::Check(reopened.pool());
    ASSERT_TRUE(fsck.ok());
    EXPECT_TRUE(fsck->clean()) << fsck->ToString();
    EXPECT_TRUE(reopened.Vol("r")->Write(0, testing::PatternBytes(1, 4096)).IsPermissionDenied())
        << "restoring again after the roll back";
    auto again = ApplySet(reopened.pool(), store, i.id, "r");
    ASSERT_TRUE(again.ok()) << again.status().ToString();
    EXPECT_EQ(CompareVolumes(*reopened.Vol("r"), *reopened.Snap("db", "at-i")), "");
  }
}

// A crash inside the first step (the volume had no restore state): after
// the roll back it has none again, and no fence.
TEST(RestoreCrashTest, PowerLossInTheFirstStepLeavesNoFence) {
  MemoryWormStore store(SmallChunks());
  auto mem = testing::NewMemoryDevice(256 * kMiB);
  const uint64_t seed = testing::TestSeed(210);
  auto fault = std::make_unique<FaultDevice>(*mem);
  auto env = std::make_unique<Env>(*fault, store);
  std::mt19937_64 rng(seed);
  env->NewVolume("db", 4 * kMiB);
  env->Churn("db", rng, 300);
  BackupSet f = env->Backup("db", BackupMethod::kFull);
  ASSERT_GT(f.chunks.size(), 3u);
  env->NewVolume("r", 4 * kMiB);
  ASSERT_TRUE(env->Vol("r")->Write(0, testing::PatternBytes(7, 4096)).ok());
  ASSERT_TRUE(env->pool().Commit().ok());
  int calls = 0;
  RestoreOptions o;
  o.replace = true;  // r holds a write of its own
  o.progress = [&](const RestoreProgress&) {
    if (++calls == 2) {
      EXPECT_TRUE(fault->Crash(seed).ok());
    }
    return true;
  };
  EXPECT_FALSE(ApplySet(env->pool(), store, f.id, "r", o).ok());
  ASSERT_TRUE(fault->crashed());
  env.reset();
  fault.reset();
  Env reopened(*mem, store, /*create=*/false);
  ASSERT_TRUE(reopened.State("r"));
  EXPECT_TRUE(reopened.Vol("r")->Write(0, testing::PatternBytes(8, 4096)).IsPermissionDenied());
  ASSERT_TRUE(RecoverRestoreStep(reopened.pool(), "r").ok());
  EXPECT_FALSE(reopened.State("r"));
  EXPECT_EQ(testing::ReadAll(*reopened.Vol("r"), 0, 4096), testing::PatternBytes(7, 4096));
  EXPECT_TRUE(reopened.Vol("r")->Write(0, testing::PatternBytes(8, 4096)).ok());
}

}  // namespace
}  // namespace snapdisk
