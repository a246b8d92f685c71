// What the writer writes, the reader accepts: every object a backup puts in a
// store — manifests, restore indexes, log segments — and every export file,
// over content made to stress dedup (one byte repeated, zeros, the same chunk
// at many offsets, one byte changed, tiny writes, nothing changed at all), for
// every backup method, read back by every reader, and restored byte for byte
// against a model of the volume.
//
// This is the class of bug where a log backup of repetitive data wrote a
// manifest its own reader refused and the whole store became unreadable.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "engine/pool.h"
#include "engine/volume.h"
#include "engine/worm_store.h"
#include "restore/lazy_restore.h"
#include "restore/restore_apply.h"
#include "restore/restore_plan.h"
#include "snapshot/backup.h"
#include "snapshot/backup_export.h"
#include "snapshot/backup_set.h"
#include "snapshot/log_backup.h"
#include "snapshot/restore_index.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

using testing::MustCreatePool;
using testing::NewMemoryDevice;
using testing::PatternBytes;

constexpr uint64_t kKiB = 1024;
constexpr uint64_t kMiB = kKiB * kKiB;
constexpr uint64_t kChunk = 64 * kKiB;
constexpr uint64_t kSize = 3 * kMiB + 12 * kKiB;  // not a multiple of the chunk size

class StoreRoundTripTest : public ::testing::Test {
 protected:
  void SetUp() override {
    WormStoreConfig config;
    config.chunk_bytes = kChunk;  // many chunks per set, so content repeats across them
    config.zstd_level = 1;
    ASSERT_TRUE(CreateDirStore(dir_.File("store"), config).ok());
    DirStoreOptions so;
    so.now_unix_ns = [this] { return now_ns_; };
    auto store = OpenDirStore(dir_.File("store"), so);
    ASSERT_TRUE(store.ok()) << store.status().ToString();
    store_ = std::move(store).value();
    dev_ = NewMemoryDevice(512 * kMiB);
    PoolOptions po;
    po.wall_clock_ns = [this] { return now_ns_; };
    pool_ = MustCreatePool(*dev_, po);
    ASSERT_TRUE(pool_->CreateVolume("v", kSize).ok());
    vol_ = *pool_->OpenVolume("v");
    model_.assign(kSize, std::byte{0});
  }

  void Write(uint64_t offset, std::span<const std::byte> data) {
    ASSERT_TRUE(vol_->Write(offset, data).ok());
    std::copy(data.begin(), data.end(), model_.begin() + static_cast<std::ptrdiff_t>(offset));
    now_ns_ += 1'000'000;
  }

  void Zero(uint64_t offset, uint64_t length, bool trim) {
    ASSERT_TRUE((trim ? vol_->Trim(offset, length) : vol_->WriteZeroes(offset, length)).ok());
    std::fill_n(model_.begin() + static_cast<std::ptrdiff_t>(offset), length, std::byte{0});
    now_ns_ += 1'000'000;
  }

  // A write that stresses dedup; `chunk_template` is reused across calls so
  // identical chunks turn up at many offsets and in many sets.
  void DedupHeavyWrite(std::mt19937_64& rng) {
    const uint64_t kind = rng() % 8;
    const uint64_t offset = rng() % kSize;
    const uint64_t room = kSize - offset;
    switch (kind) {
      case 0: {  // one byte repeated over up to 512 KiB (the issue's -P 0x33)
        const uint64_t len = std::min<uint64_t>(room, 1 + rng() % (512 * kKiB));
        Write(offset, std::vector<std::byte>(len, std::byte{0x33}));
        break;
      }
      case 1: {  // zeros, written as data
        const uint64_t len = std::min<uint64_t>(room, 1 + rng() % (256 * kKiB));
        Write(offset, std::vector<std::byte>(len, std::byte{0}));
        break;
      }
      case 2: {  // the same chunk-sized block at chunk-aligned offsets
        for (int n = 1 + static_cast<int>(rng() % 6); n > 0; --n) {
          const uint64_t at = (rng() % (kSize / kChunk)) * kChunk;
          Write(at, chunk_template_);
        }
        break;
      }
      case 3: {  // one byte changed somewhere
        std::byte b = model_[offset] ^ std::byte{static_cast<uint8_t>(1 + rng() % 255)};
        Write(offset, std::span<const std::byte>(&b, 1));
        break;
      }
      case 4: {  // a copy of another range of the volume, one byte changed
        const uint64_t len = std::min<uint64_t>(room, 1 + rng() % (128 * kKiB));
        const uint64_t from = rng() % (kSize - len + 1);
        std::vector<std::byte> copy(model_.begin() + static_cast<std::ptrdiff_t>(from),
                                    model_.begin() + static_cast<std::ptrdiff_t>(from + len));
        copy[rng() % len] ^= std::byte{0x80};
        Write(offset, copy);
        break;
      }
      case 5:
      case 6: {  // trim or write-zeroes, block-aligned
        const uint64_t at = offset / 4096 * 4096;
        const uint64_t len = std::min<uint64_t>(kSize - at, 4096 * (1 + rng() % 64));
        Zero(at, len, kind == 5);
        break;
      }
      default: {  // random bytes, tiny to large
        const uint64_t len = std::min<uint64_t>(room, 1 + rng() % (rng() % 2 ? 100 : 300 * kKiB));
        Write(offset, PatternBytes(rng(), len));
        break;
      }
    }
  }

  // Every reader over one set just written: listing, lookup, re-encoding,
  // restore index pages, the log stream, an export file and its reader.
  void ReadBack(const BackupSet& written) {
    SCOPED_TRACE("set " + written.id);
    Result<std::vector<BackupSet>> listed = ListBackupSets(*store_);
    ASSERT_TRUE(listed.ok()) << "the store no longer lists: " << listed.status().ToString();
    Result<BackupSet> found = FindBackupSet(*store_, written.id);
    ASSERT_TRUE(found.ok()) << found.status().ToString();
    EXPECT_EQ(found->chunks.size(), written.chunks.size());
    EXPECT_EQ(found->extents.size(), written.extents.size());
    EXPECT_EQ(found->zero_extents.size(), written.zero_extents.size());
    EXPECT_EQ(found->data_bytes, written.data_bytes);
    // The manifest re-encodes to what was stored.
    Result<std::vector<std::byte>> object = store_->Get(found->key);
    ASSERT_TRUE(object.ok()) << object.status().ToString();
    EXPECT_EQ(EncodeManifest(*found),
              std::string(reinterpret_cast<const char*>(object->data()), object->size()));
    Result<std::vector<StorageReport>> report = ReportStorage(*store_);
    ASSERT_TRUE(report.ok()) << report.status().ToString();

    if (written.type == BackupType::kLog) {
      uint64_t records = 0, expect_lsn = written.first_lsn;
      Status s = ForEachLogRecord(*store_, *found, [&](const LogStreamRecord& r) {
        EXPECT_EQ(r.lsn, expect_lsn++);
        ++records;
        return Status::OK();
      });
      ASSERT_TRUE(s.ok()) << s.ToString();
      EXPECT_EQ(records, written.last_lsn - written.first_lsn + 1);
    }
    if (written.restore_index_pages > 0) {
      Result<RestoreIndex> index = FindRestoreIndex(*store_, written.id);
      ASSERT_TRUE(index.ok()) << index.status().ToString();
      ASSERT_TRUE(CheckRestoreIndex(*index, *found).ok());
      for (size_t p = 0; p < index->pages.size(); ++p) {
        Result<RestoreIndexPage> page = ReadRestoreIndexPage(*store_, *index, p);
        ASSERT_TRUE(page.ok()) << page.status().ToString();
      }
    }

    const std::string file = dir_.File(written.id + ".export");
    ExportReport exported;
    Status s = ExportBackupSet(*store_, written.id, file, {}, &exported);
    ASSERT_TRUE(s.ok()) << s.ToString();
    Result<ExportReport> verified = VerifyBackupExport(file);
    ASSERT_TRUE(verified.ok()) << verified.status().ToString();
    EXPECT_EQ(verified->sets.size(), exported.sets.size());
    auto reader = OpenBackupExport(file);
    ASSERT_TRUE(reader.ok()) << reader.status().ToString();
    Result<BackupSet> in_file = (*reader)->FindSet(written.id);
    ASSERT_TRUE(in_file.ok()) << in_file.status().ToString();
    EXPECT_EQ(in_file->sha256, found->sha256);
    if (written.type != BackupType::kLog) {
      // The file restores on its own.
      ExpectRestores((*reader)->store(), RestoreTarget::Backup(written.id), written.id + " file",
                     images_.at(written.last_lsn));
    }
    std::filesystem::remove(file);
  }

  void ExpectRestores(WormStore& store, const RestoreTarget& target, const std::string& what,
                      const std::vector<std::byte>& expected) {
    SCOPED_TRACE(what);
    const std::string name = "r" + std::to_string(++restores_);
    Result<RestoreResult> r = RestoreToNewVolume(*pool_, store, target, name);
    ASSERT_TRUE(r.ok()) << r.status().ToString();
    ExpectVolumeHolds(name, expected);
  }

  void ExpectVolumeHolds(const std::string& name, const std::vector<std::byte>& expected) {
    Volume* v = *pool_->OpenVolume(name);
    ASSERT_GE(v->size_bytes(), expected.size());
    std::vector<std::byte> got(expected.size());
    ASSERT_TRUE(v->Read(0, got).ok());
    auto diff = std::mismatch(got.begin(), got.end(), expected.begin());
    EXPECT_TRUE(diff.first == got.end())
        << name << " differs from the source at byte " << (diff.first - got.begin());
    ASSERT_TRUE(pool_->DeleteVolume(name).ok());
  }

  // Runs `method`; NotFound when there is nothing to ship (log).
  Result<BackupSet> Backup(BackupMethod method) {
    BackupOptions o;
    o.method = method;
    o.worker_threads = 3;
    SNAPDISK_ASSIGN_OR_RETURN(auto job, BackupJob::Start(*pool_, *store_, "v", o));
    return job->Run();
  }

  testing::ScratchDir dir_;
  int64_t now_ns_ = int64_t{1'800'000'000} * 1'000'000'000;
  std::unique_ptr<WormStore> store_;
  std::unique_ptr<MemoryDevice> dev_;
  std::unique_ptr<Pool> pool_;
  Volume* vol_ = nullptr;
  std::vector<std::byte> model_;
  std::vector<std::byte> chunk_template_;
  std::map<uint64_t, std::vector<std::byte>> images_;  // the volume at each backup's LSN
  int restores_ = 0;
};

TEST_F(StoreRoundTripTest, TheIssueCaseALogOfOneRepeatedByteListsAndRestores) {
  // 4 MiB of 0x33: the log stream's chunks after the first are all alike.
  ASSERT_TRUE(pool_->GrowVolume("v", 8 * kMiB).ok());
  model_.resize(8 * kMiB);
  vol_ = *pool_->OpenVolume("v");
  Result<BackupSet> full = Backup(BackupMethod::kFull);
  ASSERT_TRUE(full.ok()) << full.status().ToString();
  images_[full->last_lsn] = model_;
  Write(0, std::vector<std::byte>(4 * kMiB, std::byte{0x33}));
  Result<BackupSet> log = Backup(BackupMethod::kLog);
  ASSERT_TRUE(log.ok()) << log.status().ToString();
  size_t repeats = log->chunks.size();
  {
    std::vector<std::string> hashes;
    for (const ChunkInfo& c : log->chunks) hashes.push_back(c.hash);
    std::sort(hashes.begin(), hashes.end());
    repeats -= std::unique(hashes.begin(), hashes.end()) - hashes.begin();
  }
  EXPECT_GT(repeats, 50u) << "the stream should repeat one chunk many times";
  uint64_t new_chunks = 0;
  for (const ChunkInfo& c : log->chunks) new_chunks += c.new_in_set;
  EXPECT_LE(new_chunks, log->chunks.size() - repeats) << "a repeated chunk is stored once";
  images_[log->last_lsn] = model_;
  ReadBack(*log);
  ExpectRestores(*store_, RestoreTarget::Lsn("v", log->last_lsn), "to the log's end", model_);
  // The store goes on: more backups of every kind.
  Write(5 * kMiB, PatternBytes(3, 100 * kKiB));
  Result<BackupSet> incr = Backup(BackupMethod::kIncr);
  ASSERT_TRUE(incr.ok()) << incr.status().ToString();
  Result<BackupSet> snap = Backup(BackupMethod::kSnapshot);
  ASSERT_TRUE(snap.ok()) << snap.status().ToString();
}

TEST_F(StoreRoundTripTest, EveryMethodOverDedupHeavyContentReadsBackAndRestores) {
  const uint64_t seed = testing::TestSeed(1212);
  const int rounds = static_cast<int>(4 * testing::TestScale());
  std::mt19937_64 rng(seed);
  chunk_template_ = PatternBytes(rng(), kChunk);
  bool have_full = false;
  // A first data backup of the empty volume: an empty set.
  const BackupMethod first = rng() % 2 ? BackupMethod::kFull : BackupMethod::kSnapshot;
  std::vector<BackupMethod> order = {first};
  for (int round = 0; round < rounds; ++round) {
    for (BackupMethod m : {BackupMethod::kSnapshot, BackupMethod::kFull, BackupMethod::kDiff,
                           BackupMethod::kIncr, BackupMethod::kLog}) {
      order.push_back(m);
    }
  }
  std::shuffle(order.begin() + 1, order.end(), rng);
  for (size_t i = 0; i < order.size() && !HasFailure(); ++i) {
    BackupMethod method = order[i];
    if (method == BackupMethod::kDiff && !have_full) method = BackupMethod::kFull;
    if (method == BackupMethod::kIncr && !have_full) method = BackupMethod::kFull;
    // Sometimes nothing changes between two backups: empty incrementals,
    // snapshots that share everything.
    const int writes = i == 0 || rng() % 5 == 0 ? 0 : 1 + static_cast<int>(rng() % 12);
    for (int w = 0; w < writes; ++w) DedupHeavyWrite(rng);
    SCOPED_TRACE("backup " + std::to_string(i) + " " + BackupMethodName(method) + ", " +
                 std::to_string(writes) + " writes before");
    Result<BackupSet> set = Backup(method);
    if (method == BackupMethod::kLog && writes == 0) {
      // Nothing new since the last log backup, or only records already shipped.
      if (!set.ok()) {
        EXPECT_TRUE(set.status().IsNotFound()) << set.status().ToString();
        continue;
      }
    }
    ASSERT_TRUE(set.ok()) << set.status().ToString();
    have_full = have_full || set->type == BackupType::kFull;
    images_[set->last_lsn] = model_;
    ReadBack(*set);
    if (set->type == BackupType::kLog) {
      ExpectRestores(*store_, RestoreTarget::Lsn("v", set->last_lsn), set->id + " by LSN",
                     model_);
    } else {
      ExpectRestores(*store_, RestoreTarget::Backup(set->id), set->id, model_);
    }
    if (set->type == BackupType::kSnapshot || set->type == BackupType::kFull) {
      // Instant restore reads the restore index and chunks on demand.
      const std::string name = "lazy" + std::to_string(i);
      auto job = StartLazyRestore(*pool_, *store_, set->id, name, {});
      ASSERT_TRUE(job.ok()) << job.status().ToString();
      Status run = (*job)->Run();
      ASSERT_TRUE(run.ok()) << run.ToString();
      job->reset();
      ExpectVolumeHolds(name, model_);
    }
  }
  // Every set still lists and restores at the end (nothing a later set wrote
  // broke an earlier one).
  Result<std::vector<BackupSet>> all = ListBackupSets(*store_, "v");
  ASSERT_TRUE(all.ok()) << all.status().ToString();
  for (const BackupSet& s : *all) {
    if (s.type == BackupType::kLog || HasFailure()) continue;
    ExpectRestores(*store_, RestoreTarget::Backup(s.id), s.id + " at the end",
                   images_.at(s.last_lsn));
  }
}

}  // namespace
}  // namespace snapdisk
