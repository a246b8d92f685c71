// The engine's hydration maps (Pool, "Hydration"): reads of pending blocks
// from the source, client writes that win over it (whole and partial blocks,
// trims, write-zeroes, requests in flight while the fill runs), the fill, the
// map's persistence and removal, MapExtents, fsck, the cost of starting, and
// crashes at every device op of seeded workloads mid-hydration (the disk
// dies, the power fails, the pool reopens, the source is attached again, the
// fill finishes: nothing flushed is lost, nothing reads zeros). Randomized
// tests print their seed; repeat with --seed N, raise the sizes with --scale N.
#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <functional>
#include <mutex>
#include <thread>
#include <cstdio>
#include <optional>
#include <random>
#include <set>

#include "disk/clock.h"
#include "disk/fault_device.h"
#include "engine/fsck.h"
#include "engine/pool.h"
#include "support/crash_oracle.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

using testing::Image;
using testing::MakeDevice;
using testing::MustCreatePool;
using testing::MustOpenPool;
using testing::NewMemoryDevice;
using testing::PatternBytes;

constexpr uint64_t kMiB = 1 << 20;

// A source image in memory. It checks that the engine asks only for what the
// contract allows (whole blocks inside the hydration ranges, clipped at the
// volume's end), counts what it serves, and can be told to fail.
class FakeSource final : public HydrationSource {
 public:
  FakeSource(Image image, uint32_t block_bytes, const std::vector<Extent>& ranges)
      : image_(std::move(image)), block_bytes_(block_bytes) {
    allowed_.assign((image_.size() + block_bytes - 1) / block_bytes, false);
    for (const Extent& r : ranges) {
      for (uint64_t b = r.offset_bytes / block_bytes;
           b * block_bytes < r.offset_bytes + r.length_bytes; ++b) {
        allowed_[b] = true;
      }
    }
  }

  Status Read(uint64_t offset_bytes, std::span<std::byte> out) override {
    ++reads_;
    const uint64_t end = offset_bytes + out.size();
    const bool whole = out.size() % block_bytes_ == 0 || end == image_.size();
    if (offset_bytes % block_bytes_ != 0 || !whole || out.empty() || end > image_.size()) {
      violations_.push_back("asked for " + std::to_string(offset_bytes) + "+" +
                            std::to_string(out.size()));
      return Status::InvalidArgument("fake source: bad range");
    }
    for (uint64_t b = offset_bytes / block_bytes_; b * block_bytes_ < end; ++b) {
      if (!allowed_[b]) {
        violations_.push_back("asked for block " + std::to_string(b) + " outside the ranges");
      }
    }
    if (fail_offset_ && offset_bytes <= *fail_offset_ && *fail_offset_ < end) {
      return fail_status_;
    }
    std::memcpy(out.data(), image_.data() + offset_bytes, out.size());
    bytes_ += out.size();
    return Status::OK();
  }

  void FailAt(uint64_t offset, Status status) {
    fail_offset_ = offset;
    fail_status_ = std::move(status);
  }
  void Heal() { fail_offset_.reset(); }
  uint64_t reads() const { return reads_; }
  uint64_t bytes() const { return bytes_; }
  const std::vector<std::string>& violations() const { return violations_; }

 private:
  Image image_;
  uint32_t block_bytes_;
  std::vector<bool> allowed_;
  std::optional<uint64_t> fail_offset_;
  Status fail_status_;
  uint64_t reads_ = 0;
  uint64_t bytes_ = 0;
  std::vector<std::string> violations_;
};

// What a freshly hydrating (empty) volume reads: the source in the ranges,
// zeros elsewhere.
Image Expected(const Image& source, const std::vector<Extent>& ranges) {
  Image out(source.size());
  for (const Extent& r : ranges) {
    std::copy(source.begin() + r.offset_bytes, source.begin() + r.offset_bytes + r.length_bytes,
              out.begin() + r.offset_bytes);
  }
  return out;
}

Image ReadVolume(Volume& v) {
  Image out(v.size_bytes());
  Status s = v.Read(0, out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

void ExpectFsckClean(Pool& pool) {
  auto fsck = Fsck::Check(pool);
  ASSERT_TRUE(fsck.ok()) << fsck.status().ToString();
  EXPECT_TRUE(fsck->clean()) << fsck->ToString();
}

std::string FirstDifference(const Image& a, const Image& b) {
  if (a.size() != b.size())
    return "sizes " + std::to_string(a.size()) + " vs " + std::to_string(b.size());
  for (size_t i = 0; i < a.size(); ++i) {
    if (a[i] != b[i]) return "first difference at byte " + std::to_string(i);
  }
  return "";
}

uint64_t FillAll(Pool& pool, const std::string& volume, uint64_t step_bytes) {
  uint64_t total = 0;
  for (int guard = 0; guard < 1'000'000; ++guard) {
    auto n = pool.HydrateStep(volume, step_bytes);
    EXPECT_TRUE(n.ok()) << n.status().ToString();
    if (!n.ok() || *n == 0) break;
    total += *n;
  }
  return total;
}

struct Fixture {
  std::unique_ptr<MemoryDevice> dev;
  std::unique_ptr<Pool> pool;
  Volume* v = nullptr;
  Image source;
  std::vector<Extent> ranges;
  std::shared_ptr<FakeSource> fake;
};

// A pool with volume "v" of `size` bytes hydrating `ranges` from a pattern.
Fixture MakeHydrating(uint64_t size, const std::vector<Extent>& ranges, uint32_t bs = 4096,
                      bool attach = true) {
  Fixture f;
  f.dev = NewMemoryDevice(64 * kMiB);
  PoolOptions options;
  options.block_bytes = bs;
  f.pool = MustCreatePool(*f.dev, options);
  EXPECT_TRUE(f.pool->CreateVolume("v", size).ok());
  f.source = PatternBytes(77, size);
  f.ranges = ranges;
  Status s = f.pool->BeginHydration("v", ranges);
  EXPECT_TRUE(s.ok()) << s.ToString();
  f.fake = std::make_shared<FakeSource>(f.source, bs, ranges);
  if (attach) {
    EXPECT_TRUE(f.pool->AttachHydrationSource("v", f.fake).ok());
  }
  f.v = *f.pool->OpenVolume("v");
  return f;
}

TEST(HydrationTest, ReadsComeFromTheSourceBeforeTheFillAndFromTheVolumeAfter) {
  // 4 MiB + 1 KiB: the last block is partial, and pending.
  const uint64_t size = 4 * kMiB + 1024;
  const std::vector<Extent> ranges = {
      {0, 100 * 4096}, {150 * 4096, 250 * 4096}, {600 * 4096, size - 600 * 4096}};
  Fixture f = MakeHydrating(size, ranges);
  const Image want = Expected(f.source, ranges);
  auto info = f.pool->GetHydrationInfo("v");
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->hydrating);
  EXPECT_TRUE(info->source_attached);
  EXPECT_EQ(info->total_bytes, (100 + 250 + 425) * uint64_t{4096});
  EXPECT_EQ(info->pending_bytes, info->total_bytes);
  EXPECT_EQ(info->pending_ranges, 3u);

  EXPECT_EQ(FirstDifference(ReadVolume(*f.v), want), "");
  // Unaligned reads across pending and non-pending blocks.
  Image part(10000);
  ASSERT_TRUE(f.v->Read(100 * 4096 - 5000, part).ok());
  EXPECT_TRUE(std::equal(part.begin(), part.end(), want.begin() + 100 * 4096 - 5000));
  ASSERT_TRUE(f.v->Read(size - 3000, std::span(part).first(3000)).ok());
  EXPECT_TRUE(std::equal(part.begin(), part.begin() + 3000, want.begin() + size - 3000));

  // The fill, over commits and a reopen (the map is persistent).
  auto filled = f.pool->HydrateStep("v", 64 * 4096);
  ASSERT_TRUE(filled.ok()) << filled.status().ToString();
  EXPECT_EQ(*filled, 64u * 4096);
  ASSERT_TRUE(f.pool->Commit().ok());
  f.pool.reset();
  f.pool = MustOpenPool(*f.dev);
  f.v = *f.pool->OpenVolume("v");
  info = f.pool->GetHydrationInfo("v");
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->hydrating);
  EXPECT_FALSE(info->source_attached) << "a source is not persisted";
  EXPECT_EQ(info->pending_bytes, info->total_bytes - 64 * 4096);
  ASSERT_TRUE(f.pool->AttachHydrationSource("v", f.fake).ok());
  EXPECT_EQ(FirstDifference(ReadVolume(*f.v), want), "");
  ExpectFsckClean(*f.pool);

  EXPECT_EQ(FillAll(*f.pool, "v", 1 * kMiB), info->pending_bytes);
  info = f.pool->GetHydrationInfo("v");
  ASSERT_TRUE(info.ok());
  EXPECT_FALSE(info->hydrating);
  EXPECT_EQ(info->pending_bytes, 0u);
  const uint64_t reads_before = f.fake->reads();
  EXPECT_EQ(FirstDifference(ReadVolume(*f.v), want), "");
  EXPECT_EQ(f.fake->reads(), reads_before) << "a hydrated volume reads its own blocks";
  EXPECT_TRUE(f.pool->AttachHydrationSource("v", f.fake).IsNotFound());
  ExpectFsckClean(*f.pool);

  // The map's removal is durable; the volume is ordinary, with no source.
  ASSERT_TRUE(f.pool->Commit().ok());
  f.pool.reset();
  f.pool = MustOpenPool(*f.dev);
  f.v = *f.pool->OpenVolume("v");
  EXPECT_EQ(FirstDifference(ReadVolume(*f.v), want), "");
  EXPECT_FALSE(f.pool->GetHydrationInfo("v")->hydrating);
  EXPECT_TRUE(f.fake->violations().empty()) << f.fake->violations().front();
  ExpectFsckClean(*f.pool);
}

// A snapshot would share the map, whose pending blocks are holes: refused
// until the volume is hydrated (also right after a reopen, before the volume
// was opened).
TEST(HydrationTest, SnapshotsWaitUntilTheVolumeIsHydrated) {
  const uint64_t size = 1 * kMiB;
  const std::vector<Extent> ranges = {{0, size}};
  Fixture f = MakeHydrating(size, ranges);
  Result<SnapshotInfo> snap = f.pool->CreateSnapshot("v", "s");
  EXPECT_TRUE(snap.status().IsBusy()) << snap.status().ToString();
  EXPECT_NE(snap.status().message().find("being hydrated"), std::string::npos);
  ASSERT_TRUE(f.pool->Commit().ok());
  f.pool.reset();
  f.pool = MustOpenPool(*f.dev);
  EXPECT_TRUE(f.pool->CreateSnapshot("v", "s").status().IsBusy());
  f.v = *f.pool->OpenVolume("v");
  ASSERT_TRUE(f.pool->AttachHydrationSource("v", f.fake).ok());
  EXPECT_EQ(FillAll(*f.pool, "v", 256 * 1024), size);
  ASSERT_TRUE(f.pool->CreateSnapshot("v", "s").ok());
  Volume* s = *f.pool->OpenSnapshot("v", "s");
  EXPECT_EQ(FirstDifference(ReadVolume(*s), Expected(f.source, ranges)), "");
}

TEST(HydrationTest, AllZeroSourceBlocksBecomeHoles) {
  Fixture f;
  f.dev = NewMemoryDevice(64 * kMiB);
  f.pool = MustCreatePool(*f.dev);
  ASSERT_TRUE(f.pool->CreateVolume("v", 64 * 4096).ok());
  Image source(64 * 4096);
  const Image data = PatternBytes(5, 8 * 4096);
  std::copy(data.begin(), data.end(), source.begin() + 16 * 4096);  // blocks 16-23 hold data
  const std::vector<Extent> ranges = {{0, 64 * 4096}};
  ASSERT_TRUE(f.pool->BeginHydration("v", ranges).ok());
  ASSERT_TRUE(
      f.pool->AttachHydrationSource("v", std::make_shared<FakeSource>(source, 4096, ranges)).ok());
  const uint64_t used = f.pool->Info().used_bytes;
  EXPECT_EQ(FillAll(*f.pool, "v", kMiB), 64u * 4096);
  EXPECT_LE(f.pool->Info().used_bytes, used + 8 * 4096 + 16 * 4096);
  Volume* v = *f.pool->OpenVolume("v");
  auto extents = v->MapExtents(0, 64 * 4096);
  ASSERT_TRUE(extents.ok());
  ASSERT_EQ(extents->size(), 3u);
  EXPECT_EQ((*extents)[1].offset_bytes, 16u * 4096);
  EXPECT_EQ((*extents)[1].length_bytes, 8u * 4096);
  EXPECT_FALSE((*extents)[1].zero);
  EXPECT_EQ(ReadVolume(*v), source);
  ExpectFsckClean(*f.pool);
}

TEST(HydrationTest, WithoutASourceReadsOfPendingBlocksFailAndNeverReadZeros) {
  const std::vector<Extent> ranges = {{8 * 4096, 8 * 4096}};
  Fixture f = MakeHydrating(64 * 4096, ranges, 4096, /*attach=*/false);
  Image block(4096);
  Status s = f.v->Read(9 * 4096, block);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_NE(s.message().find("volume 'v' is hydrating and its source is not attached"),
            std::string::npos)
      << s.ToString();
  // A read that only touches a pending block at its edge fails too.
  Image big(8 * 4096);
  EXPECT_FALSE(f.v->Read(1 * 4096, big).ok());
  // Blocks outside the map read as the volume holds them.
  EXPECT_TRUE(f.v->Read(0, block).ok());
  EXPECT_TRUE(f.pool->HydrateStep("v", kMiB).status().IsIOError());
  // A partial write into a pending block needs the block's other bytes: it
  // fails and changes nothing.
  EXPECT_FALSE(f.v->Write(8 * 4096 + 100, PatternBytes(1, 100)).ok());
  EXPECT_EQ(f.pool->GetHydrationInfo("v")->pending_bytes, 8u * 4096);
  // A whole-block write needs nothing from the source.
  ASSERT_TRUE(f.v->Write(8 * 4096, PatternBytes(2, 4096)).ok());
  EXPECT_EQ(f.pool->GetHydrationInfo("v")->pending_bytes, 7u * 4096);
  EXPECT_EQ(testing::ReadAll(*f.v, 8 * 4096, 4096), PatternBytes(2, 4096));
  ExpectFsckClean(*f.pool);
}

TEST(HydrationTest, ASourceErrorIsTheReadsErrorAndChangesNothing) {
  const std::vector<Extent> ranges = {{0, 32 * 4096}};
  Fixture f = MakeHydrating(32 * 4096, ranges);
  f.fake->FailAt(5 * 4096 + 7, Status::Corruption("fake source: chunk abc is damaged"));
  Image block(4096);
  Status s = f.v->Read(5 * 4096, block);
  EXPECT_TRUE(s.IsCorruption()) << s.ToString();
  EXPECT_NE(s.message().find("chunk abc is damaged"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find("volume 'v'"), std::string::npos) << s.ToString();
  EXPECT_TRUE(f.v->Read(20 * 4096, block).ok());
  auto step = f.pool->HydrateStep("v", kMiB);
  EXPECT_TRUE(step.status().IsCorruption()) << step.status().ToString();
  EXPECT_EQ(f.pool->GetHydrationInfo("v")->pending_bytes, 32u * 4096);
  EXPECT_TRUE(f.pool->health().ok()) << "a source error does not fail the pool";
  f.fake->Heal();
  EXPECT_EQ(FillAll(*f.pool, "v", kMiB), 32u * 4096);
  EXPECT_EQ(ReadVolume(*f.v), f.source);
  ExpectFsckClean(*f.pool);
}

// A source that fetches in units of 16 blocks, off the pool's thread, and
// whose reads wait at a gate until the test opens it.
class GatedSource final : public HydrationSource {
 public:
  static constexpr uint64_t kUnitBytes = 16 * 4096;
  explicit GatedSource(Image image) : image_(std::move(image)) {}
  Status Read(uint64_t offset_bytes, std::span<std::byte> out) override {
    std::unique_lock<std::mutex> lock(mutex_);
    ++entered_;
    changed_.notify_all();
    changed_.wait(lock, [&] { return open_; });
    reads_.emplace_back(offset_bytes, out.size());
    std::memcpy(out.data(), image_.data() + offset_bytes, out.size());
    return Status::OK();
  }
  Result<std::vector<std::pair<uint64_t, uint64_t>>> FetchedWith(uint64_t offset_bytes) override {
    const uint64_t first = offset_bytes / kUnitBytes * kUnitBytes;
    return std::vector<std::pair<uint64_t, uint64_t>>{
        {first, std::min<uint64_t>(kUnitBytes, image_.size() - first)}};
  }
  bool background_fetch() const override { return true; }

  void SetOpen(bool open) {
    std::lock_guard<std::mutex> lock(mutex_);
    open_ = open;
    changed_.notify_all();
  }
  // Waits (up to 5 s) until `n` reads have entered Read.
  bool WaitEntered(uint64_t n) {
    std::unique_lock<std::mutex> lock(mutex_);
    return changed_.wait_for(lock, std::chrono::seconds(5), [&] { return entered_ >= n; });
  }
  std::vector<std::pair<uint64_t, uint64_t>> reads() {
    std::lock_guard<std::mutex> lock(mutex_);
    return reads_;
  }

 private:
  const Image image_;
  std::mutex mutex_;
  std::condition_variable changed_;
  bool open_ = true;
  uint64_t entered_ = 0;
  std::vector<std::pair<uint64_t, uint64_t>> reads_;
};

// Issue "Instant restore reads each chunk from the store once": while a read
// of a pending block waits for its fetch, reads of filled blocks are served;
// a second read of the same unit waits for the same fetch (one source read);
// what the fetch brought fills the volume.
TEST(HydrationTest, ReadsOfFilledBlocksAreServedWhileAPendingBlockIsFetched) {
  const uint64_t size = 64 * 4096;
  auto dev = NewMemoryDevice(64 * kMiB);
  std::unique_ptr<Pool> pool = MustCreatePool(*dev, PoolOptions{});
  ASSERT_TRUE(pool->CreateVolume("v", size).ok());
  ASSERT_TRUE(pool->BeginHydration("v", {{0, size}}).ok());
  const Image source = PatternBytes(91, size);
  auto gated = std::make_shared<GatedSource>(source);
  ASSERT_TRUE(pool->AttachHydrationSource("v", gated).ok());
  Volume* v = *pool->OpenVolume("v");
  ASSERT_EQ(*pool->HydrateStep("v", GatedSource::kUnitBytes), GatedSource::kUnitBytes);

  const size_t reads_before = gated->reads().size();  // the step's
  gated->SetOpen(false);
  struct Pending {
    VolumeRequest request;
    Image data = Image(4096);
    bool done = false;
    Status status;
  };
  auto submit = [&](Pending& p, uint64_t vbn) {
    p.request.op = VolumeOp::kRead;
    p.request.offset_bytes = vbn * 4096;
    p.request.length_bytes = 4096;
    p.request.data = p.data.data();
    p.request.on_complete = [&p](VolumeRequest&, const Status& s) {
      p.done = true;
      p.status = s;
    };
    ASSERT_TRUE(v->Submit(p.request).ok());
  };
  auto poll_until = [&](const std::function<bool()>& done) {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(5);
    while (!done() && std::chrono::steady_clock::now() < deadline) {
      pool->Poll(0);
      std::this_thread::sleep_for(std::chrono::microseconds(100));
    }
    return done();
  };
  Pending cold, same_unit, filled;
  submit(cold, 40);                   // pending: its unit [32, 48) is fetched
  ASSERT_TRUE(gated->WaitEntered(1)) << "the fetch never started";
  submit(same_unit, 44);              // the same unit: waits for the same fetch
  submit(filled, 3);                  // filled by HydrateStep: no source needed
  ASSERT_TRUE(poll_until([&] { return filled.done; }))
      << "a read of a filled block waited for another block's fetch";
  ASSERT_TRUE(filled.status.ok()) << filled.status.ToString();
  EXPECT_TRUE(std::equal(filled.data.begin(), filled.data.end(), source.begin() + 3 * 4096));
  EXPECT_FALSE(cold.done);
  EXPECT_FALSE(same_unit.done);

  gated->SetOpen(true);
  ASSERT_TRUE(poll_until([&] { return cold.done && same_unit.done; }));
  ASSERT_TRUE(cold.status.ok()) << cold.status.ToString();
  ASSERT_TRUE(same_unit.status.ok()) << same_unit.status.ToString();
  EXPECT_TRUE(std::equal(cold.data.begin(), cold.data.end(), source.begin() + 40 * 4096));
  EXPECT_TRUE(std::equal(same_unit.data.begin(), same_unit.data.end(), source.begin() + 44 * 4096));
  // The unit was read once, whole, and filled: 16 + 16 blocks are in.
  const auto reads = gated->reads();
  EXPECT_EQ(reads.size(), reads_before + 1);
  if (reads.size() > reads_before) {
    EXPECT_EQ(reads[reads_before], (std::pair<uint64_t, uint64_t>{32 * 4096, GatedSource::kUnitBytes}));
  }
  EXPECT_EQ(pool->GetHydrationInfo("v")->pending_bytes, size - 2 * GatedSource::kUnitBytes);
  ExpectFsckClean(*pool);

  // Volume::Read (Submit and Poll) of pending blocks goes the same way.
  Image rest = ReadVolume(*v);
  EXPECT_EQ(FirstDifference(rest, source), "");
  EXPECT_FALSE(pool->GetHydrationInfo("v")->hydrating) << "the reads filled every unit";
  ExpectFsckClean(*pool);
}

TEST(HydrationTest, PartialBlockWritesKeepTheRestOfThePendingBlock) {
  const std::vector<Extent> ranges = {{0, 32 * 4096}};
  Fixture f = MakeHydrating(32 * 4096, ranges);
  Image model = f.source;
  auto write = [&](uint64_t offset, uint64_t length, uint64_t seed) {
    const Image data = PatternBytes(seed, length);
    ASSERT_TRUE(f.v->Write(offset, data).ok());
    std::copy(data.begin(), data.end(), model.begin() + offset);
  };
  write(3 * 4096 + 100, 200, 1);                       // inside one block
  write(6 * 4096 - 10, 4096 + 20, 2);                  // across three blocks' edges
  write(10 * 4096 + 512, 3 * 4096, 3);                 // partial head and tail
  ASSERT_TRUE(f.v->Trim(20 * 4096 + 1000, 100).ok());  // an unaligned trim
  std::fill(model.begin() + 20 * 4096 + 1000, model.begin() + 20 * 4096 + 1100, std::byte{0});
  EXPECT_EQ(FirstDifference(ReadVolume(*f.v), model), "");
  ASSERT_TRUE(f.v->Flush().ok());
  f.pool.reset();
  f.pool = MustOpenPool(*f.dev);
  ASSERT_TRUE(f.pool->AttachHydrationSource("v", f.fake).ok());
  f.v = *f.pool->OpenVolume("v");
  EXPECT_EQ(FirstDifference(ReadVolume(*f.v), model), "");
  FillAll(*f.pool, "v", 5 * 4096);
  EXPECT_EQ(FirstDifference(ReadVolume(*f.v), model), "") << "the fill overwrote a client write";
  ExpectFsckClean(*f.pool);
}

TEST(HydrationTest, TrimsAndWriteZeroesWinOverTheSource) {
  const std::vector<Extent> ranges = {{0, 64 * 4096}};
  Fixture f = MakeHydrating(64 * 4096, ranges);
  Image model = f.source;
  auto zero = [&](uint64_t offset, uint64_t length) {
    std::fill(model.begin() + offset, model.begin() + offset + length, std::byte{0});
  };
  ASSERT_TRUE(f.v->Trim(4 * 4096, 8 * 4096).ok());
  zero(4 * 4096, 8 * 4096);
  ASSERT_TRUE(f.v->WriteZeroes(20 * 4096, 4 * 4096).ok());
  zero(20 * 4096, 4 * 4096);
  ASSERT_TRUE(f.v->WriteZeroes(30 * 4096 + 300, 5000).ok());
  zero(30 * 4096 + 300, 5000);
  EXPECT_EQ(f.pool->GetHydrationInfo("v")->pending_bytes, (64 - 8 - 4 - 2) * uint64_t{4096});
  EXPECT_EQ(FirstDifference(ReadVolume(*f.v), model), "");
  FillAll(*f.pool, "v", kMiB);
  EXPECT_EQ(FirstDifference(ReadVolume(*f.v), model), "");
  ExpectFsckClean(*f.pool);
}

TEST(HydrationTest, MapExtentsReportsPendingBlocksAsData) {
  const std::vector<Extent> ranges = {{4 * 4096, 4 * 4096}, {12 * 4096, 2 * 4096}};
  Fixture f = MakeHydrating(32 * 4096, ranges);
  ASSERT_TRUE(f.v->Write(6 * 4096, PatternBytes(3, 8 * 4096)).ok());  // blocks 6-13
  ASSERT_TRUE(f.v->Trim(12 * 4096, 4096).ok());                       // block 12: a hole now
  auto extents = f.v->MapExtents(0, 32 * 4096);
  ASSERT_TRUE(extents.ok());
  // Data: 4-11 (pending 4-5, written 6-11), 13 (written). Holes elsewhere.
  const std::vector<std::tuple<uint64_t, uint64_t, bool>> want = {{0, 4 * 4096, true},
                                                                  {4 * 4096, 8 * 4096, false},
                                                                  {12 * 4096, 4096, true},
                                                                  {13 * 4096, 4096, false},
                                                                  {14 * 4096, 18 * 4096, true}};
  ASSERT_EQ(extents->size(), want.size());
  for (size_t i = 0; i < want.size(); ++i) {
    EXPECT_EQ((*extents)[i].offset_bytes, std::get<0>(want[i])) << i;
    EXPECT_EQ((*extents)[i].length_bytes, std::get<1>(want[i])) << i;
    EXPECT_EQ((*extents)[i].zero, std::get<2>(want[i])) << i;
  }
  // Clipped, unaligned.
  extents = f.v->MapExtents(4 * 4096 + 10, 100);
  ASSERT_TRUE(extents.ok());
  ASSERT_EQ(extents->size(), 1u);
  EXPECT_FALSE((*extents)[0].zero);
}

TEST(HydrationTest, BeginHydrationValidatesAndRefuses) {
  auto dev = NewMemoryDevice(64 * kMiB);
  auto pool = MustCreatePool(*dev);
  const uint64_t size = 16 * 4096 + 512;
  ASSERT_TRUE(pool->CreateVolume("v", size).ok());
  EXPECT_TRUE(pool->BeginHydration("v", {{100, 4096}}).IsInvalidArgument());
  EXPECT_TRUE(pool->BeginHydration("v", {{0, 100}}).IsInvalidArgument());
  EXPECT_TRUE(pool->BeginHydration("v", {{0, size + 512}}).IsInvalidArgument());
  EXPECT_TRUE(pool->BeginHydration("v", {{0, 0}}).IsInvalidArgument());
  EXPECT_TRUE(pool->BeginHydration("v", {{0, 4096, true}}).IsInvalidArgument());
  EXPECT_TRUE(pool->BeginHydration("nope", {{0, 4096}}).IsNotFound());
  ASSERT_TRUE(pool->BeginHydration("v", {}).ok());
  EXPECT_FALSE(pool->GetHydrationInfo("v")->hydrating) << "no ranges: nothing to do";
  // A range may end at the volume's (partial) end; overlapping ranges merge.
  ASSERT_TRUE(
      pool->BeginHydration("v", {{0, 8 * 4096}, {4 * 4096, 8 * 4096}, {15 * 4096, 4096 + 512}})
          .ok());
  auto info = pool->GetHydrationInfo("v");
  EXPECT_EQ(info->pending_ranges, 2u);
  EXPECT_EQ(info->pending_bytes, (12 + 2) * uint64_t{4096});
  EXPECT_TRUE(pool->BeginHydration("v", {{0, 4096}}).IsAlreadyExists());
  ASSERT_TRUE(pool->CreateVolume("w", size).ok());
  ASSERT_TRUE(pool->CreateSnapshot("w", "s").ok());
  EXPECT_TRUE(pool->BeginHydration("w", {{0, 4096}}).IsBusy());
  EXPECT_TRUE(pool->AttachHydrationSource("w", nullptr).IsNotFound());
  EXPECT_EQ(*pool->HydrateStep("w", kMiB), 0u) << "nothing pending: nothing to fill";
  ExpectFsckClean(*pool);
}

TEST(HydrationTest, DeletingAHydratingVolumeDeletesItsMap) {
  auto dev = NewMemoryDevice(64 * kMiB);
  auto pool = MustCreatePool(*dev);
  ASSERT_TRUE(pool->Commit().ok());
  const uint64_t used = pool->Info().used_bytes;
  ASSERT_TRUE(pool->CreateVolume("v", 16 * kMiB).ok());
  std::vector<Extent> ranges;
  for (uint64_t i = 0; i < 1000; ++i) ranges.push_back({i * 4 * 4096, 4096});  // 4 range blocks
  ASSERT_TRUE(pool->BeginHydration("v", ranges).ok());
  ASSERT_TRUE(pool->AttachHydrationSource(
                      "v", std::make_shared<FakeSource>(PatternBytes(1, 16 * kMiB), 4096, ranges))
                  .ok());
  ASSERT_TRUE(pool->HydrateStep("v", 100 * 4096).ok());
  Volume* v = *pool->OpenVolume("v");
  ASSERT_TRUE(v->Write(4096 * 4 * 500, PatternBytes(2, 4096)).ok());
  ASSERT_TRUE(pool->Commit().ok());
  ExpectFsckClean(*pool);
  ASSERT_TRUE(pool->DeleteVolume("v").ok());
  ASSERT_TRUE(pool->Commit().ok());
  ASSERT_TRUE(pool->Commit().ok());  // freed blocks cool for one commit
  EXPECT_EQ(pool->Info().used_bytes, used);
  ExpectFsckClean(*pool);
  ASSERT_TRUE(pool->CreateVolume("v", 16 * kMiB).ok());
  EXPECT_FALSE(pool->GetHydrationInfo("v")->hydrating);
}

TEST(HydrationTest, AFullPoolStopsTheFillWithNoSpaceAndNothingElse) {
  auto dev = NewMemoryDevice(4 * kMiB);
  auto pool = MustCreatePool(*dev);
  // As large as the pool: the image and the maps cannot both fit.
  const uint64_t size = pool->Info().pool_bytes - pool->Info().metadata_bytes;
  ASSERT_TRUE(pool->CreateVolume("v", size).ok());
  const Image source = PatternBytes(8, size);
  const std::vector<Extent> ranges = {{0, size}};
  ASSERT_TRUE(pool->BeginHydration("v", ranges).ok());
  ASSERT_TRUE(
      pool->AttachHydrationSource("v", std::make_shared<FakeSource>(source, 4096, ranges)).ok());
  Volume* v = *pool->OpenVolume("v");
  // Client writes first (their log keeps blocks: a full pool drops it).
  for (int i = 0; i < 20; ++i) {
    ASSERT_TRUE(v->Write(uint64_t(i) * 4096, std::span(source).subspan(i * 4096, 4096)).ok());
  }
  Status stopped;
  for (int i = 0; i < 1000 && stopped.ok(); ++i) {
    auto n = pool->HydrateStep("v", 64 * 4096);
    if (!n.ok()) stopped = n.status();
    if (n.ok() && *n == 0) break;
  }
  EXPECT_TRUE(stopped.IsNoSpace()) << stopped.ToString();
  EXPECT_TRUE(pool->health().ok()) << pool->health().ToString();
  auto info = pool->GetHydrationInfo("v");
  ASSERT_TRUE(info.ok());
  EXPECT_TRUE(info->hydrating);
  EXPECT_LT(info->pending_bytes, info->total_bytes);
  EXPECT_EQ(FirstDifference(ReadVolume(*v), source), "");
  ASSERT_TRUE(pool->Commit().ok());
  ExpectFsckClean(*pool);
}

// Instant means instant: what BeginHydration and the commit after it write
// depends on the number of ranges, not on how much data they cover.
TEST(HydrationTest, StartingCostsTheRangesNotTheData) {
  auto dev = MakeDevice(uint64_t{256} << 30, 4096);  // sparse: costs what is written
  auto pool = MustCreatePool(*dev);
  auto writes_for = [&](const std::string& name, uint64_t size, uint64_t ranges) {
    EXPECT_TRUE(pool->CreateVolume(name, size).ok());
    EXPECT_TRUE(pool->Commit().ok());
    std::vector<Extent> extents;
    const uint64_t step = size / ranges;
    for (uint64_t i = 0; i < ranges; ++i) extents.push_back({i * step, step - 4096});
    const OpStats before = dev->stats().Snapshot().of(IoOp::kWrite);
    EXPECT_TRUE(pool->BeginHydration(name, extents).ok());
    EXPECT_TRUE(pool->Commit().ok());
    const OpStats after = dev->stats().Snapshot().of(IoOp::kWrite);
    return after.bytes - before.bytes;
  };
  const uint64_t small = writes_for("small", uint64_t{1} << 30, 8);    // ~1 GiB of data
  const uint64_t large = writes_for("large", uint64_t{200} << 30, 8);  // ~200 GiB
  std::printf("[hydration] begin + commit wrote %llu bytes for 1 GiB, %llu for 200 GiB\n",
              static_cast<unsigned long long>(small), static_cast<unsigned long long>(large));
  EXPECT_LE(large, small + 8 * 4096);
  EXPECT_LE(large, 64u * 4096);
  const uint64_t many = writes_for("many", uint64_t{1} << 30, 4096);  // 16 range blocks
  EXPECT_GT(many, small);
  EXPECT_EQ(pool->GetHydrationInfo("large")->pending_ranges, 8u);
  // Opening a hydrating volume after a reopen reads its ranges, not its data.
  pool.reset();
  pool = MustOpenPool(*dev);
  const OpStats before = dev->stats().Snapshot().of(IoOp::kRead);
  ASSERT_TRUE(pool->OpenVolume("large").ok());
  const OpStats after = dev->stats().Snapshot().of(IoOp::kRead);
  EXPECT_LE(after.ops - before.ops, 16u);
}

TEST(HydrationTest, FsckNamesADamagedMap) {
  const std::vector<Extent> ranges = {{0, 8 * 4096}, {16 * 4096, 8 * 4096}};
  Fixture f = MakeHydrating(32 * 4096, ranges);
  ASSERT_TRUE(f.pool->HydrateStep("v", 4 * 4096).ok());
  ASSERT_TRUE(f.pool->Commit().ok());
  f.pool.reset();
  auto layout = testing::ScanLayout(*f.dev);
  ASSERT_TRUE(layout.ok()) << layout.status().ToString();
  uint64_t range_block = 0, bitmap_block = 0;
  for (const auto& [pbn, owners] : layout->owners) {
    for (const testing::LayoutOwner& o : owners) {
      if (o.record != "v(hydration)" || o.level != -1) continue;
      (o.first_vbn >= (uint64_t{1} << 31) ? range_block : bitmap_block) = pbn;
    }
  }
  ASSERT_NE(range_block, 0u);
  ASSERT_NE(bitmap_block, 0u);
  Image block(4096);
  ASSERT_TRUE(f.dev->Read(range_block * 4096, block).ok());
  block[3] ^= std::byte{1};
  ASSERT_TRUE(f.dev->Write(range_block * 4096, block).ok());
  f.pool = MustOpenPool(*f.dev);  // Open reads no map
  auto opened = f.pool->OpenVolume("v");
  EXPECT_TRUE(opened.status().IsCorruption()) << opened.status().ToString();
  EXPECT_NE(opened.status().message().find("hydration map of volume 'v'"), std::string::npos)
      << opened.status().ToString();
  auto fsck = Fsck::Check(*f.pool);
  ASSERT_TRUE(fsck.ok());
  ASSERT_FALSE(fsck->clean());
  bool named = false;
  for (const FsckProblem& p : fsck->problems) named = named || p.kind == "hydration";
  EXPECT_TRUE(named) << fsck->ToString();
}

// ---- Randomized: client requests racing the fill, against a model -----------

struct RandomRun {
  std::mt19937_64 rng;
  uint64_t Rand(uint64_t n) { return n == 0 ? 0 : rng() % n; }
};

TEST(HydrationTest, ClientRequestsRacingTheFillWinAgainstAModel) {
  const uint64_t base = testing::TestSeed(5150);
  const uint64_t rounds = 8 * testing::TestScale();
  for (uint64_t round = 0; round < rounds; ++round) {
    const uint64_t seed = base + round;
    SCOPED_TRACE("seed " + std::to_string(seed));
    RandomRun r{std::mt19937_64(seed)};
    const uint32_t bs = r.Rand(3) == 0 ? 16384 : 4096;
    const uint64_t blocks = 32 + r.Rand(200);
    const uint64_t size = blocks * bs - (r.Rand(2) ? 512 * r.Rand(bs / 512) : 0);
    std::vector<Extent> ranges;
    for (uint64_t b = r.Rand(4); b < blocks;) {
      const uint64_t n = 1 + r.Rand(30);
      const uint64_t end = std::min(b + n, blocks);
      ranges.push_back({b * bs, std::min(end * bs, size) - b * bs});
      b = end + r.Rand(8);
    }
    auto dev = NewMemoryDevice(64 * kMiB);
    PoolOptions options;
    options.block_bytes = bs;
    auto pool = MustCreatePool(*dev, options);
    ASSERT_TRUE(pool->CreateVolume("v", size).ok());
    const Image source = PatternBytes(seed, size);
    Image model = Expected(source, ranges);
    ASSERT_TRUE(pool->BeginHydration("v", ranges).ok());
    auto fake = std::make_shared<FakeSource>(source, bs, ranges);
    ASSERT_TRUE(pool->AttachHydrationSource("v", fake).ok());
    Volume* v = *pool->OpenVolume("v");

    auto random_range = [&](uint64_t max_blocks) {
      if (r.Rand(2)) {  // block aligned (the last block may be partial)
        const uint64_t first = r.Rand(blocks);
        const uint64_t n = 1 + r.Rand(std::min(max_blocks, blocks - first));
        return std::make_pair(first * bs, std::min((first + n) * bs, size) - first * bs);
      }
      const uint64_t length = 1 + r.Rand(std::min(size, max_blocks * bs));
      return std::make_pair(r.Rand(size - length + 1), length);
    };
    for (int op = 0; op < 150; ++op) {
      const uint64_t k = r.Rand(100);
      if (k < 40) {
        // Up to 4 mutations in flight; sometimes the fill runs while they are.
        const uint64_t n = 1 + r.Rand(4);
        std::vector<VolumeRequest> requests(n);
        std::vector<Image> buffers(n);
        int pending = 0;
        for (uint64_t i = 0; i < n; ++i) {
          auto [offset, length] = random_range(6);
          const uint64_t kind = r.Rand(6);
          VolumeRequest& q = requests[i];
          q.op = kind < 4 ? VolumeOp::kWrite : kind == 4 ? VolumeOp::kTrim : VolumeOp::kWriteZeroes;
          q.offset_bytes = offset;
          q.length_bytes = length;
          if (q.op == VolumeOp::kWrite) {
            buffers[i] = PatternBytes(r.rng(), length);
            q.data = buffers[i].data();
            std::copy(buffers[i].begin(), buffers[i].end(), model.begin() + offset);
          } else {
            std::fill(model.begin() + offset, model.begin() + offset + length, std::byte{0});
          }
          q.on_complete = [&pending](VolumeRequest&, const Status& s) {
            EXPECT_TRUE(s.ok()) << s.ToString();
            --pending;
          };
          ASSERT_TRUE(v->Submit(q).ok());
          ++pending;
        }
        if (r.Rand(2)) {
          ASSERT_TRUE(pool->HydrateStep("v", (1 + r.Rand(64)) * bs).ok());
        }
        while (pending > 0) pool->Poll(1);
      } else if (k < 60) {
        auto step = pool->HydrateStep("v", (1 + r.Rand(40)) * bs);
        ASSERT_TRUE(step.ok()) << step.status().ToString();
      } else if (k < 80) {
        auto [offset, length] = random_range(40);
        Image got(length);
        ASSERT_TRUE(v->Read(offset, got).ok());
        ASSERT_TRUE(std::equal(got.begin(), got.end(), model.begin() + offset))
            << "op " << op << ": read [" << offset << ", +" << length << ") differs from the model";
      } else if (k < 88) {
        auto extents = v->MapExtents(0, size);
        ASSERT_TRUE(extents.ok());
        for (const Extent& e : *extents) {
          if (!e.zero) continue;
          ASSERT_TRUE(std::all_of(model.begin() + e.offset_bytes,
                                  model.begin() + e.offset_bytes + e.length_bytes,
                                  [](std::byte b) { return b == std::byte{0}; }))
              << "op " << op << ": MapExtents calls [" << e.offset_bytes << ", +" << e.length_bytes
              << ") a hole but it holds data";
        }
      } else if (k < 95) {
        ASSERT_TRUE(v->Flush().ok());
      } else {
        pool.reset();
        pool = MustOpenPool(*dev, options);
        v = *pool->OpenVolume("v");
        if (pool->GetHydrationInfo("v")->hydrating) {
          ASSERT_TRUE(pool->AttachHydrationSource("v", fake).ok());
        }
      }
    }
    EXPECT_EQ(FirstDifference(ReadVolume(*v), model), "");
    ExpectFsckClean(*pool);
    FillAll(*pool, "v", 16 * bs);
    EXPECT_FALSE(pool->GetHydrationInfo("v")->hydrating);
    EXPECT_EQ(FirstDifference(ReadVolume(*v), model), "");
    ExpectFsckClean(*pool);
    EXPECT_TRUE(fake->violations().empty()) << fake->violations().front();
    if (HasFailure()) break;
  }
}

// ---- Crashes mid-hydration ------------------------------------------------------

// One step of a crash workload. Fill steps and reads change nothing a reader
// sees; writes, trims and write-zeroes do; flushes make everything durable.
struct CrashOp {
  enum Kind { kWrite, kTrim, kWriteZeroes, kFill, kFlush, kWriteDuringFill } kind = kWrite;
  uint64_t offset = 0;
  uint64_t length = 0;  // kFill: max bytes
  uint64_t seed = 0;
  uint64_t fill_bytes = 0;  // kWriteDuringFill: what the fill may copy meanwhile
};

struct CrashSpec {
  uint64_t seed = 0;
  uint32_t block_bytes = 4096;
  uint32_t sector_bytes = 4096;
  uint64_t volume_bytes = 0;
  std::vector<Extent> ranges;
  std::vector<CrashOp> ops;
};

CrashSpec MakeCrashSpec(uint64_t seed) {
  RandomRun r{std::mt19937_64(seed * 7919 + 3)};
  CrashSpec spec;
  spec.seed = seed;
  spec.block_bytes = seed % 3 == 2 ? 8192 : 4096;
  spec.sector_bytes = seed % 2 == 1 ? 512 : 4096;  // 512: a crash can tear inside a block
  const uint64_t bs = spec.block_bytes;
  const uint64_t blocks = 24 + r.Rand(40);
  spec.volume_bytes = blocks * bs - (r.Rand(2) ? 512 * (1 + r.Rand(bs / 512 - 1)) : 0);
  for (uint64_t b = r.Rand(3); b < blocks;) {
    const uint64_t end = std::min(b + 1 + r.Rand(12), blocks);
    spec.ranges.push_back({b * bs, std::min(end * bs, spec.volume_bytes) - b * bs});
    b = end + r.Rand(4);
  }
  const int n = 12 + static_cast<int>(r.Rand(12));
  for (int i = 0; i < n; ++i) {
    CrashOp op;
    const uint64_t k = r.Rand(100);
    op.kind = k < 30   ? CrashOp::kWrite
              : k < 38 ? (r.Rand(2) ? CrashOp::kTrim : CrashOp::kWriteZeroes)
              : k < 68 ? CrashOp::kFill
              : k < 80 ? CrashOp::kWriteDuringFill
                       : CrashOp::kFlush;
    if (op.kind == CrashOp::kFill) {
      op.length = (1 + r.Rand(12)) * bs;
    } else if (op.kind != CrashOp::kFlush) {
      if (r.Rand(2)) {
        const uint64_t first = r.Rand(blocks);
        const uint64_t count = 1 + r.Rand(std::min<uint64_t>(4, blocks - first));
        op.offset = first * bs;
        op.length = std::min((first + count) * bs, spec.volume_bytes) - op.offset;
      } else {
        op.length = 1 + r.Rand(3 * bs);
        op.offset = r.Rand(spec.volume_bytes - op.length + 1);
      }
      op.seed = r.rng();
      // Sometimes the whole rest of the map is filled under the write.
      op.fill_bytes = r.Rand(4) == 0 ? spec.volume_bytes : (2 + r.Rand(14)) * bs;
    }
    spec.ops.push_back(op);
  }
  return spec;
}

std::string DescribeCrashOp(const CrashOp& op) {
  static const char* kNames[] = {"write", "trim",  "write-zeroes",
                                 "fill",  "flush", "write during fill"};
  std::string out = kNames[op.kind];
  if (op.kind == CrashOp::kFill) return out + " " + std::to_string(op.length);
  if (op.kind == CrashOp::kFlush) return out;
  return out + " [" + std::to_string(op.offset) + ", +" + std::to_string(op.length) + ")";
}

// What may survive: the image at the last successful flush, then the image
// after each later successful mutation (commits happen only at flushes here,
// so a recovered pool must hold exactly one of them).
struct CrashModel {
  std::vector<Image> states;    // [0]: durable
  bool volume_durable = false;  // the setup commit returned OK
};

struct CrashRunResult {
  CrashModel model;
  uint64_t base_ops = 0;  // device ops before the workload (after Pool::Create)
  uint64_t total_ops = 0;
  std::string log;  // ops and their outcomes
};

void ApplyToModel(const CrashOp& op, Image* image) {
  if (op.kind == CrashOp::kWrite || op.kind == CrashOp::kWriteDuringFill) {
    const Image data = testing::WriteData(op.seed, op.length);
    std::copy(data.begin(), data.end(), image->begin() + op.offset);
  } else if (op.kind == CrashOp::kTrim || op.kind == CrashOp::kWriteZeroes) {
    std::fill(image->begin() + op.offset, image->begin() + op.offset + op.length, std::byte{0});
  }
}

PoolOptions CrashPoolOptions(const CrashSpec& spec) {
  PoolOptions o;
  o.block_bytes = spec.block_bytes;
  o.wall_clock_ns = &testing::FixedWallClockNs;
  return o;
}

// Runs the spec on a fresh pool over `fault`; the disk dies at `fail_at`.
CrashRunResult RunCrashWorkload(const CrashSpec& spec, FaultDevice& fault, const Image& source,
                                std::optional<uint64_t> fail_at) {
  CrashRunResult run;
  auto created = Pool::Create(fault, CrashPoolOptions(spec));
  SNAPDISK_CHECK(created.ok(), created.status().ToString().c_str());
  std::unique_ptr<Pool> pool = std::move(created).value();
  run.base_ops = fault.ops_submitted();
  if (fail_at) fault.FailAtOpIndex(*fail_at);
  Image live = Expected(source, spec.ranges);
  run.model.states.push_back(live);
  auto fake = std::make_shared<FakeSource>(source, spec.block_bytes, spec.ranges);
  Status s = pool->CreateVolume("v", spec.volume_bytes).status();
  if (s.ok()) s = pool->BeginHydration("v", spec.ranges);
  if (s.ok()) s = pool->AttachHydrationSource("v", fake);
  if (s.ok()) s = pool->Commit();
  run.log += "  setup -> " + s.ToString() + "\n";
  run.model.volume_durable = s.ok();
  Volume* v = nullptr;
  if (s.ok()) {
    auto opened = pool->OpenVolume("v");
    s = opened.status();
    if (s.ok()) v = *opened;
  }
  for (size_t i = 0; i < spec.ops.size() && s.ok(); ++i) {
    const CrashOp& op = spec.ops[i];
    const Image data = op.kind == CrashOp::kWrite || op.kind == CrashOp::kWriteDuringFill
                           ? testing::WriteData(op.seed, op.length)
                           : Image();
    switch (op.kind) {
      case CrashOp::kWrite:
        s = v->Write(op.offset, data);
        break;
      case CrashOp::kTrim:
        s = v->Trim(op.offset, op.length);
        break;
      case CrashOp::kWriteZeroes:
        s = v->WriteZeroes(op.offset, op.length);
        break;
      case CrashOp::kFill:
        s = pool->HydrateStep("v", op.length).status();
        break;
      case CrashOp::kFlush:
        s = v->Flush();
        break;
      case CrashOp::kWriteDuringFill: {
        // The write is in flight while the whole rest of the map is filled.
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
        s = v->Submit(q);
        if (!s.ok()) break;
        Status fs = pool->HydrateStep("v", op.fill_bytes).status();
        while (!done) pool->Poll(1);
        if (ws.ok()) {  // the write completed: a later commit may hold it, whatever the fill did
          ApplyToModel(op, &live);
          run.model.states.push_back(live);
        }
        s = ws.ok() ? fs : ws;
        run.log +=
            "  " + std::to_string(i) + ": " + DescribeCrashOp(op) + " -> " + s.ToString() + "\n";
        if (!s.ok()) break;
        continue;
      }
    }
    run.log += "  " + std::to_string(i) + ": " + DescribeCrashOp(op) + " -> " + s.ToString() + "\n";
    if (!s.ok()) break;  // the disk is dead from here on
    if (op.kind == CrashOp::kFlush) {
      ApplyToModel(op, &live);
      run.model.states.assign(1, live);
    } else if (op.kind != CrashOp::kFill) {
      ApplyToModel(op, &live);
      run.model.states.push_back(live);
    }
  }
  if (!fail_at && s.ok()) {
    // Without faults the live pool must match the model, hydrated or not.
    Image got(spec.volume_bytes);
    Status r = v->Read(0, got);
    EXPECT_TRUE(r.ok()) << r.ToString();
    EXPECT_EQ(FirstDifference(got, live), "") << "the reference run differs from its model";
  }
  run.total_ops = fault.ops_submitted();
  pool.reset();  // after a crash or failure its Close just fails
  EXPECT_TRUE(fake->violations().empty()) << fake->violations().front();
  return run;
}

// Reopens the crashed image and checks it; returns the violations.
std::vector<std::string> CheckCrashed(const CrashSpec& spec, MemoryDevice& dev, const Image& source,
                                      const CrashModel& model, bool* reopened_hydrating) {
  std::vector<std::string> errors;
  auto opened = Pool::Open(dev, CrashPoolOptions(spec));
  if (!opened.ok()) return {"Pool::Open: " + opened.status().ToString()};
  std::unique_ptr<Pool> pool = std::move(opened).value();
  auto fsck = Fsck::Check(*pool);
  if (!fsck.ok() || !fsck->clean()) {
    errors.push_back("fsck: " + (fsck.ok() ? fsck->ToString() : fsck.status().ToString()));
  }
  auto v = pool->OpenVolume("v");
  if (!v.ok()) {
    if (model.volume_durable || !v.status().IsNotFound()) {
      errors.push_back("OpenVolume: " + v.status().ToString());
    }
    return errors;
  }
  auto info = pool->GetHydrationInfo("v");
  if (!info.ok()) return {"GetHydrationInfo: " + info.status().ToString()};
  auto fake = std::make_shared<FakeSource>(source, spec.block_bytes, spec.ranges);
  *reopened_hydrating = info->hydrating;
  if (info->hydrating) {
    // Before the source is back, pending blocks refuse to be read.
    Image all(spec.volume_bytes);
    Status s = (*v)->Read(0, all);
    if (s.ok() || !s.IsIOError()) {
      errors.push_back("read of a hydrating volume without its source: " + s.ToString());
    }
    s = pool->AttachHydrationSource("v", fake);
    if (!s.ok()) errors.push_back("attach: " + s.ToString());
  }
  Image got(spec.volume_bytes);
  Status s = (*v)->Read(0, got);
  if (!s.ok()) return {"read after reopen: " + s.ToString()};
  int match = -1;
  for (size_t i = 0; i < model.states.size() && match < 0; ++i) {
    if (got == model.states[i]) match = static_cast<int>(i);
  }
  if (match < 0) {
    errors.push_back("the volume is none of the " + std::to_string(model.states.size()) +
                     " states the last flush and later writes allow (vs the last flush: " +
                     FirstDifference(got, model.states[0]) + ")");
    return errors;
  }
  // Finish the fill: nothing a reader sees may change.
  for (int guard = 0; guard < 100000; ++guard) {
    auto n = pool->HydrateStep("v", 7 * spec.block_bytes);
    if (!n.ok()) {
      errors.push_back("fill after reopen: " + n.status().ToString());
      break;
    }
    if (*n == 0) break;
  }
  if (pool->GetHydrationInfo("v")->hydrating) errors.push_back("still hydrating after the fill");
  s = (*v)->Flush();
  if (!s.ok()) errors.push_back("flush after the fill: " + s.ToString());
  pool.reset();
  opened = Pool::Open(dev, CrashPoolOptions(spec));
  if (!opened.ok()) return {"Pool::Open after the fill: " + opened.status().ToString()};
  pool = std::move(opened).value();
  Image after(spec.volume_bytes);
  s = pool->OpenVolume("v").value()->Read(0, after);  // no source: none needed any more
  if (!s.ok() || after != got) {
    errors.push_back("after the fill and a reopen: " + s.ToString() + " " +
                     FirstDifference(after, got));
  }
  fsck = Fsck::Check(*pool);
  if (!fsck.ok() || !fsck->clean()) {
    errors.push_back("fsck after the fill: " +
                     (fsck.ok() ? fsck->ToString() : fsck.status().ToString()));
  }
  if (!fake->violations().empty()) errors.push_back("source: " + fake->violations().front());
  return errors;
}

TEST(HydrationTest, LazyRestoreWithConcurrentWritesAndACrashMidHydration) {
  const uint64_t base = testing::TestSeed(4242);
  const bool sanitized = testing::BuiltWithSanitizers();
  const uint64_t workloads = (sanitized ? 4 : 10) * testing::TestScale();
  const int seeds = sanitized ? 1 : 2;
  uint64_t states = 0, failures = 0, hydrating_after = 0;
  for (uint64_t w = 0; w < workloads; ++w) {
    const CrashSpec spec = MakeCrashSpec(base + w);
    const Image source = testing::WriteData(spec.seed * 31 + 1, spec.volume_bytes);
    CrashRunResult ref;
    {
      auto dev = MakeDevice(16 * kMiB, spec.sector_bytes);
      ManualClock clock;
      FaultDevice fault(*dev, FaultDeviceOptions{}, clock);
      ref = RunCrashWorkload(spec, fault, source, std::nullopt);
    }
    ASSERT_FALSE(HasFailure()) << "workload seed " << spec.seed << ":\n" << ref.log;
    for (uint64_t k = ref.base_ops; k <= ref.total_ops; ++k) {
      for (int c = 0; c < seeds; ++c) {
        const uint64_t crash_seed = spec.seed * 1000 + k * 7 + c;
        auto dev = MakeDevice(16 * kMiB, spec.sector_bytes);
        CrashRunResult run;
        {
          ManualClock clock;
          FaultDeviceOptions fo;
          fo.seed = spec.seed;
          FaultDevice fault(*dev, fo, clock);
          run = RunCrashWorkload(spec, fault, source, k);
          const CrashMix mixes[] = {CrashMix(), CrashMix{1, 1, 4, 0.5, 0.5},
                                    CrashMix{4, 1, 1, 0.7, 0.8}};
          Status s = fault.Crash(crash_seed, mixes[crash_seed % 3]);
          ASSERT_TRUE(s.ok()) << s.ToString();
        }
        ++states;
        bool hydrating = false;
        std::vector<std::string> errors = CheckCrashed(spec, *dev, source, run.model, &hydrating);
        hydrating_after += hydrating;
        if (errors.empty()) continue;
        if (++failures <= 4) {
          std::string msg;
          for (const std::string& e : errors) msg += "  - " + e + "\n";
          ADD_FAILURE() << "workload seed " << spec.seed << " (block " << spec.block_bytes
                        << ", sector " << spec.sector_bytes << "): disk dies at device op " << k
                        << " (" << ref.base_ops << ".." << ref.total_ops << "), crash seed "
                        << crash_seed << ":\n"
                        << msg << run.log;
        }
      }
    }
  }
  std::printf(
      "[hydration crash] %llu crash states over %llu workloads, %llu reopened still "
      "hydrating; %llu failing\n",
      static_cast<unsigned long long>(states), static_cast<unsigned long long>(workloads),
      static_cast<unsigned long long>(hydrating_after), static_cast<unsigned long long>(failures));
  EXPECT_EQ(failures, 0u);
  EXPECT_GT(hydrating_after, states / 3) << "too few crashes land mid-hydration";
}

}  // namespace
}  // namespace snapdisk
