#include "engine/pool.h"

#include <gtest/gtest.h>

#include <thread>

#include "disk/clock.h"
#include "engine/fsck.h"
#include "engine/volume.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

using testing::MustCreatePool;
using testing::MustOpenPool;
using testing::NewMemoryDevice;
using testing::PatternBytes;
using testing::ReadAll;

constexpr uint64_t kMiB = 1 << 20;

TEST(PoolTest, CreateWriteReopenRead) {
  auto dev = NewMemoryDevice(256 * kMiB);
  auto data = PatternBytes(1, 64 * 1024);
  {
    auto pool = MustCreatePool(*dev);
    ASSERT_TRUE(pool->CreateVolume("db", 64 * kMiB).ok());
    Volume* v = *pool->OpenVolume("db");
    ASSERT_TRUE(v->Write(4096 * 10, data).ok());
    EXPECT_EQ(ReadAll(*v, 4096 * 10, data.size()), data);
    ASSERT_TRUE(v->Flush().ok());
  }
  auto pool = MustOpenPool(*dev);
  auto info = pool->GetVolume("db");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->size_bytes, 64 * kMiB);
  Volume* v = *pool->OpenVolume("db");
  EXPECT_EQ(ReadAll(*v, 4096 * 10, data.size()), data);
  auto zeros = ReadAll(*v, 0, 4096);
  EXPECT_EQ(zeros, std::vector<std::byte>(4096));
}

TEST(PoolTest, MapExtentsDescribeHolesAndData) {
  auto dev = NewMemoryDevice(64 * kMiB);
  auto pool = MustCreatePool(*dev);
  ASSERT_TRUE(pool->CreateVolume("v", 8 * kMiB).ok());
  Volume* v = *pool->OpenVolume("v");
  ASSERT_TRUE(v->Write(8192, PatternBytes(1, 8192)).ok());  // blocks 2-3
  ASSERT_TRUE(v->Write(kMiB, PatternBytes(2, 100)).ok());   // block 256, partially
  auto all = v->MapExtents(0, 8 * kMiB);
  ASSERT_TRUE(all.ok());
  ASSERT_EQ(all->size(), 5u);
  EXPECT_EQ((*all)[0].offset_bytes, 0u);
  EXPECT_TRUE((*all)[0].zero);
  EXPECT_EQ((*all)[1].offset_bytes, 8192u);
  EXPECT_EQ((*all)[1].length_bytes, 8192u);
  EXPECT_FALSE((*all)[1].zero);
  EXPECT_EQ((*all)[3].offset_bytes, kMiB);
  EXPECT_EQ((*all)[3].length_bytes, 4096u);
  EXPECT_EQ((*all)[4].offset_bytes + (*all)[4].length_bytes, 8 * kMiB);
  auto part = v->MapExtents(9000, 10);  // inside block 2
  ASSERT_TRUE(part.ok());
  ASSERT_EQ(part->size(), 1u);
  EXPECT_EQ((*part)[0].offset_bytes, 9000u);
  EXPECT_EQ((*part)[0].length_bytes, 10u);
  EXPECT_FALSE((*part)[0].zero);
  EXPECT_TRUE(v->MapExtents(8 * kMiB, 1).status().IsInvalidArgument());
}

TEST(PoolTest, UnalignedWritesReadModifyWrite) {
  auto dev = NewMemoryDevice(64 * kMiB);
  auto pool = MustCreatePool(*dev);
  ASSERT_TRUE(pool->CreateVolume("v", 8 * kMiB).ok());
  Volume* v = *pool->OpenVolume("v");
  std::vector<std::byte> model(64 * 1024);
  auto a = PatternBytes(2, 10000);
  ASSERT_TRUE(v->Write(1234, a).ok());
  std::copy(a.begin(), a.end(), model.begin() + 1234);
  auto b = PatternBytes(3, 17);
  ASSERT_TRUE(v->Write(4090, b).ok());
  std::copy(b.begin(), b.end(), model.begin() + 4090);
  ASSERT_TRUE(v->Trim(5000, 3000).ok());
  std::fill(model.begin() + 5000, model.begin() + 8000, std::byte{0});
  EXPECT_EQ(ReadAll(*v, 0, model.size()), model);
  EXPECT_EQ(ReadAll(*v, 4093, 11),
            std::vector<std::byte>(model.begin() + 4093, model.begin() + 4104));
}

TEST(PoolTest, SnapshotIsolationCloneRollbackDiff) {
  auto dev = NewMemoryDevice(128 * kMiB);
  auto pool = MustCreatePool(*dev);
  ASSERT_TRUE(pool->CreateVolume("v", 16 * kMiB).ok());
  Volume* v = *pool->OpenVolume("v");
  auto one = PatternBytes(10, 1 * kMiB);
  ASSERT_TRUE(v->Write(0, one).ok());
  ASSERT_TRUE(pool->CreateSnapshot("v", "s1").ok());
  auto two = PatternBytes(11, 8192);
  ASSERT_TRUE(v->Write(4096 * 3, two).ok());

  auto diff = pool->Diff("v", "s1", "");
  ASSERT_TRUE(diff.ok()) << diff.status().ToString();
  ASSERT_EQ(diff->size(), 1u);
  EXPECT_EQ((*diff)[0].offset_bytes, 4096u * 3);
  EXPECT_EQ((*diff)[0].length_bytes, 8192u);

  Volume* snap = *pool->OpenSnapshot("v", "s1");
  EXPECT_TRUE(snap->read_only());
  EXPECT_EQ(ReadAll(*snap, 0, one.size()), one);
  EXPECT_TRUE(snap->Write(0, two).IsInvalidArgument());
  EXPECT_TRUE(snap->Trim(0, 4096).IsInvalidArgument());
  auto clone = pool->Clone("v", "s1", "c");
  ASSERT_TRUE(clone.ok()) << clone.status().ToString();
  EXPECT_EQ(clone->origin, "v@s1");
  Volume* c = *pool->OpenVolume("c");
  EXPECT_EQ(ReadAll(*c, 0, one.size()), one);
  ASSERT_TRUE(pool->Rollback("v", "s1").ok());
  EXPECT_EQ(ReadAll(*v, 0, one.size()), one);
  ASSERT_TRUE(pool->DeleteSnapshot("v", "s1").ok());
  EXPECT_EQ(ReadAll(*c, 0, one.size()), one);  // independent of its source
  auto snaps = pool->ListSnapshots("v");
  ASSERT_TRUE(snaps.ok());
  EXPECT_TRUE(snaps->empty());
}

TEST(PoolTest, SnapshotBlocksResolveOnThePoolsThreadAndReadFromAnother) {
  auto dev = NewMemoryDevice(128 * kMiB);
  auto pool = MustCreatePool(*dev);
  ASSERT_TRUE(pool->CreateVolume("v", 16 * kMiB).ok());
  Volume* v = *pool->OpenVolume("v");
  const auto data = PatternBytes(20, 64 * 4096);
  ASSERT_TRUE(v->Write(8 * 4096, data).ok());  // blocks 8-71; the rest are holes
  ASSERT_TRUE(pool->CreateSnapshot("v", "s").ok());
  ASSERT_TRUE(v->Write(8 * 4096, PatternBytes(21, 4096)).ok());  // after: not in the snapshot
  Volume* snap = *pool->OpenSnapshot("v", "s");

  // Only a snapshot held in use, inside its size.
  EXPECT_TRUE(pool->ResolveSnapshotBlocks(*v, 0, 1).status().IsInvalidArgument());
  EXPECT_TRUE(pool->ResolveSnapshotBlocks(*snap, 0, 1).status().IsInvalidArgument());
  snap->SetInUse(true);
  EXPECT_TRUE(pool->ResolveSnapshotBlocks(*snap, 4095, 2).status().IsInvalidArgument());

  auto entries = pool->ResolveSnapshotBlocks(*snap, 0, 80);
  ASSERT_TRUE(entries.ok()) << entries.status().ToString();
  ASSERT_EQ(entries->size(), 80u);
  EXPECT_EQ((*entries)[0].pbn, 0u);  // a hole
  EXPECT_NE((*entries)[8].pbn, 0u);  // data
  EXPECT_EQ((*entries)[72].pbn, 0u);
  std::vector<std::byte> got(80 * 4096, std::byte{0xff});
  Status read;
  std::thread([&] { read = pool->ReadResolvedBlocks(*entries, 0, got.data()); }).join();
  ASSERT_TRUE(read.ok()) << read.ToString();
  std::vector<std::byte> want(80 * 4096);
  std::copy(data.begin(), data.end(), want.begin() + 8 * 4096);
  EXPECT_EQ(got, want);

  // A block changed behind the pool's back is named, by its offset.
  std::vector<std::byte> garbage(4096, std::byte{0x5a});
  ASSERT_TRUE(dev->Write((*entries)[10].pbn * 4096, garbage).ok());
  Status bad = pool->ReadResolvedBlocks(*entries, 0, got.data());
  EXPECT_TRUE(bad.IsCorruption()) << bad.ToString();
  EXPECT_NE(bad.message().find("checksum mismatch at offset 40960"), std::string::npos)
      << bad.ToString();
  snap->SetInUse(false);
}

TEST(PoolTest, ErrorsAreClear) {
  auto dev = NewMemoryDevice(64 * kMiB);
  auto pool = MustCreatePool(*dev);
  EXPECT_TRUE(pool->CreateVolume("bad/name", kMiB).status().IsInvalidArgument());
  EXPECT_TRUE(pool->CreateVolume("", kMiB).status().IsInvalidArgument());
  EXPECT_TRUE(pool->CreateVolume(std::string(129, 'a'), kMiB).status().IsInvalidArgument());
  EXPECT_TRUE(pool->CreateVolume("v", 0).status().IsInvalidArgument());
  EXPECT_TRUE(pool->CreateVolume("v", 1000).status().IsInvalidArgument());
  auto pl2 = pool->CreateVolume("v", kMiB, EssdLevel::kPL2);
  EXPECT_TRUE(pl2.status().IsInvalidArgument());
  EXPECT_NE(pl2.status().message().find("461"), std::string::npos) << pl2.status().ToString();
  ASSERT_TRUE(pool->CreateVolume("v", kMiB).ok());
  EXPECT_TRUE(pool->CreateVolume("v", kMiB).status().IsAlreadyExists());
  EXPECT_TRUE(pool->CreateSnapshot("nope", "s").status().IsNotFound());
  EXPECT_TRUE(pool->DeleteSnapshot("v", "nope").IsNotFound());
  Volume* v = *pool->OpenVolume("v");
  std::vector<std::byte> buf(4096);
  EXPECT_TRUE(v->Read(kMiB, buf).IsInvalidArgument());
  EXPECT_TRUE(v->Read(kMiB - 10, buf).IsInvalidArgument());
  ASSERT_TRUE(pool->CreateSnapshot("v", "s").ok());
  EXPECT_TRUE(pool->DeleteVolume("v").IsBusy());
}

TEST(PoolTest, OpenRejectsGarbage) {
  auto dev = NewMemoryDevice(64 * kMiB);
  auto r = Pool::Open(*dev, {});
  EXPECT_TRUE(r.status().IsCorruption()) << r.status().ToString();
}

TEST(PoolTest, DeleteFreesSpaceAndNoLeaks) {
  auto dev = NewMemoryDevice(128 * kMiB);
  auto pool = MustCreatePool(*dev);
  const uint64_t used_empty = pool->Info().used_bytes;
  ASSERT_TRUE(pool->CreateVolume("v", 32 * kMiB).ok());
  Volume* v = *pool->OpenVolume("v");
  ASSERT_TRUE(v->Write(0, PatternBytes(5, 8 * kMiB)).ok());
  ASSERT_TRUE(pool->CreateSnapshot("v", "s").ok());
  ASSERT_TRUE(v->Write(0, PatternBytes(6, 4 * kMiB)).ok());
  ASSERT_TRUE(v->Flush().ok());
  EXPECT_GT(pool->Info().used_bytes, 12 * kMiB);
  ASSERT_TRUE(pool->DeleteSnapshot("v", "s").ok());
  ASSERT_TRUE(pool->DeleteVolume("v").ok());
  ASSERT_TRUE(pool->Commit().ok());
  EXPECT_EQ(pool->Info().used_bytes, used_empty);
  auto fsck = Fsck::Check(*pool);
  ASSERT_TRUE(fsck.ok()) << fsck.status().ToString();
  EXPECT_TRUE(fsck->clean()) << fsck->ToString();
}

// A snapshot deleted in the background is gone at once; Poll frees its
// blocks a slice at a time, a commit finishes what is left, and a crash at
// any point leaves a consistent pool (the deletion is durable only with the
// next commit).
TEST(PoolTest, ABackgroundSnapshotDeletionFreesInSlicesAndCommitsWhole) {
  auto dev = NewMemoryDevice(256 * kMiB);
  auto pool = MustCreatePool(*dev);
  ASSERT_TRUE(pool->CreateVolume("v", 64 * kMiB).ok());
  ASSERT_TRUE(pool->SetLogEnabled("v", false).ok());  // its references would keep the blocks
  Volume* v = *pool->OpenVolume("v");
  ASSERT_TRUE(v->Write(0, PatternBytes(1, 32 * kMiB)).ok());
  ASSERT_TRUE(pool->Commit().ok());
  const uint64_t used_before_snapshot = pool->Info().used_bytes;
  for (const char* name : {"a", "b"}) {
    ASSERT_TRUE(pool->CreateSnapshot("v", name).ok());
    // The snapshot now alone holds 32 MiB: 8192 data references, more
    // than two slices of Pool::kReleaseRefsPerPoll.
    ASSERT_TRUE(v->Write(0, PatternBytes(name[0], 32 * kMiB)).ok());
  }
  ASSERT_TRUE(pool->Commit().ok());
  const uint64_t used_with_snapshots = pool->Info().used_bytes;
  ASSERT_GE(used_with_snapshots, used_before_snapshot + 64 * kMiB);

  ASSERT_TRUE(pool->DeleteSnapshot("v", "a", Pool::Release::kInBackground).ok());
  EXPECT_EQ(pool->ListSnapshots("v")->size(), 1u);
  EXPECT_TRUE(pool->OpenSnapshot("v", "a").status().IsNotFound());
  const int64_t due_ns = pool->NextTimerNs();
  EXPECT_LE(due_ns, SystemClock::Get().NowNs()) << "background work is due";
  EXPECT_EQ(pool->Info().used_bytes, used_with_snapshots) << "nothing freed before a Poll";
  pool->Poll(0);
  const uint64_t after_one_slice = pool->Info().used_bytes;
  EXPECT_LT(after_one_slice, used_with_snapshots);
  EXPECT_GT(after_one_slice, used_with_snapshots - 32 * kMiB) << "one slice frees part of it";
  // A crash now: the last commit holds the snapshot whole.
  {
    auto crashed = dev->Clone();
    auto reopened = MustOpenPool(*crashed);
    EXPECT_EQ(reopened->ListSnapshots("v")->size(), 2u);
    auto fsck = Fsck::Check(*reopened);
    ASSERT_TRUE(fsck.ok()) << fsck.status().ToString();
    EXPECT_TRUE(fsck->clean()) << fsck->ToString();
  }
  while (pool->NextTimerNs() != INT64_MAX) pool->Poll(0);
  EXPECT_LE(pool->Info().used_bytes, used_with_snapshots - 32 * kMiB);
  // The other one without Polls: the commit frees it whole first.
  ASSERT_TRUE(pool->DeleteSnapshot("v", "b", Pool::Release::kInBackground).ok());
  ASSERT_TRUE(pool->Commit().ok());
  EXPECT_EQ(pool->NextTimerNs(), INT64_MAX);
  EXPECT_LE(pool->Info().used_bytes, used_before_snapshot + kMiB);
  auto crashed = dev->Clone();
  auto reopened = MustOpenPool(*crashed);
  EXPECT_TRUE(reopened->ListSnapshots("v")->empty());
  auto fsck = Fsck::Check(*reopened);
  ASSERT_TRUE(fsck.ok()) << fsck.status().ToString();
  EXPECT_TRUE(fsck->clean()) << fsck->ToString();
  EXPECT_EQ(ReadAll(**reopened->OpenVolume("v"), 0, 32 * kMiB), PatternBytes('b', 32 * kMiB));
}

TEST(PoolTest, FsckAndScrubCleanWithSharedBlocks) {
  auto dev = NewMemoryDevice(128 * kMiB);
  auto pool = MustCreatePool(*dev);
  ASSERT_TRUE(pool->CreateVolume("v", 32 * kMiB).ok());
  Volume* v = *pool->OpenVolume("v");
  ASSERT_TRUE(v->Write(0, PatternBytes(7, 4 * kMiB)).ok());
  ASSERT_TRUE(pool->CreateSnapshot("v", "a").ok());
  ASSERT_TRUE(v->Write(kMiB, PatternBytes(8, 4096)).ok());
  ASSERT_TRUE(pool->CreateSnapshot("v", "b").ok());
  ASSERT_TRUE(pool->Clone("v", "a", "c").ok());
  ASSERT_TRUE(v->Trim(2 * kMiB, kMiB).ok());
  auto fsck = Fsck::Check(*pool);
  ASSERT_TRUE(fsck.ok()) << fsck.status().ToString();
  EXPECT_TRUE(fsck->clean()) << fsck->ToString();
  EXPECT_GT(fsck->data_blocks, 1000u);
  auto scrub = Fsck::Scrub(*pool);
  ASSERT_TRUE(scrub.ok());
  EXPECT_TRUE(scrub->clean()) << scrub->ToString();
}

}  // namespace
}  // namespace snapdisk

namespace snapdisk {
namespace {

// Memory is bounded by the cache budget, not by what is written: 64 MiB of
// scattered 4 KiB writes (64 MiB of leaf nodes if none were evicted) through
// a 1 MiB cache.
TEST(PoolTest, SmallCacheBoundsMemory) {
  auto dev = testing::NewMemoryDevice(1ull << 30);
  PoolOptions options;
  options.cache_bytes = 1 << 20;
  auto pool = testing::MustCreatePool(*dev, options);
  ASSERT_TRUE(pool->CreateVolume("v", 512ull << 20).ok());
  Volume* v = *pool->OpenVolume("v");
  std::vector<std::byte> block(4096);
  uint64_t peak = 0;
  for (uint64_t i = 0; i < 16384; ++i) {
    const uint64_t vbn = (i * 7919) % (512ull << 20 >> 12);
    block[0] = static_cast<std::byte>(i);
    block[1] = static_cast<std::byte>(i >> 8);
    ASSERT_TRUE(v->Write(vbn * 4096, block).ok());
    peak = std::max(peak, pool->Info().cache_bytes);
  }
  EXPECT_LE(peak, 2u << 20) << "cache grew to " << peak;
  for (uint64_t i = 16384 - 100; i < 16384; ++i) {
    const uint64_t vbn = (i * 7919) % (512ull << 20 >> 12);
    ASSERT_TRUE(v->Read(vbn * 4096, block).ok());
    EXPECT_EQ(block[0], static_cast<std::byte>(i));
  }
}

}  // namespace
}  // namespace snapdisk

namespace snapdisk {
namespace {

// 10,000 snapshots of one volume: each keeps its own image, the catalog
// survives a reopen, and reads of the volume still go straight to one map.
TEST(PoolTest, TenThousandSnapshots) {
  auto dev = testing::NewMemoryDevice(512ull << 20);
  auto pool = testing::MustCreatePool(*dev);
  ASSERT_TRUE(pool->CreateVolume("v", 64ull << 20).ok());
  Volume* v = *pool->OpenVolume("v");
  std::vector<std::byte> block(4096);
  constexpr int kSnapshots = 10000;
  for (int i = 0; i < kSnapshots; ++i) {
    block[0] = static_cast<std::byte>(i);
    block[1] = static_cast<std::byte>(i >> 8);
    ASSERT_TRUE(v->Write(uint64_t(i % 1000) * 4096, block).ok());
    ASSERT_TRUE(pool->CreateSnapshot("v", "s" + std::to_string(i)).ok()) << i;
    if (i % 1000 == 999) {
      ASSERT_TRUE(pool->Commit().ok());
    }
  }
  ASSERT_TRUE(pool->Close().ok());
  pool = testing::MustOpenPool(*dev);
  auto list = pool->ListSnapshots("v");
  ASSERT_TRUE(list.ok());
  ASSERT_EQ(list->size(), size_t{kSnapshots});
  EXPECT_EQ((*list)[0].name, "s0");
  EXPECT_EQ((*list)[kSnapshots - 1].name, "s9999");
  for (int i : {0, 4321, 9999}) {
    Volume* s = *pool->OpenSnapshot("v", "s" + std::to_string(i));
    ASSERT_TRUE(s->Read(uint64_t(i % 1000) * 4096, block).ok());
    EXPECT_EQ(block[0], static_cast<std::byte>(i));
    EXPECT_EQ(block[1], static_cast<std::byte>(i >> 8));
  }
  auto info = pool->GetVolume("v");
  ASSERT_TRUE(info.ok());
  EXPECT_EQ(info->snapshots, uint64_t{kSnapshots});
}

}  // namespace
}  // namespace snapdisk
