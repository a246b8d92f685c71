// The engine's write log (Pool, "The write log") and volume attributes:
// records for every mutation, data by reference, durability with commits,
// dropping (shipped, over the limit, under space pressure), the policy lock;
// randomized against a replay oracle.
#include <gtest/gtest.h>

#include <random>

#include "engine/fsck.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

using testing::MustCreatePool;
using testing::MustOpenPool;
using testing::NewMemoryDevice;
using testing::PatternBytes;

constexpr uint64_t kMiB = 1 << 20;

std::vector<Pool::LogRecord> AllRecords(Pool& pool, const std::string& volume) {
  auto records = pool.ReadLog(volume, 0, SIZE_MAX);
  EXPECT_TRUE(records.ok()) << records.status().ToString();
  return records.ok() ? *records : std::vector<Pool::LogRecord>{};
}

void ExpectFsckClean(Pool& pool) {
  auto fsck = Fsck::Check(pool);
  ASSERT_TRUE(fsck.ok()) << fsck.status().ToString();
  EXPECT_TRUE(fsck->clean()) << fsck->ToString();
}

TEST(WriteLogTest, EveryMutationIsARecordWithItsDataAndTime) {
  auto dev = NewMemoryDevice(64 * kMiB);
  int64_t now = 1'700'000'000'000'000'000;
  PoolOptions options;
  options.wall_clock_ns = [&now] { return now; };
  auto pool = MustCreatePool(*dev, options);
  ASSERT_TRUE(pool->CreateVolume("v", 8 * kMiB).ok());
  Volume* v = *pool->OpenVolume("v");
  const auto a = PatternBytes(1, 3 * 4096);
  const auto b = PatternBytes(2, 1000);  // unaligned: a read-modify-write
  ASSERT_TRUE(v->Write(8192, a).ok());
  now += 1000;
  ASSERT_TRUE(v->Write(4096 + 100, b).ok());
  now += 1000;
  ASSERT_TRUE(v->Trim(0, 4096).ok());
  ASSERT_TRUE(v->WriteZeroes(65536, 8192).ok());

  const auto records = AllRecords(*pool, "v");
  ASSERT_EQ(records.size(), 4u);
  const VolumeInfo info = *pool->GetVolume("v");
  for (size_t i = 0; i < records.size(); ++i) {
    EXPECT_EQ(records[i].index, i + 1);
    EXPECT_EQ(records[i].lsn, i + 1) << "LSNs number the volume's mutations";
    EXPECT_EQ(records[i].lineage, info.lineage);
  }
  EXPECT_EQ(records[0].op, VolumeOp::kWrite);
  EXPECT_EQ(records[0].offset_bytes, 8192u);
  EXPECT_EQ(records[0].length_bytes, a.size());
  EXPECT_EQ(records[1].time_unix_ns, records[0].time_unix_ns + 1000);
  EXPECT_EQ(records[2].op, VolumeOp::kTrim);
  EXPECT_EQ(records[3].op, VolumeOp::kWriteZeroes);

  std::vector<std::byte> got(a.size());
  ASSERT_TRUE(pool->ReadLogData("v", records[0], got).ok());
  EXPECT_EQ(got, a);
  got.resize(b.size());
  ASSERT_TRUE(pool->ReadLogData("v", records[1], got).ok());
  EXPECT_EQ(got, b);
  EXPECT_TRUE(pool->ReadLogData("v", records[2], got).IsInvalidArgument());

  // The log keeps the data after the volume overwrites it.
  ASSERT_TRUE(v->Write(8192, PatternBytes(3, 3 * 4096)).ok());
  got.resize(a.size());
  ASSERT_TRUE(pool->ReadLogData("v", records[0], got).ok());
  EXPECT_EQ(got, a);
  ExpectFsckClean(*pool);
}

TEST(WriteLogTest, FlushedRecordsSurviveReopenAndUnflushedOnesGoWithTheirWrites) {
  auto live = NewMemoryDevice(64 * kMiB);
  std::unique_ptr<MemoryDevice> dev;  // the device as a crash leaves it
  {
    auto pool = MustCreatePool(*live);
    ASSERT_TRUE(pool->CreateVolume("v", 8 * kMiB).ok());
    Volume* v = *pool->OpenVolume("v");
    // More records than one record block holds, across several commits.
    for (int i = 0; i < 150; ++i) {
      ASSERT_TRUE(v->Write(uint64_t(i % 40) * 4096, PatternBytes(100 + i, 4096)).ok());
      if (i % 37 == 0) {
        ASSERT_TRUE(v->Flush().ok());
      }
    }
    ASSERT_TRUE(v->Flush().ok());
    ASSERT_TRUE(v->Write(0, PatternBytes(999, 4096)).ok());  // never flushed
    dev = live->Clone();  // a crash here: the unflushed write's record is not committed
  }
  auto pool = MustOpenPool(*dev);
  const auto records = AllRecords(*pool, "v");
  ASSERT_EQ(records.size(), 150u);
  std::vector<std::byte> got(4096);
  for (int i = 0; i < 150; ++i) {
    ASSERT_TRUE(pool->ReadLogData("v", records[i], got).ok()) << i;
    EXPECT_EQ(got, PatternBytes(100 + i, 4096)) << "record " << i;
  }
  ExpectFsckClean(*pool);
}

TEST(WriteLogTest, DroppingShippedRecordsFreesTheirBlocks) {
  auto dev = NewMemoryDevice(64 * kMiB);
  auto pool = MustCreatePool(*dev);
  ASSERT_TRUE(pool->CreateVolume("v", 8 * kMiB).ok());
  Volume* v = *pool->OpenVolume("v");
  for (int i = 0; i < 100; ++i) ASSERT_TRUE(v->Write(0, PatternBytes(i, 64 * 1024)).ok());
  ASSERT_TRUE(v->Flush().ok());
  const uint64_t used_with_log = pool->Info().used_bytes;
  auto info = *pool->GetLogInfo("v");
  EXPECT_EQ(info.records, 100u);
  EXPECT_EQ(info.referenced_bytes, 100u * 64 * 1024);

  ASSERT_TRUE(pool->DropLog("v", 60).ok());
  info = *pool->GetLogInfo("v");
  EXPECT_EQ(info.first_index, 61u);
  EXPECT_EQ(info.records, 40u);
  EXPECT_EQ(info.dropped_through, 0u) << "shipped records are not a gap";
  const auto rest = AllRecords(*pool, "v");
  ASSERT_EQ(rest.size(), 40u);
  EXPECT_EQ(rest.front().index, 61u);
  std::vector<std::byte> got(64 * 1024);
  ASSERT_TRUE(pool->ReadLogData("v", rest.front(), got).ok());
  EXPECT_EQ(got, PatternBytes(60, 64 * 1024));

  ASSERT_TRUE(pool->DropLog("v", 1000).ok());  // everything
  ASSERT_TRUE(pool->Commit().ok());
  ASSERT_TRUE(pool->Commit().ok());
  EXPECT_LT(pool->Info().used_bytes + 90 * 64 * 1024, used_with_log);
  EXPECT_EQ(pool->GetLogInfo("v")->records, 0u);
  // New records continue the numbering.
  ASSERT_TRUE(v->Write(0, PatternBytes(7, 4096)).ok());
  EXPECT_EQ(AllRecords(*pool, "v").at(0).index, 101u);
  ExpectFsckClean(*pool);
}

// A pool whose logs without a policy keep at most 1 MiB, with an 8 MiB
// volume "v".
std::unique_ptr<Pool> PoolWithSmallLogLimit(BlockDevice& dev) {
  PoolOptions options;
  options.log_unshipped_limit_bytes = 1 * kMiB;
  auto pool = MustCreatePool(dev, options);
  EXPECT_TRUE(pool->CreateVolume("v", 8 * kMiB).ok());
  return pool;
}

TEST(WriteLogTest, WithoutAPolicyTheLogKeepsAtMostItsLimitAndSaysWhatItDropped) {
  auto dev = NewMemoryDevice(64 * kMiB);
  auto pool = PoolWithSmallLogLimit(*dev);
  Volume* v = *pool->OpenVolume("v");
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(v->Write(uint64_t(i) * 65536, PatternBytes(i, 65536)).ok());
    ASSERT_TRUE(v->Flush().ok());
  }
  const auto info = *pool->GetLogInfo("v");
  EXPECT_LE(info.referenced_bytes, 1 * kMiB);
  EXPECT_GT(info.dropped_through, 0u);
  EXPECT_EQ(info.first_index, info.dropped_through + 1);
  // A policy (required log) keeps everything.
  ASSERT_TRUE(pool->SetLogRequired("v", true).ok());
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(v->Write(uint64_t(i) * 65536, PatternBytes(i, 65536)).ok());
    ASSERT_TRUE(v->Flush().ok());
  }
  EXPECT_GE(pool->GetLogInfo("v")->referenced_bytes, 4 * kMiB);
  ExpectFsckClean(*pool);
}

// Past its limit the log is trimmed by Poll in slices, between requests,
// not by one long drop in the next commit (which held the pool's thread).
TEST(WriteLogTest, ALogPastItsLimitIsTrimmedByPollWithoutACommit) {
  auto dev = NewMemoryDevice(64 * kMiB);
  auto pool = PoolWithSmallLogLimit(*dev);
  Volume* v = *pool->OpenVolume("v");
  ASSERT_TRUE(pool->Commit().ok());
  const uint64_t generation = pool->Info().generation;
  uint64_t max_referenced = 0;
  for (int i = 0; i < 64; ++i) {
    ASSERT_TRUE(v->Write(uint64_t(i) * 65536, PatternBytes(i, 65536)).ok());  // polls; no flush
    max_referenced = std::max(max_referenced, pool->GetLogInfo("v")->referenced_bytes);
  }
  EXPECT_EQ(pool->Info().generation, generation) << "nothing committed";
  const auto info = *pool->GetLogInfo("v");
  EXPECT_LE(max_referenced, 1 * kMiB);
  EXPECT_GT(info.dropped_through, 0u);
  EXPECT_EQ(info.first_index, info.dropped_through + 1);
  EXPECT_EQ(pool->NextTimerNs(), INT64_MAX) << "no background work left";
  // What is kept reads back: the newest records' data.
  const auto records = AllRecords(*pool, "v");
  ASSERT_FALSE(records.empty());
  std::vector<std::byte> data(records.back().length_bytes);
  ASSERT_TRUE(pool->ReadLogData("v", records.back(), data).ok());
  EXPECT_EQ(data, PatternBytes(63, 65536));
  ExpectFsckClean(*pool);
}

TEST(WriteLogTest, AFullPoolDropsLogsNoPolicyRequires) {
  auto dev = NewMemoryDevice(16 * kMiB);
  auto pool = MustCreatePool(*dev);
  const uint64_t size = pool->Info().free_bytes / 2 / 4096 * 4096;
  ASSERT_TRUE(pool->CreateVolume("v", size).ok());
  Volume* v = *pool->OpenVolume("v");
  // Overwrite the volume three times: the log would need twice the space.
  for (int round = 0; round < 3; ++round) {
    for (uint64_t off = 0; off + 65536 <= size; off += 65536) {
      Status s = v->Write(off, PatternBytes(round * 1000 + off, 65536));
      ASSERT_TRUE(s.ok()) << "round " << round << " offset " << off << ": " << s.ToString();
    }
  }
  EXPECT_GT(pool->GetLogInfo("v")->dropped_through, 0u);
  ExpectFsckClean(*pool);
}

TEST(WriteLogTest, ARequiredLogCannotBeTurnedOffAndOffDropsEverything) {
  auto dev = NewMemoryDevice(64 * kMiB);
  auto pool = MustCreatePool(*dev);
  ASSERT_TRUE(pool->CreateVolume("v", 8 * kMiB).ok());
  Volume* v = *pool->OpenVolume("v");
  ASSERT_TRUE(v->Write(0, PatternBytes(1, 8192)).ok());
  ASSERT_TRUE(pool->SetLogRequired("v", true).ok());
  Status s = pool->SetLogEnabled("v", false);
  EXPECT_TRUE(s.IsPermissionDenied()) << s.ToString();
  EXPECT_NE(s.message().find("backup policy"), std::string::npos) << s.ToString();
  ASSERT_TRUE(pool->SetLogRequired("v", false).ok());
  ASSERT_TRUE(pool->SetLogEnabled("v", false).ok());
  auto info = *pool->GetLogInfo("v");
  EXPECT_FALSE(info.enabled);
  EXPECT_EQ(info.records, 0u);
  EXPECT_EQ(info.dropped_through, 1u);
  ASSERT_TRUE(v->Write(0, PatternBytes(2, 8192)).ok());
  EXPECT_EQ(pool->GetLogInfo("v")->records, 0u) << "an off log records nothing";
  ASSERT_TRUE(pool->SetLogEnabled("v", true).ok());
  ASSERT_TRUE(v->Write(0, PatternBytes(3, 8192)).ok());
  info = *pool->GetLogInfo("v");
  EXPECT_EQ(info.records, 1u);
  EXPECT_EQ(AllRecords(*pool, "v").at(0).lsn, 3u) << "LSNs count every write, logged or not";
  ExpectFsckClean(*pool);
}

TEST(WriteLogTest, RollbackStartsANewLineageAndClonesTheirOwnLog) {
  auto dev = NewMemoryDevice(64 * kMiB);
  auto pool = MustCreatePool(*dev);
  ASSERT_TRUE(pool->CreateVolume("v", 8 * kMiB).ok());
  Volume* v = *pool->OpenVolume("v");
  ASSERT_TRUE(v->Write(0, PatternBytes(1, 4096)).ok());
  ASSERT_TRUE(pool->CreateSnapshot("v", "s").ok());
  ASSERT_TRUE(v->Write(0, PatternBytes(2, 4096)).ok());
  const uint64_t old_lineage = pool->GetVolume("v")->lineage;
  ASSERT_TRUE(pool->Rollback("v", "s").ok());
  ASSERT_TRUE(v->Write(4096, PatternBytes(3, 4096)).ok());
  const auto records = AllRecords(*pool, "v");
  ASSERT_EQ(records.size(), 3u);
  EXPECT_EQ(records[1].lineage, old_lineage);
  EXPECT_NE(records[2].lineage, old_lineage);
  EXPECT_EQ(records[2].lsn, 2u) << "the new lineage continues from the snapshot's LSN";
  ASSERT_TRUE(pool->Clone("v", "s", "c").ok());
  EXPECT_EQ(pool->GetLogInfo("c")->records, 0u);
  ASSERT_TRUE(pool->DeleteSnapshot("v", "s").ok());
  ASSERT_TRUE(pool->DeleteVolume("v").ok());
  ExpectFsckClean(*pool);
}

// Random writes, trims and drops; replaying the kept records over the volume
// as it was before them must give the volume.
TEST(WriteLogTest, RandomWorkloadReplaysToTheVolume) {
  const uint64_t seed = testing::TestSeed(515);
  std::mt19937_64 rng(seed);
  auto dev = NewMemoryDevice(128 * kMiB);
  auto pool = MustCreatePool(*dev);
  const uint64_t size = 4 * kMiB;
  ASSERT_TRUE(pool->CreateVolume("v", size).ok());
  Volume* v = *pool->OpenVolume("v");
  std::vector<std::byte> base(size), model(size);
  uint64_t base_through = 0;  // records <= this are in `base`
  for (uint64_t step = 0; step < 400 * testing::TestScale(); ++step) {
    const uint64_t off = rng() % size;
    const uint64_t len = 1 + rng() % std::min<uint64_t>(size - off, 3 * 4096);
    const int what = static_cast<int>(rng() % 10);
    if (what < 6) {
      auto data = PatternBytes(rng(), len);
      ASSERT_TRUE(v->Write(off, data).ok());
      std::copy(data.begin(), data.end(), model.begin() + off);
    } else if (what < 8) {
      ASSERT_TRUE((what == 6 ? v->Trim(off, len) : v->WriteZeroes(off, len)).ok());
      std::fill(model.begin() + off, model.begin() + off + len, std::byte{0});
    } else if (what == 8) {
      ASSERT_TRUE(v->Flush().ok());
    } else {
      // "Ship" some records: apply them to the base and drop them.
      const auto records = AllRecords(*pool, "v");
      if (records.empty()) continue;
      const size_t n = 1 + rng() % records.size();
      for (size_t i = 0; i < n; ++i) {
        const auto& r = records[i];
        if (r.op == VolumeOp::kWrite) {
          std::vector<std::byte> data(r.length_bytes);
          ASSERT_TRUE(pool->ReadLogData("v", r, data).ok());
          std::copy(data.begin(), data.end(), base.begin() + r.offset_bytes);
        } else {
          std::fill(base.begin() + r.offset_bytes,
                    base.begin() + r.offset_bytes + r.length_bytes, std::byte{0});
        }
      }
      base_through = records[n - 1].index;
      ASSERT_TRUE(pool->DropLog("v", base_through).ok());
    }
  }
  std::vector<std::byte> replay = base;
  for (const auto& r : AllRecords(*pool, "v")) {
    ASSERT_GT(r.index, base_through);
    if (r.op == VolumeOp::kWrite) {
      std::vector<std::byte> data(r.length_bytes);
      ASSERT_TRUE(pool->ReadLogData("v", r, data).ok());
      std::copy(data.begin(), data.end(), replay.begin() + r.offset_bytes);
    } else {
      std::fill(replay.begin() + r.offset_bytes, replay.begin() + r.offset_bytes + r.length_bytes,
                std::byte{0});
    }
  }
  EXPECT_TRUE(replay == model) << "seed " << seed;
  std::vector<std::byte> got(size);
  ASSERT_TRUE(v->Read(0, got).ok());
  EXPECT_TRUE(got == model);
  ExpectFsckClean(*pool);
}

TEST(VolumeAttributeTest, SetGetReplaceRemoveAndPersist) {
  auto dev = NewMemoryDevice(64 * kMiB);
  const std::string big(10000, 'x');
  {
    auto pool = MustCreatePool(*dev);
    ASSERT_TRUE(pool->CreateVolume("v", 8 * kMiB).ok());
    EXPECT_TRUE(pool->GetAttribute("v", "policy").status().IsNotFound());
    ASSERT_TRUE(pool->SetAttribute("v", "policy", "first").ok());
    EXPECT_EQ(*pool->GetAttribute("v", "policy"), "first");
    ASSERT_TRUE(pool->SetAttribute("v", "policy", big).ok());
    ASSERT_TRUE(pool->SetAttribute("v", "empty", "").ok());
    EXPECT_EQ(*pool->GetAttribute("v", "empty"), "");
    EXPECT_TRUE(pool->SetAttribute("v", "bad/name", "x").IsInvalidArgument());
    EXPECT_TRUE(pool->SetAttribute("v", "huge", std::string(65537, 'y')).IsInvalidArgument());
    EXPECT_TRUE(pool->SetAttribute("nope", "k", "x").IsNotFound());
    EXPECT_EQ(pool->Info().volumes, 1u);
    EXPECT_EQ(pool->Info().snapshots, 0u) << "attributes and logs are not snapshots";
    ASSERT_TRUE(pool->Close().ok());
  }
  auto pool = MustOpenPool(*dev);
  EXPECT_EQ(*pool->GetAttribute("v", "policy"), big);
  ASSERT_TRUE(pool->RemoveAttribute("v", "empty").ok());
  EXPECT_TRUE(pool->GetAttribute("v", "empty").status().IsNotFound());
  ExpectFsckClean(*pool);
  const uint64_t used = pool->Info().used_bytes;
  ASSERT_TRUE(pool->DeleteVolume("v").ok());
  ASSERT_TRUE(pool->CreateVolume("v", 8 * kMiB).ok());
  EXPECT_TRUE(pool->GetAttribute("v", "policy").status().IsNotFound())
      << "attributes go with their volume";
  ASSERT_TRUE(pool->Commit().ok());
  ASSERT_TRUE(pool->Commit().ok());
  EXPECT_LT(pool->Info().used_bytes, used);
  ExpectFsckClean(*pool);
}

}  // namespace
}  // namespace snapdisk
