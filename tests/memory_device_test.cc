#include "disk/memory_device.h"

#include <gtest/gtest.h>

#include <atomic>
#include <thread>
#include <vector>

#include "support/test_env.h"

namespace snapdisk {
namespace {

using testing::PatternBytes;

std::unique_ptr<MemoryDevice> NewDevice(uint64_t size, uint32_t sector = 4096) {
  auto dev = MemoryDevice::Create(size, sector);
  EXPECT_TRUE(dev.ok()) << dev.status().ToString();
  return std::move(dev).value();
}

TEST(MemoryDeviceTest, HugeDeviceAllocatesNothing) {
  auto dev = NewDevice(uint64_t{1} << 40);  // 1 TiB
  EXPECT_EQ(dev->allocated_bytes(), 0u);
  std::vector<std::byte> buf(8192, std::byte{0xff});
  ASSERT_TRUE(dev->Read((uint64_t{1} << 40) - 8192, buf).ok());
  for (std::byte b : buf) ASSERT_EQ(b, std::byte{0});
  EXPECT_EQ(dev->allocated_bytes(), 0u);
}

TEST(MemoryDeviceTest, WriteReadDiscardRoundTrip) {
  auto dev = NewDevice(1 << 20, 512);
  auto data = PatternBytes(1, 3 * 512);
  ASSERT_TRUE(dev->Write(512, data).ok());
  std::vector<std::byte> back(data.size());
  ASSERT_TRUE(dev->Read(512, back).ok());
  EXPECT_EQ(back, data);
  ASSERT_TRUE(dev->Discard(1024, 512).ok());
  ASSERT_TRUE(dev->Read(512, back).ok());
  for (size_t i = 512; i < 1024; ++i) ASSERT_EQ(back[i], std::byte{0});
  EXPECT_TRUE(std::equal(back.begin(), back.begin() + 512, data.begin()));
  ASSERT_TRUE(dev->Flush().ok());
  auto snap = dev->stats().Snapshot();
  EXPECT_EQ(snap.of(IoOp::kWrite).ops, 1u);
  EXPECT_EQ(snap.of(IoOp::kWrite).bytes, 3u * 512);
  EXPECT_EQ(snap.of(IoOp::kRead).ops, 2u);
  EXPECT_EQ(snap.of(IoOp::kDiscard).ops, 1u);
  EXPECT_EQ(snap.of(IoOp::kFlush).ops, 1u);
  dev->stats().Reset();
  EXPECT_EQ(dev->stats().Snapshot().of(IoOp::kRead).ops, 0u);
}

TEST(MemoryDeviceTest, DiscardOfWholePagesFreesThem) {
  auto dev = NewDevice(1 << 20);
  auto data = PatternBytes(2, 64 << 10);
  ASSERT_TRUE(dev->Write(0, data).ok());
  EXPECT_EQ(dev->allocated_bytes(), 64u << 10);
  ASSERT_TRUE(dev->Discard(0, 32 << 10).ok());
  EXPECT_EQ(dev->allocated_bytes(), 32u << 10);
}

// A discarded page's memory is reused by later writes: what a write does not
// cover of a page reads as zeros, never as the page's old contents.
TEST(MemoryDeviceTest, AReusedPageReadsAsZerosBesideWhatIsWritten) {
  auto dev = NewDevice(1 << 20, 512);
  const auto old = PatternBytes(3, 64 << 10);
  ASSERT_TRUE(dev->Write(0, old).ok());
  ASSERT_TRUE(dev->Discard(0, 64 << 10).ok());  // 16 pages to the free list
  EXPECT_EQ(dev->allocated_bytes(), 0u);
  const auto small = PatternBytes(4, 512);
  for (uint64_t page = 100; page < 116; ++page) {  // each takes a spare page
    ASSERT_TRUE(dev->Write(page * 4096 + 1024, small).ok());
  }
  const auto whole = PatternBytes(5, 4096);
  ASSERT_TRUE(dev->Write(200 * 4096, whole).ok());  // a spare page again, or a new one
  std::vector<std::byte> back(4096);
  for (uint64_t page = 100; page < 116; ++page) {
    ASSERT_TRUE(dev->Read(page * 4096, back).ok());
    for (size_t i = 0; i < 4096; ++i) {
      const std::byte want = i >= 1024 && i < 1536 ? small[i - 1024] : std::byte{0};
      ASSERT_EQ(back[i], want) << "page " << page << " byte " << i;
    }
  }
  ASSERT_TRUE(dev->Read(200 * 4096, back).ok());
  EXPECT_EQ(back, whole);
  EXPECT_EQ(dev->allocated_bytes(), 17u * 4096);
  ASSERT_TRUE(dev->Read(0, back).ok());  // the discarded range stays zeros
  for (std::byte b : back) ASSERT_EQ(b, std::byte{0});
}

// Pages made ready by the supplier thread are zeros beside what a write
// covers, whether the supplier keeps up or the writes outrun it; stopping and
// restarting it loses nothing.
TEST(MemoryDeviceTest, PagesKeptReadyReadAsZerosBesideWhatIsWritten) {
  auto dev = NewDevice(64 << 20, 512);
  dev->KeepPagesReady(256);
  const auto small = PatternBytes(6, 512);
  constexpr uint64_t kPages = 4096;  // more than the supplier keeps ready
  for (uint64_t page = 0; page < kPages; ++page) {
    ASSERT_TRUE(dev->Write(page * 4096 + (page % 8) * 512, small).ok());
    if (page == kPages / 2) {
      dev->KeepPagesReady(0);  // stop, then go on with a new one
      dev->KeepPagesReady(64);
    }
  }
  EXPECT_EQ(dev->allocated_bytes(), kPages * 4096);
  std::vector<std::byte> back(4096);
  for (uint64_t page = 0; page < kPages; ++page) {
    ASSERT_TRUE(dev->Read(page * 4096, back).ok());
    const size_t at = (page % 8) * 512;
    for (size_t i = 0; i < 4096; ++i) {
      const std::byte want = i >= at && i < at + 512 ? small[i - at] : std::byte{0};
      ASSERT_EQ(back[i], want) << "page " << page << " byte " << i;
    }
  }
}  // the destructor stops the supplier and frees what it kept ready

TEST(MemoryDeviceTest, BadRequestsAreInvalidArgumentWithoutCallback) {
  auto dev = NewDevice(1 << 20, 4096);
  std::vector<std::byte> buf(4096);
  EXPECT_TRUE(dev->Read(1, buf).IsInvalidArgument());                     // misaligned offset
  EXPECT_TRUE(dev->Read(0, std::span(buf).first(100)).IsInvalidArgument());  // misaligned length
  EXPECT_TRUE(dev->Read(1 << 20, buf).IsInvalidArgument());               // past the end
  EXPECT_TRUE(dev->Read(0, std::span(buf).first(0)).IsInvalidArgument());  // empty
  EXPECT_TRUE(dev->Discard(~uint64_t{0} - 4095, 8192).IsInvalidArgument());  // overflow
  IoRequest r{.op = IoOp::kWrite, .offset_bytes = 0, .length_bytes = 4096, .data = nullptr};
  bool called = false;
  r.on_complete = [&](IoRequest&, const Status&) { called = true; };
  Status s = dev->Submit(r);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("no data buffer"), std::string::npos);
  dev->Poll(0);
  EXPECT_FALSE(called);
  EXPECT_EQ(dev->in_flight(), 0u);
}

TEST(MemoryDeviceTest, QueueDepthBoundsSubmissions) {
  auto dev = std::move(MemoryDevice::Create(1 << 20, 4096, 32)).value();
  std::vector<IoRequest> reqs(33);
  std::vector<std::byte> buf(4096);
  int done = 0;
  for (int i = 0; i < 32; ++i) {
    reqs[i] = IoRequest{.op = IoOp::kRead, .offset_bytes = uint64_t(i) * 4096,
                        .length_bytes = 4096, .data = buf.data()};
    reqs[i].on_complete = [&](IoRequest&, const Status& s) { done += s.ok(); };
    ASSERT_TRUE(dev->Submit(reqs[i]).ok());
  }
  EXPECT_EQ(dev->in_flight(), 32u);
  reqs[32] = reqs[0];
  EXPECT_TRUE(dev->Submit(reqs[32]).IsBusy());
  EXPECT_EQ(dev->Poll(32), 32u);
  EXPECT_EQ(done, 32);
  EXPECT_EQ(dev->in_flight(), 0u);
}

TEST(MemoryDeviceTest, CloneIsIndependent) {
  auto dev = NewDevice(1 << 20);
  auto a = PatternBytes(3, 4096);
  ASSERT_TRUE(dev->Write(0, a).ok());
  auto copy = dev->Clone();
  auto b = PatternBytes(4, 4096);
  ASSERT_TRUE(dev->Write(0, b).ok());
  std::vector<std::byte> back(4096);
  ASSERT_TRUE(copy->Read(0, back).ok());
  EXPECT_EQ(back, a);
}

TEST(MemoryDeviceTest, ReadsBesideTheDrivingThreadSeeStableRangesWhileOthersChange) {
  auto dev = NewDevice(64 << 20);
  ASSERT_TRUE(dev->SupportsConcurrentReads());
  const std::vector<std::byte> stable = PatternBytes(1, 256 << 10);
  ASSERT_TRUE(dev->Write(0, stable).ok());
  std::atomic<bool> stop{false};
  std::atomic<int> mismatches{0}, reads{0};
  std::thread reader([&] {
    std::vector<std::byte> got(stable.size());
    while (!stop.load()) {
      Status s = dev->ReadConcurrent(0, got);
      if (!s.ok() || got != stable) ++mismatches;
      ++reads;
    }
  });
  // Meanwhile the driving thread adds and drops pages (and page tables)
  // everywhere else.
  const std::vector<std::byte> other = PatternBytes(2, 64 << 10);
  for (int round = 0; round < 200 || reads.load() < 20; ++round) {
    const uint64_t at = (1 << 20) + static_cast<uint64_t>(round % 60) * (1 << 20);
    ASSERT_TRUE(dev->Write(at, other).ok());
    if (round % 3 == 0) {
      ASSERT_TRUE(dev->Discard(at, other.size()).ok());
    }
  }
  stop.store(true);
  reader.join();
  EXPECT_EQ(mismatches.load(), 0);
  // Never-written ranges read as zeros; bad ranges are refused as Submit refuses them.
  std::vector<std::byte> buf(4096, std::byte{0xff});
  ASSERT_TRUE(dev->ReadConcurrent(63 << 20, buf).ok());
  EXPECT_EQ(buf, std::vector<std::byte>(4096));
  EXPECT_TRUE(dev->ReadConcurrent(100, buf).IsInvalidArgument());
  EXPECT_TRUE(dev->ReadConcurrent(64 << 20, buf).IsInvalidArgument());
}

TEST(MemoryDeviceTest, CreateRejectsBadGeometry) {
  EXPECT_TRUE(MemoryDevice::Create(4096, 1024).status().IsInvalidArgument());
  EXPECT_TRUE(MemoryDevice::Create(1000, 512).status().IsInvalidArgument());
  EXPECT_TRUE(MemoryDevice::Create(0, 512).status().IsInvalidArgument());
}

}  // namespace
}  // namespace snapdisk
