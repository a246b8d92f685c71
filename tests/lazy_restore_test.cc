// Instant restore (restore/lazy_restore.h) from real snapshot and full backups
// in a MemoryWormStore: the volume reads the backup before anything is
// copied, the job copies the rest at a rate with progress, client writes
// racing it win (against a model, seeded), a crash mid-hydration at many
// points is resumed from the volume's attribute with nothing flushed lost,
// damaged chunks and store errors surface as the read's error, naming the
// set and the chunk. Randomized tests print their seed; repeat with --seed N.
#include "restore/lazy_restore.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <random>

#include "disk/clock.h"
#include "disk/fault_device.h"
#include "engine/fsck.h"
#include "engine/memory_worm_store.h"
#include "engine/pool.h"
#include "snapshot/backup.h"
#include "support/backup_restore.h"
#include "support/crash_oracle.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

using testing::Image;
using testing::PatternBytes;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = kKiB * kKiB;
constexpr uint32_t kBlock = 4096;

WormStoreConfig SmallChunks() {
  WormStoreConfig c;
  c.chunk_bytes = 64 * kKiB;
  return c;
}

Image ReadImage(Volume& v) {
  Image out(v.size_bytes());
  Status s = v.Read(0, out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

std::string Diff(const Image& a, const Image& b) {
  if (a.size() != b.size()) return "sizes differ";
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return "differ at byte " + std::to_string(i);
  }
  return "";
}

void ExpectFsckClean(Pool& pool) {
  auto fsck = Fsck::Check(pool);
  ASSERT_TRUE(fsck.ok()) << fsck.status().ToString();
  EXPECT_TRUE(fsck->clean()) << fsck->ToString();
}

// An origin pool with a volume "src" and its backups in a store; the image
// each backup holds.
class LazyRestoreTest : public ::testing::Test {
 protected:
  void SetUp() override {
    origin_dev_ = testing::NewMemoryDevice(256 * kMiB);
    origin_ = testing::MustCreatePool(*origin_dev_);
    store_ = std::make_unique<MemoryWormStore>(SmallChunks());
    dev_ = testing::NewMemoryDevice(256 * kMiB);
    pool_ = testing::MustCreatePool(*dev_);
  }

  // "src" of `size` bytes with data here and there (aligned and not, some
  // trimmed), backed up; returns the set and fills `image`.
  BackupSet MakeBackup(uint64_t size, uint64_t seed, Image* image,
                       BackupMethod method = BackupMethod::kSnapshot) {
    if (!origin_->GetVolume("src").ok()) {
      SNAPDISK_CHECK(origin_->CreateVolume("src", size).ok(), "create src");
    }
    Volume* v = *origin_->OpenVolume("src");
    std::mt19937_64 rng(seed);
    for (int i = 0; i < 40; ++i) {
      const uint64_t length = 1 + rng() % (200 * kKiB);
      const uint64_t offset = rng() % (size - length);
      if (rng() % 6 == 0) {
        EXPECT_TRUE(v->Trim(offset, length).ok());
      } else {
        EXPECT_TRUE(v->Write(offset, PatternBytes(rng(), length)).ok());
      }
    }
    *image = ReadImage(*v);
    BackupOptions options;
    options.method = method;
    options.worker_threads = 2;
    auto job = BackupJob::Start(*origin_, *store_, "src", options);
    SNAPDISK_CHECK(job.ok(), job.status().ToString().c_str());
    Result<BackupSet> set = (*job)->Run();
    SNAPDISK_CHECK(set.ok(), set.status().ToString().c_str());
    return *set;
  }

  std::unique_ptr<MemoryDevice> origin_dev_;
  std::unique_ptr<Pool> origin_;
  std::unique_ptr<MemoryWormStore> store_;
  std::unique_ptr<MemoryDevice> dev_;
  std::unique_ptr<Pool> pool_;
};

TEST_F(LazyRestoreTest, TheVolumeReadsTheBackupAtOnceAndAfterTheFill) {
  Image image;
  const BackupSet set = MakeBackup(8 * kMiB + 4 * kKiB, 1, &image);
  ASSERT_GT(set.extents.size(), 10u);
  LazyRestoreOptions options;
  options.store_locator = "memory:test";
  auto job = StartLazyRestore(*pool_, *store_, set.id, "r", options);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  HydrationProgress p = (*job)->progress();
  EXPECT_EQ(p.state, HydrationJobState::kRunning);
  EXPECT_EQ(p.set_id, set.id);
  EXPECT_GT(p.total_bytes, 0u);
  EXPECT_EQ(p.pending_bytes, p.total_bytes);
  EXPECT_EQ(p.chunks_read, 1u) << "one chunk is read before the volume is usable: its first read";
  EXPECT_GT(p.usable_after_s, 0.0);
  auto attribute = pool_->GetAttribute("r", kHydrationSourceAttribute);
  ASSERT_TRUE(attribute.ok());
  EXPECT_NE(attribute->find(set.id), std::string::npos);
  EXPECT_NE(attribute->find("memory:test"), std::string::npos);

  Volume* r = *pool_->OpenVolume("r");
  EXPECT_EQ(r->size_bytes(), image.size());
  EXPECT_EQ(Diff(ReadImage(*r), image), "") << "read through, before any fill";
  EXPECT_GT((*job)->progress().chunks_read, 0u);
  // A read fills every block of the chunks it fetched (each chunk is read
  // from the store once): reading the whole image filled it all.
  EXPECT_EQ(pool_->GetHydrationInfo("r")->pending_bytes, 0u) << "reads fill what they fetch";

  std::vector<HydrationProgress> seen;
  Status s = (*job)->Run([&](const HydrationProgress& q) {
    seen.push_back(q);
    return true;
  });
  ASSERT_TRUE(s.ok()) << s.ToString();
  p = (*job)->progress();
  EXPECT_EQ(p.state, HydrationJobState::kDone);
  EXPECT_EQ(p.pending_bytes, 0u);
  EXPECT_EQ(p.done_bytes, p.total_bytes);
  EXPECT_EQ(p.filled_bytes, 0u) << "the reads left the job nothing to fill";
  EXPECT_GE(p.hydrated_after_s, p.usable_after_s);
  EXPECT_GT(p.store_bytes_read, 0u);
  ASSERT_FALSE(seen.empty());
  EXPECT_EQ(seen.back().state, HydrationJobState::kDone);
  EXPECT_FALSE(pool_->GetHydrationInfo("r")->hydrating);
  EXPECT_TRUE(pool_->GetAttribute("r", kHydrationSourceAttribute).status().IsNotFound());
  EXPECT_EQ(Diff(ReadImage(*r), image), "");
  ExpectFsckClean(*pool_);
  // Durable, and independent of the store now.
  job->reset();
  store_.reset();
  pool_.reset();
  pool_ = testing::MustOpenPool(*dev_);
  EXPECT_EQ(Diff(ReadImage(**pool_->OpenVolume("r")), image), "");
}

TEST_F(LazyRestoreTest, StartingReadsOneChunkAndCostsTheExtentsNotTheData) {
  // 16 extents of one chunk each, with 64 KiB and with 1 MiB chunks: 16x the
  // data, the same start.
  auto start_cost = [&](const std::string& name, uint64_t chunk_bytes) {
    WormStoreConfig config;
    config.chunk_bytes = chunk_bytes;
    MemoryWormStore store(config);
    EXPECT_TRUE(origin_->CreateVolume(name, 64 * chunk_bytes).ok());
    Volume* v = *origin_->OpenVolume(name);
    for (uint64_t i = 0; i < 16; ++i) {
      EXPECT_TRUE(v->Write(i * 4 * chunk_bytes, PatternBytes(i + 1, chunk_bytes)).ok());
    }
    BackupOptions options;
    options.method = BackupMethod::kSnapshot;
    options.worker_threads = 2;
    auto backup = BackupJob::Start(*origin_, store, name, options);
    EXPECT_TRUE(backup.ok());
    Result<BackupSet> set = (*backup)->Run();
    EXPECT_TRUE(set.ok());
    EXPECT_EQ(set->extents.size(), 16u);
    EXPECT_EQ(set->data_bytes, 16 * chunk_bytes);
    const uint64_t gets = store.counters().gets;
    const OpStats before = dev_->stats().Snapshot().of(IoOp::kWrite);
    auto job = StartLazyRestore(*pool_, store, set->id, "r-" + name, {});
    EXPECT_TRUE(job.ok()) << job.status().ToString();
    const OpStats after = dev_->stats().Snapshot().of(IoOp::kWrite);
    // The restore index's top and first page, and the first read's chunk.
    EXPECT_EQ((*job)->progress().chunks_read, 1u);
    EXPECT_EQ(store.counters().gets - gets, 3u) << "StartLazyRestore read more than it needs";
    // The pool must not keep a source over a store that goes away.
    EXPECT_TRUE(pool_->DeleteVolume("r-" + name).ok());
    // The first read filled its chunk: the rest is what starting wrote.
    return after.bytes - before.bytes - chunk_bytes;
  };
  const uint64_t small = start_cost("small", 64 * kKiB);
  const uint64_t large = start_cost("large", 1 * kMiB);
  std::printf(
      "[lazy restore] start wrote %llu bytes for 1 MiB of data, %llu for 16 MiB "
      "(besides the first read's chunk)\n",
      static_cast<unsigned long long>(small), static_cast<unsigned long long>(large));
  EXPECT_LE(large, small + 4 * kBlock);
}

TEST_F(LazyRestoreTest, ClientWritesRacingTheJobWinOverTheBackup) {
  const uint64_t base = testing::TestSeed(6060);
  for (uint64_t round = 0; round < 3 * testing::TestScale(); ++round) {
    const uint64_t seed = base + round;
    SCOPED_TRACE("seed " + std::to_string(seed));
    std::mt19937_64 rng(seed);
    Image model;
    const BackupSet set = MakeBackup(4 * kMiB, seed, &model);
    LazyRestoreOptions options;
    options.step_bytes = (1 + rng() % 8) * kBlock;
    options.commit_every_bytes = 256 * kKiB;
    const std::string name = "r" + std::to_string(round);
    auto job = StartLazyRestore(*pool_, *store_, set.id, name, options);
    ASSERT_TRUE(job.ok()) << job.status().ToString();
    Volume* r = *pool_->OpenVolume(name);
    const uint64_t size = r->size_bytes();
    bool finished = false;
    for (int op = 0; op < 400 && !HasFailure(); ++op) {
      const uint64_t k = rng() % 10;
      if (k < 4) {
        finished = (*job)->Step() || finished;
      } else if (k < 8) {
        // A few requests in flight while the job steps.
        std::vector<VolumeRequest> requests(1 + rng() % 3);
        std::vector<Image> buffers(requests.size());
        int pending = 0;
        for (size_t i = 0; i < requests.size(); ++i) {
          const uint64_t length = 1 + rng() % (3 * kBlock);
          const uint64_t offset = rng() % 2 ? rng() % (size / kBlock) * kBlock % (size - length)
                                            : rng() % (size - length);
          VolumeRequest& q = requests[i];
          const uint64_t kind = rng() % 5;
          q.op = kind < 3 ? VolumeOp::kWrite : kind == 3 ? VolumeOp::kTrim : VolumeOp::kWriteZeroes;
          q.offset_bytes = offset;
          q.length_bytes = length;
          if (q.op == VolumeOp::kWrite) {
            buffers[i] = PatternBytes(rng(), length);
            q.data = buffers[i].data();
            std::copy(buffers[i].begin(), buffers[i].end(), model.begin() + offset);
          } else {
            std::fill(model.begin() + offset, model.begin() + offset + length, std::byte{0});
          }
          q.on_complete = [&pending](VolumeRequest&, const Status& s) {
            EXPECT_TRUE(s.ok()) << s.ToString();
            --pending;
          };
          ASSERT_TRUE(r->Submit(q).ok());
          ++pending;
        }
        finished = (*job)->Step() || finished;
        while (pending > 0) pool_->Poll(1);
      } else {
        const uint64_t length = 1 + rng() % (64 * kKiB);
        const uint64_t offset = rng() % (size - length);
        Image got(length);
        ASSERT_TRUE(r->Read(offset, got).ok());
        ASSERT_TRUE(std::equal(got.begin(), got.end(), model.begin() + offset))
            << "op " << op << ": read at " << offset << " +" << length << " differs";
      }
    }
    if (!finished) {
      Status s = (*job)->Run();
      ASSERT_TRUE(s.ok()) << s.ToString();
    }
    ASSERT_TRUE((*job)->result().ok());
    EXPECT_EQ(Diff(ReadImage(*r), model), "");
    ExpectFsckClean(*pool_);
  }
}

TEST_F(LazyRestoreTest, ACancelledJobLeavesTheVolumeUsableAndResumeFinishesIt) {
  Image image;
  const BackupSet set = MakeBackup(4 * kMiB, 3, &image);
  LazyRestoreOptions options;
  options.step_bytes = 64 * kKiB;
  auto job = StartLazyRestore(*pool_, *store_, set.id, "r", options);
  ASSERT_TRUE(job.ok());
  for (int i = 0; i < 3; ++i) ASSERT_FALSE((*job)->Step());
  (*job)->Cancel();
  EXPECT_TRUE((*job)->Step());
  EXPECT_TRUE((*job)->result().IsCancelled()) << (*job)->result().ToString();
  EXPECT_EQ((*job)->progress().state, HydrationJobState::kCancelled);
  EXPECT_GT((*job)->progress().pending_bytes, 0u);
  job->reset();
  Volume* r = *pool_->OpenVolume("r");
  // The source stays attached after a cancel (a read of the end of the
  // volume: it fills the chunk it fetched, the rest stays pending).
  Image tail(8 * kKiB);
  ASSERT_TRUE(r->Read(image.size() - tail.size(), tail).ok());
  EXPECT_TRUE(std::equal(tail.begin(), tail.end(), image.end() - tail.size()));
  ASSERT_TRUE(r->Write(100, PatternBytes(9, 5000)).ok());
  const Image written = PatternBytes(9, 5000);
  std::copy(written.begin(), written.end(), image.begin() + 100);
  ASSERT_TRUE(r->Flush().ok());
  const uint64_t pending = pool_->GetHydrationInfo("r")->pending_bytes;
  EXPECT_GT(pending, 0u);

  // After a reopen nothing is attached: reads of pending blocks fail, never zeros.
  pool_.reset();
  pool_ = testing::MustOpenPool(*dev_);
  r = *pool_->OpenVolume("r");
  Image all(r->size_bytes());
  Status s = r->Read(0, all);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  // Resume from the attribute.
  auto resumed = ResumeHydration(*pool_, "r", *store_, options);
  ASSERT_TRUE(resumed.ok()) << resumed.status().ToString();
  EXPECT_LE((*resumed)->progress().total_bytes, pending) << "it continues where it stopped";
  EXPECT_GE((*resumed)->progress().total_bytes, pending - 2 * kBlock);
  EXPECT_EQ(Diff(ReadImage(*r), image), "");
  ASSERT_TRUE((*resumed)->Run().ok());
  EXPECT_EQ(Diff(ReadImage(*r), image), "");
  EXPECT_TRUE(pool_->GetAttribute("r", kHydrationSourceAttribute).status().IsNotFound());
  // Nothing left to resume.
  EXPECT_TRUE(ResumeHydration(*pool_, "r", *store_, options).status().IsNotFound());
  ExpectFsckClean(*pool_);
}

TEST_F(LazyRestoreTest, ACorruptChunkFailsTheReadWithCorruptionNamingSetAndChunk) {
  Image image;
  const BackupSet set = MakeBackup(4 * kMiB, 4, &image);
  auto job = StartLazyRestore(*pool_, *store_, set.id, "r", {});
  ASSERT_TRUE(job.ok());
  const ChunkExtent& victim_extent = set.extents[set.extents.size() / 2];
  const ChunkInfo* victim = nullptr;
  for (const ChunkInfo& c : set.chunks) {
    if (c.hash == victim_extent.chunk) victim = &c;
  }
  ASSERT_NE(victim, nullptr);
  // A careful rewrite (the store's own checksum follows): only the chunk's
  // content hash can tell.
  ASSERT_TRUE(store_
                  ->TamperForTest(
                      victim->key,
                      [](std::vector<std::byte>& b) { b[b.size() - 5] ^= std::byte{8}; },
                      /*consistent=*/true)
                  .ok());
  Volume* r = *pool_->OpenVolume("r");
  Image block(kBlock);
  Status s = r->Read(victim_extent.offset_bytes / kBlock * kBlock, block);
  ASSERT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("set " + set.id), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find(victim->hash), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("volume 'r'"), std::string::npos) << s.ToString();
  // The job stops on it with the same error; the pool is fine.
  s = (*job)->Run();
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find(victim->hash), std::string::npos) << s.ToString();
  EXPECT_EQ((*job)->progress().state, HydrationJobState::kFailed);
  EXPECT_TRUE(pool_->health().ok());
  ExpectFsckClean(*pool_);
}

TEST_F(LazyRestoreTest, BitRotInTheStoreIsTheReadsError) {
  Image image;
  const BackupSet set = MakeBackup(2 * kMiB, 5, &image);
  auto job = StartLazyRestore(*pool_, *store_, set.id, "r", {});
  ASSERT_TRUE(job.ok());
  // The last extent's chunk: the start's first read decoded the first's.
  const ChunkExtent& e = set.extents.back();
  ASSERT_NE(e.chunk, set.extents.front().chunk);
  std::string key;
  for (const ChunkInfo& c : set.chunks) {
    if (c.hash == e.chunk) key = c.key;
  }
  ASSERT_TRUE(store_
                  ->TamperForTest(
                      key, [](std::vector<std::byte>& b) { b[b.size() / 2] ^= std::byte{1}; },
                      /*consistent=*/false)
                  .ok());
  Image block(kBlock);
  Status s = (*pool_->OpenVolume("r"))->Read(e.offset_bytes / kBlock * kBlock, block);
  ASSERT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("set " + set.id), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find(e.chunk), std::string::npos) << s.ToString();
}

TEST_F(LazyRestoreTest, RefusesWhatItCannotRestoreAndLeavesNothing) {
  Image image;
  MakeBackup(2 * kMiB, 6, &image, BackupMethod::kFull);
  const BackupSet incr = MakeBackup(2 * kMiB, 7, &image, BackupMethod::kIncr);
  auto job = StartLazyRestore(*pool_, *store_, incr.id, "r", {});
  EXPECT_TRUE(job.status().IsInvalidArgument()) << job.status().ToString();
  EXPECT_FALSE(pool_->GetVolume("r").ok()) << "a refused restore leaves no volume";
  EXPECT_TRUE(StartLazyRestore(*pool_, *store_, "S999", "r", {}).status().IsNotFound());
  LazyRestoreOptions bad;
  bad.rate_mb_per_s = -1;
  EXPECT_TRUE(StartLazyRestore(*pool_, *store_, incr.id, "r", bad).status().IsInvalidArgument());
  ASSERT_TRUE(pool_->CreateVolume("taken", kMiB).ok());
  const BackupSet snap = MakeBackup(2 * kMiB, 8, &image);
  EXPECT_TRUE(StartLazyRestore(*pool_, *store_, snap.id, "taken", {}).status().IsAlreadyExists());
  EXPECT_TRUE(ResumeHydration(*pool_, "taken", *store_, {}).status().IsNotFound());

  // Resuming against another store that has a set of the same id but other
  // contents is refused.
  job = StartLazyRestore(*pool_, *store_, snap.id, "r", {});
  ASSERT_TRUE(job.ok());
  job->reset();
  ASSERT_TRUE(pool_->Commit().ok());
  MemoryWormStore other(SmallChunks());
  auto other_dev = testing::NewMemoryDevice(64 * kMiB);
  auto other_pool = testing::MustCreatePool(*other_dev);
  ASSERT_TRUE(other_pool->CreateVolume("src", 2 * kMiB).ok());
  BackupSet other_set;
  for (int i = 0; i < 3 && other_set.id != snap.id; ++i) {  // step its sequence up to snap.id
    ASSERT_TRUE((*other_pool->OpenVolume("src"))->Write(0, PatternBytes(100 + i, 8192)).ok());
    BackupOptions options;
    options.worker_threads = 2;
    other_set = *(*BackupJob::Start(*other_pool, other, "src", options))->Run();
  }
  ASSERT_EQ(other_set.id, snap.id);
  pool_.reset();
  pool_ = testing::MustOpenPool(*dev_);
  Status s = ResumeHydration(*pool_, "r", other, {}).status();
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_TRUE(ResumeHydration(*pool_, "r", *store_, {}).ok());
}

TEST_F(LazyRestoreTest, TheRateCapPacesTheFill) {
  Image image;
  const BackupSet set = MakeBackup(8 * kMiB, 9, &image);
  ManualClock clock;
  LazyRestoreOptions options;
  options.clock = &clock;
  options.rate_mb_per_s = 1;  // 10^6 bytes/s
  options.step_bytes = 64 * kKiB;
  auto job = StartLazyRestore(*pool_, *store_, set.id, "r", options);
  ASSERT_TRUE(job.ok());
  Result<HydrationSourceRecord> record = GetHydrationSourceRecord(*pool_, "r");
  ASSERT_TRUE(record.ok()) << record.status().ToString();
  EXPECT_EQ(record->rate_mb_per_s, 1.0) << "recorded, for whoever resumes the fill";
  EXPECT_EQ(record->set_id, set.id);
  for (int i = 0; i < 50; ++i) (*job)->Step();
  const uint64_t at_once = (*job)->progress().filled_bytes;
  EXPECT_GT(at_once, 0u);
  EXPECT_LE(at_once, 64 * kKiB) << "no time passed: one step, then the cap says wait";
  // One second in 10 ms ticks, stepping eagerly: about 10^6 bytes.
  for (int tick = 0; tick < 100; ++tick) {
    clock.AdvanceNs(10'000'000);
    for (int i = 0; i < 5; ++i) (*job)->Step();
  }
  const uint64_t in_1s = (*job)->progress().filled_bytes - at_once;
  EXPECT_GE(in_1s, 1'000'000u - 2 * 64 * kKiB);
  EXPECT_LE(in_1s, 1'000'000u + 2 * 64 * kKiB);
  const HydrationProgress p = (*job)->progress();
  EXPECT_GT(p.rate_bytes_per_s, 0.0);
  EXPECT_GT(p.eta_s, 0.0);
  EXPECT_NEAR(p.eta_s, static_cast<double>(p.pending_bytes) / p.rate_bytes_per_s, 1e-6);
  // Run sleeps on the manual clock (which advances it) until done.
  ASSERT_TRUE((*job)->Run().ok());
  EXPECT_EQ(Diff(ReadImage(**pool_->OpenVolume("r")), image), "");
  EXPECT_GT((*job)->progress().hydrated_after_s, 1.0);
  EXPECT_TRUE(GetHydrationSourceRecord(*pool_, "r").status().IsNotFound());
}

TEST_F(LazyRestoreTest, ABackupOfSmallerBlocksRestoresIntoLargerOnes) {
  Image image;
  const BackupSet set = MakeBackup(4 * kMiB + 4 * kKiB, 10, &image);  // 4 KiB blocks
  auto dev = testing::NewMemoryDevice(128 * kMiB);
  PoolOptions po;
  po.block_bytes = 16384;
  auto pool = testing::MustCreatePool(*dev, po);
  auto job = StartLazyRestore(*pool, *store_, set.id, "r", {});
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  Volume* r = *pool->OpenVolume("r");
  EXPECT_EQ(Diff(ReadImage(*r), image), "");
  ASSERT_TRUE(r->Write(4 * kMiB + 100, PatternBytes(1, 200)).ok());  // the partial last block
  const Image w = PatternBytes(1, 200);
  std::copy(w.begin(), w.end(), image.begin() + 4 * kMiB + 100);
  ASSERT_TRUE((*job)->Run().ok());
  EXPECT_EQ(Diff(ReadImage(*r), image), "");
  ExpectFsckClean(*pool);
}

// ---- Each chunk read from the store once --------------------------------------------

// A volume of `size` random (incompressible) bytes, snapshot-backed up in
// 64 KiB chunks; `set_stored` gets the stored bytes of its distinct chunks.
BackupSet RandomImageBackup(Pool& origin, WormStore& store, uint64_t size, uint64_t seed,
                            Image* image, uint64_t* set_stored) {
  SNAPDISK_CHECK(origin.CreateVolume("rand", size).ok(), "create rand");
  Volume* v = *origin.OpenVolume("rand");
  *image = PatternBytes(seed, size);
  SNAPDISK_CHECK(v->Write(0, *image).ok(), "write rand");
  BackupOptions options;
  options.method = BackupMethod::kSnapshot;
  options.worker_threads = 2;
  auto job = BackupJob::Start(origin, store, "rand", options);
  SNAPDISK_CHECK(job.ok(), job.status().ToString().c_str());
  Result<BackupSet> set = (*job)->Run();
  SNAPDISK_CHECK(set.ok(), set.status().ToString().c_str());
  std::map<std::string, uint64_t> distinct;
  for (const ChunkInfo& c : set->chunks) distinct[c.hash] = c.stored_bytes;
  *set_stored = 0;
  for (const auto& [hash, bytes] : distinct) *set_stored += bytes;
  return *set;
}

// `count` random 4-12 KiB reads anywhere in the volume, a job step after
// every `step_every` (a slow fill); each read checked against `image`.
void RandomReadsDuringFill(Volume& r, HydrationJob& job, const Image& image, std::mt19937_64& rng,
                           int count, int step_every) {
  for (int i = 0; i < count; ++i) {
    const uint64_t length = kBlock * (1 + rng() % 3);
    const uint64_t offset = rng() % (image.size() / kBlock - 3) * kBlock;
    Image got(length);
    ASSERT_TRUE(r.Read(offset, got).ok());
    ASSERT_TRUE(std::equal(got.begin(), got.end(), image.begin() + offset)) << "read at " << offset;
    if (i % step_every == 0) job.Step();
  }
}

TEST_F(LazyRestoreTest, RandomReadsDuringASlowFillReadEachChunkFromTheStoreOnce) {
  const uint64_t seed = testing::TestSeed(1717);
  std::mt19937_64 rng(seed);
  Image image;
  uint64_t set_stored = 0;
  const BackupSet set = RandomImageBackup(*origin_, *store_, 16 * kMiB, seed, &image, &set_stored);
  ASSERT_EQ(set.chunks.size(), 256u);
  LazyRestoreOptions options;
  options.step_bytes = 16 * kBlock;  // a slow fill: the reads are ahead of it
  auto job = StartLazyRestore(*pool_, *store_, set.id, "r", options);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  Volume* r = *pool_->OpenVolume("r");
  ASSERT_NO_FATAL_FAILURE(RandomReadsDuringFill(*r, **job, image, rng, 200, 10));
  const uint64_t pending_mid = pool_->GetHydrationInfo("r")->pending_bytes;
  EXPECT_GT(pending_mid, 0u) << "the fill should still be running";
  ASSERT_TRUE((*job)->Run().ok()) << (*job)->result().ToString();
  const HydrationProgress p = (*job)->progress();
  std::printf(
      "[lazy restore] random reads + fill: %llu bytes read from the store for a set of "
      "%llu stored bytes (%.3fx), %llu chunks\n",
      static_cast<unsigned long long>(p.store_bytes_read),
      static_cast<unsigned long long>(set_stored),
      static_cast<double>(p.store_bytes_read) / static_cast<double>(set_stored),
      static_cast<unsigned long long>(p.chunks_read));
  EXPECT_LE(static_cast<double>(p.store_bytes_read), 1.02 * static_cast<double>(set_stored));
  EXPECT_EQ(p.chunks_read, set.chunks.size());
  EXPECT_LT(p.filled_bytes, p.total_bytes) << "the reads filled part of it";
  EXPECT_EQ(Diff(ReadImage(*r), image), "");
  ExpectFsckClean(*pool_);
}

TEST_F(LazyRestoreTest, AfterAPowerLossTheResumedRestoreStillReadsEachChunkAboutOnce) {
  const uint64_t seed = testing::TestSeed(1718);
  std::mt19937_64 rng(seed);
  Image image;
  uint64_t set_stored = 0;
  const BackupSet set = RandomImageBackup(*origin_, *store_, 16 * kMiB, seed, &image, &set_stored);
  auto dev = testing::MakeDevice(256 * kMiB, 4096);
  ManualClock clock;
  FaultDeviceOptions fault_options;  // power loss modelled
  LazyRestoreOptions options;
  options.step_bytes = 16 * kBlock;
  options.commit_every_bytes = 256 * kKiB;  // a crash refetches at most about this
  uint64_t read_before = 0;
  {
    FaultDevice fault(*dev, fault_options, clock);
    auto pool = testing::MustCreatePool(fault);
    auto job = StartLazyRestore(*pool, *store_, set.id, "r", options);
    ASSERT_TRUE(job.ok()) << job.status().ToString();
    Volume* r = *pool->OpenVolume("r");
    ASSERT_NO_FATAL_FAILURE(RandomReadsDuringFill(*r, **job, image, rng, 100, 10));
    read_before = (*job)->progress().store_bytes_read;
    ASSERT_GT(pool->GetHydrationInfo("r")->pending_bytes, 0u);
    fault.FailNow();  // the power goes: what was not committed is lost
    ASSERT_TRUE(fault.Crash(seed).ok());
    job->reset();
    pool.reset();
  }
  auto pool = testing::MustOpenPool(*dev);
  auto job = ResumeHydration(*pool, "r", *store_, options);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  Volume* r = *pool->OpenVolume("r");
  ASSERT_NO_FATAL_FAILURE(RandomReadsDuringFill(*r, **job, image, rng, 100, 10));
  ASSERT_TRUE((*job)->Run().ok()) << (*job)->result().ToString();
  const uint64_t total = read_before + (*job)->progress().store_bytes_read;
  std::printf(
      "[lazy restore] with a power loss: %llu + %llu bytes read from the store for a set "
      "of %llu stored bytes (%.3fx)\n",
      static_cast<unsigned long long>(read_before),
      static_cast<unsigned long long>((*job)->progress().store_bytes_read),
      static_cast<unsigned long long>(set_stored),
      static_cast<double>(total) / static_cast<double>(set_stored));
  EXPECT_LE(static_cast<double>(total), 1.05 * static_cast<double>(set_stored));
  EXPECT_EQ(Diff(ReadImage(*r), image), "");
  ExpectFsckClean(*pool);
}

// ---- Crashes mid-hydration, through the restore layer -----------------------------

// The restore pool lives on a FaultDevice; the disk dies at device op k, the
// power fails, the pool is reopened and the hydration resumed from the
// volume's attribute. The volume must hold exactly the state of the last
// flush or of a later client write (no flushed write lost, no block reading
// zeros or the backup where a client wrote), before and after the fill.
TEST_F(LazyRestoreTest, LazyRestoreWithConcurrentWritesAndACrashMidHydration) {
  const uint64_t seed = testing::TestSeed(808);
  Image backup_image;
  const BackupSet set = MakeBackup(1 * kMiB, seed, &backup_image);
  std::mt19937_64 rng(seed);
  struct Op {
    int kind;  // 0 write, 1 job step, 2 flush, 3 trim, 4 write in flight during a step
    uint64_t offset, length, data_seed;
  };
  std::vector<Op> ops;
  for (int i = 0; i < 24; ++i) {
    static constexpr int kKinds[] = {0, 0, 0, 1, 1, 1, 2, 3, 4, 4};
    const int kind = kKinds[rng() % 10];
    const uint64_t length = 1 + rng() % (2 * kBlock);
    ops.push_back({kind, rng() % (kMiB - length), length, rng()});
  }
  LazyRestoreOptions options;
  options.step_bytes = 24 * kBlock;
  options.commit_every_bytes = 48 * kBlock;

  struct Outcome {
    std::vector<Image> states;  // [0] durable
    bool usable = false;        // StartLazyRestore returned OK
    uint64_t ops = 0;
  };
  auto run = [&](MemoryDevice& dev, std::optional<uint64_t> fail_at, uint64_t crash_seed) {
    Outcome out;
    ManualClock clock;
    FaultDevice fault(dev, FaultDeviceOptions{}, clock);
    PoolOptions po;
    po.wall_clock_ns = &testing::FixedWallClockNs;
    auto pool = testing::MustCreatePool(fault, po);
    const uint64_t base = fault.ops_submitted();
    if (fail_at) fault.FailAtOpIndex(base + *fail_at);
    Image live = backup_image;
    out.states.push_back(live);
    auto job = StartLazyRestore(*pool, *store_, set.id, "r", options);
    out.usable = job.ok();
    Status s = job.status();
    Volume* r = nullptr;
    if (s.ok()) r = *pool->OpenVolume("r");
    for (size_t i = 0; i < ops.size() && s.ok(); ++i) {
      const Op& op = ops[i];
      const Image data = PatternBytes(op.data_seed, op.length);
      if (op.kind == 0) {
        s = r->Write(op.offset, data);
      } else if (op.kind == 1) {
        (*job)->Step();
        s = (*job)->result();
        if (s.IsCancelled()) s = Status::OK();
      } else if (op.kind == 2) {
        s = r->Flush();
      } else if (op.kind == 3) {
        s = r->Trim(op.offset, op.length);
      } else {
        bool done = false;
        Status ws;
        VolumeRequest q{.op = VolumeOp::kWrite,
                        .offset_bytes = op.offset,
                        .length_bytes = op.length,
                        .data = const_cast<std::byte*>(data.data()),
                        .on_complete = [&](VolumeRequest&, const Status& st) {
                          ws = st;
                          done = true;
                        }};
        s = r->Submit(q);
        if (s.ok()) {
          (*job)->Step();
          while (!done) pool->Poll(1);
          s = ws;
          if (s.ok()) {  // the write completed: a commit may hold it, whatever the job did
            std::copy(data.begin(), data.end(), live.begin() + op.offset);
            out.states.push_back(live);
            s = (*job)->result();
            if (s.IsCancelled()) s = Status::OK();
          }
        }
        if (!s.ok()) break;
        continue;
      }
      if (!s.ok()) break;
      if (op.kind == 0) {
        std::copy(data.begin(), data.end(), live.begin() + op.offset);
        out.states.push_back(live);
      } else if (op.kind == 3) {
        std::fill(live.begin() + op.offset, live.begin() + op.offset + op.length, std::byte{0});
        out.states.push_back(live);
      } else if (op.kind == 2) {
        out.states.assign(1, live);
      }
    }
    out.ops = fault.ops_submitted() - base;
    if (fail_at) {
      EXPECT_TRUE(fault.Crash(crash_seed).ok());
    }
    if (job.ok()) job->reset();
    pool.reset();
    return out;
  };

  auto reference_dev = testing::MakeDevice(64 * kMiB, 4096);
  const Outcome ref = run(*reference_dev, std::nullopt, 0);
  ASSERT_TRUE(ref.usable);
  // Reopens a crashed image, resumes, checks; "" when all is well.
  auto check = [&](MemoryDevice& dev, const Outcome& out, bool* mid_hydration) -> std::string {
    auto opened = Pool::Open(dev, PoolOptions{});
    if (!opened.ok()) return "open: " + opened.status().ToString();
    std::unique_ptr<Pool> pool = std::move(opened).value();
    if (!pool->GetVolume("r").ok()) {
      return out.usable ? "the restored volume is gone after StartLazyRestore returned" : "";
    }
    auto volume = pool->OpenVolume("r");
    if (!volume.ok()) return "open volume: " + volume.status().ToString();
    Volume* r = *volume;
    std::unique_ptr<HydrationJob> job;
    if (pool->GetAttribute("r", kHydrationSourceAttribute).ok()) {
      auto resumed_job = ResumeHydration(*pool, "r", *store_, options);
      if (!resumed_job.ok()) return "resume: " + resumed_job.status().ToString();
      job = std::move(resumed_job).value();
      *mid_hydration = job->progress().pending_bytes > 0;
    } else if (pool->GetHydrationInfo("r")->hydrating) {
      return "hydrating without its hydration-source attribute";
    }
    const Image got = ReadImage(*r);
    bool allowed = false;
    for (const Image& state : out.states) allowed = allowed || got == state;
    if (!allowed) {
      return "the volume is none of the " + std::to_string(out.states.size()) +
             " allowed states (vs the last flush: " + Diff(got, out.states[0]) + ")";
    }
    if (job) {
      if (Status s = job->Run(); !s.ok()) return "finishing: " + s.ToString();
      if (ReadImage(*r) != got) return "the fill changed what the volume reads";
    }
    auto fsck = Fsck::Check(*pool);
    if (!fsck.ok() || !fsck->clean()) {
      return "fsck: " + (fsck.ok() ? fsck->ToString() : fsck.status().ToString());
    }
    return "";
  };
  uint64_t checked = 0, resumed = 0, failures = 0;
  const uint64_t stride = testing::BuiltWithSanitizers() ? 3 : 1;
  for (uint64_t k = 0; k <= ref.ops; k += stride) {
    auto dev = testing::MakeDevice(64 * kMiB, k % 2 ? 512 : 4096);
    const Outcome out = run(*dev, k, seed * 1000 + k);
    ++checked;
    bool mid = false;
    const std::string error = check(*dev, out, &mid);
    resumed += mid;
    if (!error.empty() && ++failures <= 4) {
      ADD_FAILURE() << "seed " << seed << ": disk dies at op " << k << " of " << ref.ops << ": "
                    << error;
    }
  }
  std::printf("[lazy restore crash] %llu crash points, %llu resumed mid-hydration, %llu failing\n",
              static_cast<unsigned long long>(checked), static_cast<unsigned long long>(resumed),
              static_cast<unsigned long long>(failures));
  EXPECT_EQ(failures, 0u);
  EXPECT_GT(resumed, checked / 4);
}

}  // namespace
}  // namespace snapdisk
