// Restore indexes (snapshot/restore_index.h) of real backups in a
// MemoryWormStore: the pages hold exactly the manifest's extents, an instant
// restore reads across page boundaries, starts by reading the top, one page
// and one chunk whatever the set's size, and checks the index against the
// manifest; damaged pages and tops are Corruption; a set whose top is missing
// restores from its manifest; a failed manifest put leaves pages no retry
// collides with; extending a set extends its index.
#include "snapshot/restore_index.h"

#include <gtest/gtest.h>

#include "engine/pool.h"
#include "restore/lazy_restore.h"
#include "snapshot/backup.h"
#include "support/crash_oracle.h"
#include "engine/memory_worm_store.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

using testing::Image;
using testing::PatternBytes;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = kKiB * kKiB;
constexpr uint64_t kChunk = 64 * kKiB;
constexpr int64_t kDayNs = int64_t{86400} * 1'000'000'000;

WormStoreConfig SmallChunks() {
  WormStoreConfig c;
  c.chunk_bytes = kChunk;
  return c;
}

class RestoreIndexTest : public ::testing::Test {
 protected:
  void SetUp() override {
    origin_dev_ = testing::NewMemoryDevice(256 * kMiB);
    origin_ = testing::MustCreatePool(*origin_dev_);
    store_ = std::make_unique<MemoryWormStore>(SmallChunks());
    dev_ = testing::NewMemoryDevice(256 * kMiB);
    pool_ = testing::MustCreatePool(*dev_);
  }

  // "src" written whole, then (when `hole`) with a hole punched in it: with
  // 64 KiB chunks, 70 MiB is 1120 extents, two index pages.
  Image MakeSource(uint64_t size, bool hole) {
    SNAPDISK_CHECK(origin_->CreateVolume("src", size).ok(), "create src");
    Volume* v = *origin_->OpenVolume("src");
    SNAPDISK_CHECK(v->Write(0, PatternBytes(7, size)).ok(), "write src");
    if (hole) SNAPDISK_CHECK(v->Trim(3 * kMiB, 2 * kMiB).ok(), "trim src");
    Image image(size);
    SNAPDISK_CHECK(v->Read(0, image).ok(), "read src");
    return image;
  }

  Result<BackupSet> Backup(BackupMethod method) {
    BackupOptions options;
    options.method = method;
    options.worker_threads = 2;
    auto job = BackupJob::Start(*origin_, *store_, "src", options);
    if (!job.ok()) return job.status();
    return (*job)->Run();
  }

  Image ReadVolume(const std::string& name) {
    Volume* v = *pool_->OpenVolume(name);
    Image out(v->size_bytes());
    Status s = v->Read(0, out);
    EXPECT_TRUE(s.ok()) << s.ToString();
    return out;
  }

  std::unique_ptr<MemoryDevice> origin_dev_;
  std::unique_ptr<Pool> origin_;
  std::unique_ptr<MemoryWormStore> store_;
  std::unique_ptr<MemoryDevice> dev_;
  std::unique_ptr<Pool> pool_;
};

TEST_F(RestoreIndexTest, PagesHoldExactlyTheManifestsExtents) {
  MakeSource(70 * kMiB, /*hole=*/true);
  Result<BackupSet> set = Backup(BackupMethod::kSnapshot);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  ASSERT_GT(set->extents.size(), size_t{kRestoreIndexPageExtents});
  EXPECT_EQ(set->restore_index_pages, 2u);

  Result<RestoreIndex> index = FindRestoreIndex(*store_, set->id);
  ASSERT_TRUE(index.ok()) << index.status().ToString();
  EXPECT_EQ(index->sha256, set->restore_index_sha256);
  EXPECT_EQ(index->extents, set->extents.size());
  EXPECT_EQ(index->volume_size_bytes, set->volume_size_bytes);
  EXPECT_TRUE(CheckRestoreIndex(*index, *set).ok());
  ASSERT_EQ(index->pages.size(), 2u);
  EXPECT_EQ(index->pages[0].end_offset_bytes, index->pages[1].first_offset_bytes);

  std::vector<ChunkExtent> from_pages;
  for (size_t p = 0; p < index->pages.size(); ++p) {
    Result<RestoreIndexPage> page = ReadRestoreIndexPage(*store_, *index, p);
    ASSERT_TRUE(page.ok()) << page.status().ToString();
    for (const RestoreIndexPage::Extent& e : page->extents) {
      const ChunkInfo& c = page->chunks[e.chunk];
      from_pages.push_back({e.offset_bytes, e.length_bytes, c.hash, e.chunk_offset_bytes});
      EXPECT_EQ(c.key, ChunkKey(c.hash));
    }
  }
  ASSERT_EQ(from_pages.size(), set->extents.size());
  for (size_t i = 0; i < from_pages.size(); ++i) {
    const ChunkExtent& a = from_pages[i];
    const ChunkExtent& b = set->extents[i];
    ASSERT_TRUE(a.offset_bytes == b.offset_bytes && a.length_bytes == b.length_bytes &&
                a.chunk == b.chunk && a.chunk_offset_bytes == b.chunk_offset_bytes)
        << "extent " << i;
  }
  EXPECT_TRUE(ReadRestoreIndexPage(*store_, *index, 2).status().IsInvalidArgument());
}

TEST_F(RestoreIndexTest, OnlyCompleteImagesHaveOne) {
  MakeSource(4 * kMiB, false);
  Result<BackupSet> full = Backup(BackupMethod::kFull);
  ASSERT_TRUE(full.ok());
  EXPECT_EQ(full->restore_index_pages, 1u);
  EXPECT_TRUE(FindRestoreIndex(*store_, full->id).ok());
  ASSERT_TRUE((*origin_->OpenVolume("src"))->Write(0, PatternBytes(8, 4096)).ok());
  Result<BackupSet> incr = Backup(BackupMethod::kIncr);
  ASSERT_TRUE(incr.ok());
  EXPECT_EQ(incr->restore_index_pages, 0u);
  EXPECT_TRUE(incr->restore_index_sha256.empty());
  EXPECT_TRUE(FindRestoreIndex(*store_, incr->id).status().IsNotFound());
  EXPECT_TRUE(RestoreIndexKeys(*incr).empty());
  EXPECT_TRUE(FindRestoreIndex(*store_, "S99").status().IsNotFound());
  EXPECT_TRUE(FindRestoreIndex(*store_, "bogus").status().IsInvalidArgument());
}

TEST_F(RestoreIndexTest, AnInstantRestoreReadsAcrossPagesAndStartsSmall) {
  const Image image = MakeSource(70 * kMiB, /*hole=*/true);
  Result<BackupSet> set = Backup(BackupMethod::kSnapshot);
  ASSERT_TRUE(set.ok());
  Result<RestoreIndex> index = FindRestoreIndex(*store_, set->id);
  ASSERT_TRUE(index.ok());

  const uint64_t gets = store_->counters().gets;
  auto job = StartLazyRestore(*pool_, *store_, set->id, "r", {});
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  // The top, the first page, and the first read's chunk: not the manifest.
  EXPECT_EQ(store_->counters().gets - gets, 3u);
  EXPECT_EQ((*job)->progress().chunks_read, 1u);
  auto attribute = pool_->GetAttribute("r", kHydrationSourceAttribute);
  ASSERT_TRUE(attribute.ok());
  EXPECT_NE(attribute->find(index->sha256), std::string::npos) << *attribute;

  // A read across the boundary of the two pages, before any fill.
  Volume* r = *pool_->OpenVolume("r");
  const uint64_t boundary = index->pages[0].end_offset_bytes;
  Image across(64 * kKiB);
  ASSERT_TRUE(r->Read(boundary - 32 * kKiB, across).ok());
  EXPECT_TRUE(std::equal(across.begin(), across.end(),
                         image.begin() + static_cast<std::ptrdiff_t>(boundary - 32 * kKiB)));
  EXPECT_EQ(ReadVolume("r"), image);

  // The job's first step reads the manifest and checks the index against it.
  const uint64_t before_step = store_->counters().gets;
  EXPECT_FALSE((*job)->Step());
  EXPECT_EQ(store_->counters().gets - before_step, 1u);
  Status s = (*job)->Run();
  ASSERT_TRUE(s.ok()) << s.ToString();
  EXPECT_EQ(ReadVolume("r"), image);
  EXPECT_FALSE(pool_->GetHydrationInfo("r")->hydrating);
}

TEST_F(RestoreIndexTest, DamagedPagesAndTopsAreCorruption) {
  const Image image = MakeSource(70 * kMiB, /*hole=*/false);
  Result<BackupSet> set = Backup(BackupMethod::kSnapshot);
  ASSERT_TRUE(set.ok());
  const std::vector<std::string> keys = RestoreIndexKeys(*set);
  ASSERT_EQ(keys.size(), 3u);  // the top, two pages

  // A page rewritten behind the store's back (its object checksum made to
  // match): the top's hash of it catches it at the read that needs it.
  ASSERT_TRUE(store_
                  ->TamperForTest(
                      keys[2], [](std::vector<std::byte>& b) { b[b.size() - 3] ^= std::byte{1}; },
                      /*consistent=*/true)
                  .ok());
  auto job = StartLazyRestore(*pool_, *store_, set->id, "r", {});
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  Image block(4096);
  Status s = (*pool_->OpenVolume("r"))->Read(image.size() - 4096, block);
  ASSERT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("restore index of set " + set->id + ", page 1"), std::string::npos)
      << s.ToString();
  job->reset();
  ASSERT_TRUE(pool_->DeleteVolume("r").ok());

  // A top rewritten (still valid JSON, so it decodes): the restore starts,
  // and the job's check against the manifest stops it.
  ASSERT_TRUE(store_
                  ->TamperForTest(
                      keys[0], [](std::vector<std::byte>& b) { b.push_back(std::byte{' '}); },
                      /*consistent=*/true)
                  .ok());
  job = StartLazyRestore(*pool_, *store_, set->id, "r", {});
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  s = (*job)->Run();
  ASSERT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("is not the one set " + set->id + "'s manifest records"),
            std::string::npos)
      << s.ToString();
  EXPECT_EQ((*job)->progress().state, HydrationJobState::kFailed);

  // A top that is not JSON at all.
  ASSERT_TRUE(store_
                  ->TamperForTest(
                      keys[0], [](std::vector<std::byte>& b) { b[0] = std::byte{'x'}; },
                      /*consistent=*/true)
                  .ok());
  EXPECT_TRUE(FindRestoreIndex(*store_, set->id).status().IsCorruption());
}

TEST_F(RestoreIndexTest, ASetWhoseTopIsMissingRestoresFromItsManifest) {
  const Image image = MakeSource(8 * kMiB, /*hole=*/true);
  // The second put under "sets/" is the top, after the manifest: the set
  // is made, without a top.
  store_->FailPutsAfter("sets/", 1);
  Result<BackupSet> set = Backup(BackupMethod::kSnapshot);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  store_->ClearFaults();
  EXPECT_TRUE(FindRestoreIndex(*store_, set->id).status().IsNotFound());
  auto job = StartLazyRestore(*pool_, *store_, set->id, "r", {});
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  auto attribute = pool_->GetAttribute("r", kHydrationSourceAttribute);
  ASSERT_TRUE(attribute.ok());
  EXPECT_NE(attribute->find("manifest_sha256"), std::string::npos) << *attribute;
  ASSERT_TRUE((*job)->Run().ok());
  EXPECT_EQ(ReadVolume("r"), image);
}

TEST_F(RestoreIndexTest, AFailedManifestPutLeavesPagesARetryDoesNotCollideWith) {
  const Image image = MakeSource(8 * kMiB, /*hole=*/false);
  store_->FailPutsAfter("sets/", 0);
  Result<BackupSet> failed = Backup(BackupMethod::kSnapshot);
  ASSERT_FALSE(failed.ok());
  store_->ClearFaults();
  size_t leftover_pages = 0;
  for (const std::string& key : store_->Keys()) leftover_pages += key.rfind("index/", 0) == 0;
  EXPECT_EQ(leftover_pages, 1u);
  // The retry gets the same id (no manifest took it) and new page keys.
  Result<BackupSet> set = Backup(BackupMethod::kSnapshot);
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  auto job = StartLazyRestore(*pool_, *store_, set->id, "r", {});
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  ASSERT_TRUE((*job)->Run().ok());
  EXPECT_EQ(ReadVolume("r"), image);
}

TEST_F(RestoreIndexTest, ExtendingASetExtendsItsIndex) {
  MakeSource(70 * kMiB, /*hole=*/false);
  Result<BackupSet> set = Backup(BackupMethod::kSnapshot);
  ASSERT_TRUE(set.ok());
  const int64_t until = store_->NowUnixNs() + 400 * kDayNs;
  ASSERT_TRUE(ExtendBackupSet(*store_, set->id, until).ok());
  const std::vector<std::string> keys = RestoreIndexKeys(*set);
  ASSERT_EQ(keys.size(), 3u);
  for (const std::string& key : keys) {
    Result<WormObjectInfo> info = store_->Head(key);
    ASSERT_TRUE(info.ok()) << key << ": " << info.status().ToString();
    EXPECT_EQ(info->retain_until_unix_ns, until) << key;
  }
}

}  // namespace
}  // namespace snapdisk
