#include "disk/file_device.h"

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "support/test_env.h"

namespace snapdisk {
namespace {

using testing::PatternBytes;
using testing::ScratchDir;

constexpr uint64_t kMiB = uint64_t{1} << 20;

// A zeroed buffer aligned for O_DIRECT.
class AlignedBuffer {
 public:
  explicit AlignedBuffer(size_t size_bytes)
      : size_(size_bytes),
        data_(static_cast<std::byte*>(std::aligned_alloc(FileDevice::kDirectIoAlignmentBytes,
                                                         size_bytes))) {
    std::memset(data_.get(), 0, size_);
  }
  std::byte* data() { return data_.get(); }
  std::span<std::byte> span() { return {data_.get(), size_}; }
  size_t size() const { return size_; }

 private:
  struct Free {
    void operator()(std::byte* p) const { std::free(p); }
  };
  size_t size_;
  std::unique_ptr<std::byte, Free> data_;
};

std::unique_ptr<FileDevice> MustCreate(const std::string& path, uint64_t size,
                                       const FileDeviceOptions& options = {}) {
  auto dev = FileDevice::Create(path, size, options);
  EXPECT_TRUE(dev.ok()) << dev.status().ToString();
  return dev.ok() ? std::move(dev).value() : nullptr;
}

uint64_t AllocatedBytes(const std::string& path) {
  struct stat st;
  EXPECT_EQ(stat(path.c_str(), &st), 0) << path;
  return static_cast<uint64_t>(st.st_blocks) * 512;
}

bool AllZero(std::span<const std::byte> bytes) {
  return std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; });
}

// ---- Round trips --------------------------------------------------------------

struct RoundTripParam {
  uint32_t sector;
  bool force_sync;
};

class FileDeviceRoundTripTest : public ::testing::TestWithParam<RoundTripParam> {};

TEST_P(FileDeviceRoundTripTest, WriteReadDiscardFlush) {
  const auto [sector, force_sync] = GetParam();
  ScratchDir dir;
  FileDeviceOptions options{.sector_size_bytes = sector, .force_sync_io = force_sync};
  auto dev = MustCreate(dir.File("disk"), 4 * kMiB, options);
  ASSERT_NE(dev, nullptr);
  if (force_sync) {
    EXPECT_FALSE(dev->uses_io_uring());
  } else if (!dev->uses_io_uring()) {
    std::printf("note: io_uring unavailable here, testing the fallback twice\n");
  }
  EXPECT_EQ(dev->size_bytes(), 4 * kMiB);
  EXPECT_EQ(dev->sector_size_bytes(), sector);
  EXPECT_EQ(dev->queue_depth(), 128u);
  EXPECT_EQ(dev->name(), dir.File("disk"));

  auto data = PatternBytes(sector, 3 * sector);
  ASSERT_TRUE(dev->Write(sector, data).ok());
  std::vector<std::byte> back(data.size());
  ASSERT_TRUE(dev->Read(sector, back).ok());
  EXPECT_EQ(back, data);

  // Never-written space reads as zeros.
  std::vector<std::byte> tail(2 * sector, std::byte{0x5a});
  ASSERT_TRUE(dev->Read(4 * kMiB - tail.size(), tail).ok());
  EXPECT_TRUE(AllZero(tail));

  // Discard of the middle sector: zeros there, data around it.
  ASSERT_TRUE(dev->Discard(2 * sector, sector).ok());
  ASSERT_TRUE(dev->Read(sector, back).ok());
  EXPECT_TRUE(std::equal(back.begin(), back.begin() + sector, data.begin()));
  EXPECT_TRUE(AllZero(std::span(back).subspan(sector, sector)));
  EXPECT_TRUE(std::equal(back.begin() + 2 * sector, back.end(), data.begin() + 2 * sector));
  ASSERT_TRUE(dev->Flush().ok());

  auto snap = dev->stats().Snapshot();
  EXPECT_EQ(snap.of(IoOp::kWrite).ops, 1u);
  EXPECT_EQ(snap.of(IoOp::kWrite).bytes, 3u * sector);
  EXPECT_EQ(snap.of(IoOp::kRead).ops, 3u);
  EXPECT_EQ(snap.of(IoOp::kDiscard).ops, 1u);
  EXPECT_EQ(snap.of(IoOp::kFlush).ops, 1u);
  EXPECT_EQ(snap.of(IoOp::kRead).errors, 0u);
  EXPECT_GT(snap.of(IoOp::kWrite).latency_us_max, 0.0);
  EXPECT_EQ(dev->in_flight(), 0u);

  // The data survives closing and reopening.
  dev.reset();
  auto reopened = FileDevice::Open(dir.File("disk"), options);
  ASSERT_TRUE(reopened.ok()) << reopened.status().ToString();
  EXPECT_EQ((*reopened)->size_bytes(), 4 * kMiB);
  std::vector<std::byte> first(sector);
  ASSERT_TRUE((*reopened)->Read(sector, first).ok());
  EXPECT_TRUE(std::equal(first.begin(), first.end(), data.begin()));
}

INSTANTIATE_TEST_SUITE_P(SectorsAndPaths, FileDeviceRoundTripTest,
                         ::testing::Values(RoundTripParam{512, false}, RoundTripParam{4096, false},
                                           RoundTripParam{512, true}, RoundTripParam{4096, true}),
                         [](const ::testing::TestParamInfo<RoundTripParam>& info) {
                           return std::to_string(info.param.sector) +
                                  (info.param.force_sync ? "_sync_fallback" : "_io_uring");
                         });

TEST(FileDeviceTest, UsesIoUringWhenTheKernelHasIt) {
  ScratchDir dir;
  auto dev = MustCreate(dir.File("disk"), kMiB);
  ASSERT_NE(dev, nullptr);
  if (!dev->uses_io_uring()) GTEST_SKIP() << "io_uring is unavailable on this machine";
  SUCCEED();
}

TEST(FileDeviceTest, OneTebibyteDeviceIsSparse) {
  ScratchDir dir;
  const uint64_t size = uint64_t{1} << 40;
  auto dev = MustCreate(dir.File("big"), size);
  ASSERT_NE(dev, nullptr);
  EXPECT_EQ(dev->size_bytes(), size);
  EXPECT_EQ(AllocatedBytes(dir.File("big")), 0u);
  std::vector<std::byte> buf(8192, std::byte{0xff});
  ASSERT_TRUE(dev->Read(size - buf.size(), buf).ok());
  EXPECT_TRUE(AllZero(buf));
  auto data = PatternBytes(7, 4096);
  ASSERT_TRUE(dev->Write(size - 4096, data).ok());
  ASSERT_TRUE(dev->Read(size - 4096, std::span(buf).first(4096)).ok());
  EXPECT_TRUE(std::equal(data.begin(), data.end(), buf.begin()));
  ASSERT_TRUE(dev->Flush().ok());
  EXPECT_LE(AllocatedBytes(dir.File("big")), 64u * 1024);  // one block (+ fs metadata)
}

// ---- Many requests in flight ------------------------------------------------------

// Keeps `in_flight` requests going at random, non-overlapping places (so their
// order does not matter), resubmitting from the callback, and checks every read
// against an in-memory copy of the device.
void RunRandomWorkload(FileDevice& dev, uint64_t seed, uint32_t in_flight, int total_requests) {
  const uint64_t size = dev.size_bytes();
  const uint32_t sector = dev.sector_size_bytes();
  constexpr uint64_t kRegionBytes = 64 * 1024;  // one request stays inside one region
  const uint64_t regions = size / kRegionBytes;
  std::vector<std::byte> model(size);
  std::vector<bool> busy(regions, false);
  std::mt19937_64 rng(seed);

  std::vector<IoRequest> reqs(in_flight);
  std::vector<AlignedBuffer> buffers;
  for (uint32_t i = 0; i < in_flight; ++i) buffers.emplace_back(kRegionBytes);
  int submitted = 0;
  int completed = 0;
  int mismatches = 0;
  int errors = 0;
  uint64_t pattern = seed;

  std::function<void(uint32_t)> start = [&](uint32_t i) {
    uint64_t region;
    do {
      region = rng() % regions;
    } while (busy[region]);
    busy[region] = true;
    const uint64_t sectors_per_region = kRegionBytes / sector;
    const uint64_t first = rng() % sectors_per_region;
    const uint64_t count = 1 + rng() % (sectors_per_region - first);
    IoRequest& r = reqs[i];
    r.op = (rng() % 2) ? IoOp::kWrite : IoOp::kRead;
    r.offset_bytes = region * kRegionBytes + first * sector;
    r.length_bytes = count * sector;
    r.data = buffers[i].data();
    r.user_tag = i;
    if (r.op == IoOp::kWrite) {
      auto bytes = PatternBytes(++pattern, r.length_bytes);
      std::memcpy(r.data, bytes.data(), bytes.size());
      std::memcpy(model.data() + r.offset_bytes, bytes.data(), bytes.size());
    }
    r.on_complete = [&](IoRequest& done, const Status& status) {
      ++completed;
      if (!status.ok()) {
        ++errors;
        ADD_FAILURE() << status.ToString();
      } else if (done.op == IoOp::kRead &&
                 std::memcmp(done.data, model.data() + done.offset_bytes, done.length_bytes) != 0) {
        ++mismatches;
      }
      busy[done.offset_bytes / kRegionBytes] = false;
      if (submitted < total_requests) start(static_cast<uint32_t>(done.user_tag));  // from the callback
    };
    ++submitted;
    Status s = dev.Submit(r);
    ASSERT_TRUE(s.ok()) << s.ToString();
  };

  for (uint32_t i = 0; i < in_flight; ++i) start(i);
  EXPECT_EQ(dev.in_flight(), in_flight);
  uint32_t max_seen = 0;
  while (dev.in_flight() > 0) {
    max_seen = std::max(max_seen, dev.in_flight());
    dev.Poll(1);
  }
  EXPECT_EQ(max_seen, in_flight);
  EXPECT_EQ(completed, total_requests);
  EXPECT_EQ(errors, 0);
  EXPECT_EQ(mismatches, 0);

  // The whole device matches the model.
  std::vector<std::byte> all(size);
  ASSERT_TRUE(dev.Read(0, all).ok());
  EXPECT_TRUE(all == model) << "device contents differ from the model";
}

TEST(FileDeviceTest, SixtyFourInFlightAtRandomOffsetsMatchModel) {
  ScratchDir dir;
  const uint64_t seed = testing::TestSeed(20240611);
  auto dev = MustCreate(dir.File("disk"), 16 * kMiB, {.sector_size_bytes = 512, .queue_depth = 128});
  ASSERT_NE(dev, nullptr);
  RunRandomWorkload(*dev, seed, 64, 3000 * static_cast<int>(testing::TestScale()));
  auto snap = dev->stats().Snapshot();
  EXPECT_EQ(snap.of(IoOp::kRead).ops + snap.of(IoOp::kWrite).ops, 3000u * testing::TestScale() + 1);
}

TEST(FileDeviceTest, QueueFullIsBusy) {
  ScratchDir dir;
  auto dev = MustCreate(dir.File("disk"), kMiB, {.queue_depth = 32});
  ASSERT_NE(dev, nullptr);
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
  Status busy = dev->Submit(reqs[32]);
  EXPECT_TRUE(busy.IsBusy()) << busy.ToString();
  EXPECT_NE(busy.message().find(dir.File("disk")), std::string::npos);
  uint32_t ran = 0;
  while (ran < 32) ran += dev->Poll(32 - ran);
  EXPECT_EQ(ran, 32u);
  EXPECT_EQ(done, 32);
  EXPECT_EQ(dev->in_flight(), 0u);
  EXPECT_TRUE(dev->Submit(reqs[32]).ok());  // room again
  while (dev->in_flight() > 0) dev->Poll(1);
}

TEST(FileDeviceTest, PollRunsCallbacksInCompletionBatches) {
  ScratchDir dir;
  auto dev = MustCreate(dir.File("disk"), kMiB, {.queue_depth = 32, .completion_batch = 4});
  ASSERT_NE(dev, nullptr);
  std::vector<IoRequest> reqs(32);
  std::vector<std::byte> buf(4096);
  int done = 0;
  for (int i = 0; i < 32; ++i) {
    reqs[i] = IoRequest{.op = IoOp::kRead, .offset_bytes = uint64_t(i) * 4096,
                        .length_bytes = 4096, .data = buf.data()};
    reqs[i].on_complete = [&](IoRequest&, const Status& s) { done += s.ok(); };
    ASSERT_TRUE(dev->Submit(reqs[i]).ok());
  }
  // Poll(n) runs at least n callbacks, however small the batch.
  EXPECT_GE(dev->Poll(10), 10u);
  while (dev->in_flight() > 0) {
    const uint32_t ran = dev->Poll(1);
    EXPECT_GE(ran, 1u);
    if (dev->uses_io_uring()) {
      EXPECT_LE(ran, 4u);  // one batch per round
    }
  }
  EXPECT_EQ(done, 32);
}

TEST(FileDeviceTest, PollZeroNeverBlocksAndEventuallyCompletes) {
  ScratchDir dir;
  auto dev = MustCreate(dir.File("disk"), kMiB);
  ASSERT_NE(dev, nullptr);
  std::vector<std::byte> buf(4096);
  bool done = false;
  IoRequest r{.op = IoOp::kRead, .offset_bytes = 0, .length_bytes = 4096, .data = buf.data()};
  r.on_complete = [&](IoRequest&, const Status& s) {
    EXPECT_TRUE(s.ok()) << s.ToString();
    done = true;
  };
  ASSERT_TRUE(dev->Submit(r).ok());
  for (int i = 0; i < 1000000 && !done; ++i) dev->Poll(0);
  EXPECT_TRUE(done);
}

TEST(FileDeviceTest, BadRequestsAreInvalidArgumentWithoutCallback) {
  ScratchDir dir;
  auto dev = MustCreate(dir.File("disk"), kMiB, {.sector_size_bytes = 4096});
  ASSERT_NE(dev, nullptr);
  std::vector<std::byte> buf(4096);
  EXPECT_TRUE(dev->Read(1, buf).IsInvalidArgument());                        // misaligned offset
  EXPECT_TRUE(dev->Read(0, std::span(buf).first(512)).IsInvalidArgument());  // misaligned length
  EXPECT_TRUE(dev->Read(kMiB, buf).IsInvalidArgument());                     // past the end
  EXPECT_TRUE(dev->Read(kMiB - 4096, std::span(buf).first(0)).IsInvalidArgument());  // empty
  EXPECT_TRUE(dev->Discard(~uint64_t{0} - 4095, 8192).IsInvalidArgument());  // overflow
  for (IoOp op : {IoOp::kRead, IoOp::kWrite}) {
    IoRequest r{.op = op, .offset_bytes = 0, .length_bytes = 4096, .data = nullptr};
    bool called = false;
    r.on_complete = [&](IoRequest&, const Status&) { called = true; };
    Status s = dev->Submit(r);
    EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
    EXPECT_NE(s.message().find("no data buffer"), std::string::npos);
    EXPECT_NE(s.message().find(dir.File("disk")), std::string::npos);
    dev->Poll(0);
    EXPECT_FALSE(called);
  }
  EXPECT_EQ(dev->in_flight(), 0u);
  auto snap = dev->stats().Snapshot();
  EXPECT_EQ(snap.of(IoOp::kRead).ops + snap.of(IoOp::kWrite).ops + snap.of(IoOp::kDiscard).ops,
            0u);
}

// ---- Short transfers --------------------------------------------------------------

class FileDeviceShortIoTest : public ::testing::TestWithParam<bool> {};

TEST_P(FileDeviceShortIoTest, CappedTransfersAreRequeuedUntilDone) {
  const bool force_sync = GetParam();
  ScratchDir dir;
  // Every SQE carries at most 1 KiB, so a 256 KiB request takes 256 trips
  // through the completion path before its callback runs.
  FileDeviceOptions capped{.sector_size_bytes = 512, .force_sync_io = force_sync,
                           .max_bytes_per_sqe_for_testing = 1024};
  auto dev = MustCreate(dir.File("disk"), 4 * kMiB, capped);
  ASSERT_NE(dev, nullptr);
  const uint64_t seed = testing::TestSeed(7);

  auto data = PatternBytes(seed, 256 * 1024);
  int callbacks = 0;
  IoRequest w{.op = IoOp::kWrite, .offset_bytes = 3 * 512, .length_bytes = data.size(),
              .data = data.data()};
  w.on_complete = [&](IoRequest&, const Status& s) {
    EXPECT_TRUE(s.ok()) << s.ToString();
    ++callbacks;
  };
  ASSERT_TRUE(dev->Submit(w).ok());
  while (dev->in_flight() > 0) dev->Poll(1);
  EXPECT_EQ(callbacks, 1);

  std::vector<std::byte> back(data.size());
  ASSERT_TRUE(dev->Read(3 * 512, back).ok());
  EXPECT_EQ(back, data);
  auto snap = dev->stats().Snapshot();
  EXPECT_EQ(snap.of(IoOp::kWrite).ops, 1u);  // one request, however many SQEs
  EXPECT_EQ(snap.of(IoOp::kWrite).bytes, data.size());
  EXPECT_EQ(snap.of(IoOp::kRead).ops, 1u);

  // An uncapped device sees the same bytes.
  dev.reset();
  auto plain = FileDevice::Open(dir.File("disk"), {.sector_size_bytes = 512});
  ASSERT_TRUE(plain.ok()) << plain.status().ToString();
  std::fill(back.begin(), back.end(), std::byte{0});
  ASSERT_TRUE((*plain)->Read(3 * 512, back).ok());
  EXPECT_EQ(back, data);
  plain->reset();

  // And many capped requests in flight at once still match the model.
  auto again = FileDevice::Open(dir.File("disk"), capped);
  ASSERT_TRUE(again.ok()) << again.status().ToString();
  // Start from a known state: the model begins as zeros.
  std::vector<std::byte> zeros(4 * kMiB);
  ASSERT_TRUE((*again)->Write(0, zeros).ok());
  RunRandomWorkload(**again, seed + 1, 48, 400);
}

INSTANTIATE_TEST_SUITE_P(Paths, FileDeviceShortIoTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "sync_fallback" : "io_uring";
                         });

class FileDeviceTruncationTest : public ::testing::TestWithParam<bool> {};

TEST_P(FileDeviceTruncationTest, ReadPastATruncatedEndIsIOError) {
  const bool force_sync = GetParam();
  ScratchDir dir;
  const std::string path = dir.File("disk");
  auto dev = MustCreate(path, kMiB, {.force_sync_io = force_sync});
  ASSERT_NE(dev, nullptr);
  auto data = PatternBytes(11, kMiB);
  ASSERT_TRUE(dev->Write(0, data).ok());

  // Someone else cuts the file in half behind the device's back.
  int other = open(path.c_str(), O_RDWR);
  ASSERT_GE(other, 0);
  ASSERT_EQ(ftruncate(other, kMiB / 2), 0);
  close(other);

  std::vector<std::byte> buf(kMiB / 2, std::byte{0x77});
  // Straddling the cut: the kernel returns the first part short, the requeued
  // remainder reads 0 bytes.
  Status straddle = dev->Read(kMiB / 4, buf);
  EXPECT_TRUE(straddle.IsIOError()) << straddle.ToString();
  EXPECT_NE(straddle.message().find("unexpected end of file"), std::string::npos)
      << straddle.ToString();
  EXPECT_NE(straddle.message().find(path), std::string::npos) << straddle.ToString();
  EXPECT_NE(straddle.message().find("offset " + std::to_string(kMiB / 2)), std::string::npos)
      << straddle.ToString();
  // Entirely beyond the cut.
  Status beyond = dev->Read(kMiB / 2, buf);
  EXPECT_TRUE(beyond.IsIOError()) << beyond.ToString();
  EXPECT_NE(beyond.message().find("unexpected end of file"), std::string::npos);
  // Before the cut still works.
  ASSERT_TRUE(dev->Read(0, buf).ok());
  EXPECT_TRUE(std::equal(buf.begin(), buf.end(), data.begin()));
  EXPECT_EQ(dev->stats().Snapshot().of(IoOp::kRead).errors, 2u);
  EXPECT_EQ(dev->in_flight(), 0u);
}

INSTANTIATE_TEST_SUITE_P(Paths, FileDeviceTruncationTest, ::testing::Values(false, true),
                         [](const ::testing::TestParamInfo<bool>& info) {
                           return info.param ? "sync_fallback" : "io_uring";
                         });

// ---- Discard, O_DIRECT ----------------------------------------------------------

TEST(FileDeviceTest, DiscardPunchesAHole) {
  ScratchDir dir;
  const std::string path = dir.File("disk");
  auto dev = MustCreate(path, 4 * kMiB);
  ASSERT_NE(dev, nullptr);
  auto data = PatternBytes(5, 2 * kMiB);
  ASSERT_TRUE(dev->Write(kMiB, data).ok());
  ASSERT_TRUE(dev->Flush().ok());
  const uint64_t before = AllocatedBytes(path);
  EXPECT_GE(before, 2 * kMiB);

  ASSERT_TRUE(dev->Discard(kMiB + kMiB / 2, kMiB).ok());
  const uint64_t after = AllocatedBytes(path);
  EXPECT_LE(after + kMiB, before) << "before " << before << " after " << after;

  std::vector<std::byte> back(2 * kMiB);
  ASSERT_TRUE(dev->Read(kMiB, back).ok());
  EXPECT_TRUE(std::equal(back.begin(), back.begin() + kMiB / 2, data.begin()));
  EXPECT_TRUE(AllZero(std::span(back).subspan(kMiB / 2, kMiB)));
  EXPECT_TRUE(std::equal(back.begin() + 3 * kMiB / 2, back.end(), data.begin() + 3 * kMiB / 2));
  EXPECT_EQ(dev->size_bytes(), 4 * kMiB);
  struct stat st;
  ASSERT_EQ(stat(path.c_str(), &st), 0);
  EXPECT_EQ(static_cast<uint64_t>(st.st_size), 4 * kMiB);  // KEEP_SIZE
}

TEST(FileDeviceTest, DirectIoRoundTrip) {
  ScratchDir dir;
  const std::string path = dir.File("disk");
  auto created = FileDevice::Create(path, 4 * kMiB, {.direct_io = true});
  if (created.status().IsUnsupported()) {
    GTEST_SKIP() << "the file system refuses O_DIRECT: " << created.status().ToString();
  }
  ASSERT_TRUE(created.ok()) << created.status().ToString();
  auto dev = std::move(created).value();
  EXPECT_TRUE(dev->direct_io());

  AlignedBuffer out(64 * 1024);
  auto data = PatternBytes(21, out.size());
  std::memcpy(out.data(), data.data(), data.size());
  Status w = dev->Write(8192, out.span());
  if (w.IsIOError() && w.message().find("Invalid argument") != std::string::npos) {
    GTEST_SKIP() << "the file system refuses this O_DIRECT request: " << w.ToString();
  }
  ASSERT_TRUE(w.ok()) << w.ToString();
  AlignedBuffer in(64 * 1024);
  ASSERT_TRUE(dev->Read(8192, in.span()).ok());
  EXPECT_TRUE(std::equal(data.begin(), data.end(), in.data()));
  ASSERT_TRUE(dev->Flush().ok());
  // Reads beside the driving thread: the same bytes, and the same buffer rule.
  ASSERT_TRUE(dev->SupportsConcurrentReads());
  AlignedBuffer beside(64 * 1024);
  ASSERT_TRUE(dev->ReadConcurrent(8192, beside.span()).ok());
  EXPECT_TRUE(std::equal(data.begin(), data.end(), beside.data()));
  Status misaligned = dev->ReadConcurrent(0, beside.span().subspan(512, 4096));
  EXPECT_TRUE(misaligned.IsInvalidArgument()) << misaligned.ToString();
  EXPECT_NE(misaligned.message().find("O_DIRECT"), std::string::npos) << misaligned.ToString();

  // A buffer that is sector-sized but not 4096-aligned is refused up front.
  AlignedBuffer big(3 * 4096);
  IoRequest r{.op = IoOp::kRead, .offset_bytes = 0, .length_bytes = 4096,
              .data = big.data() + 512};
  bool called = false;
  r.on_complete = [&](IoRequest&, const Status&) { called = true; };
  Status s = dev->Submit(r);
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_NE(s.message().find("aligned"), std::string::npos) << s.ToString();
  EXPECT_NE(s.message().find(path), std::string::npos);
  dev->Poll(0);
  EXPECT_FALSE(called);

  // The short-I/O path works under O_DIRECT too (4 KiB per SQE).
  dev.reset();
  auto capped = FileDevice::Open(path, {.direct_io = true, .max_bytes_per_sqe_for_testing = 4096});
  ASSERT_TRUE(capped.ok()) << capped.status().ToString();
  std::memset(in.data(), 0, in.size());
  ASSERT_TRUE((*capped)->Read(8192, in.span()).ok());
  EXPECT_TRUE(std::equal(data.begin(), data.end(), in.data()));
}

// ---- Errors, reentrancy, teardown ---------------------------------------------

TEST(FileDeviceTest, ErrorsNameThePath) {
  ScratchDir dir;
  auto expect_names = [](const Status& s, const std::string& path) {
    EXPECT_FALSE(s.ok());
    EXPECT_NE(s.message().find(path), std::string::npos) << s.ToString();
  };
  const std::string missing = dir.File("missing");
  Status s = FileDevice::Open(missing).status();
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  expect_names(s, missing);

  const std::string no_dir = dir.File("no/such/dir/disk");
  s = FileDevice::Create(no_dir, kMiB).status();
  EXPECT_TRUE(s.IsNotFound()) << s.ToString();
  expect_names(s, no_dir);

  const std::string existing = dir.File("existing");
  ASSERT_NE(MustCreate(existing, kMiB), nullptr);
  s = FileDevice::Create(existing, kMiB).status();
  EXPECT_TRUE(s.IsAlreadyExists()) << s.ToString();
  expect_names(s, existing);

  const std::string odd = dir.File("odd");
  {
    int fd = open(odd.c_str(), O_CREAT | O_WRONLY, 0644);
    ASSERT_GE(fd, 0);
    ASSERT_EQ(ftruncate(fd, 4096 + 512), 0);
    close(fd);
  }
  s = FileDevice::Open(odd).status();  // not a multiple of 4096
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  expect_names(s, odd);
  EXPECT_TRUE(FileDevice::Open(odd, {.sector_size_bytes = 512}).ok());

  const std::string empty = dir.File("empty");
  close(open(empty.c_str(), O_CREAT | O_WRONLY, 0644));
  s = FileDevice::Open(empty).status();
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  expect_names(s, empty);

  s = FileDevice::Open(dir.path().string()).status();  // a directory
  EXPECT_FALSE(s.ok());
  expect_names(s, dir.path().string());

  const std::string fresh = dir.File("fresh");
  s = FileDevice::Create(fresh, kMiB + 512).status();
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  expect_names(s, fresh);
  s = FileDevice::Create(fresh, 0).status();
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  s = FileDevice::Create(fresh, kMiB, {.sector_size_bytes = 1024}).status();
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  expect_names(s, fresh);
  s = FileDevice::Create(fresh, kMiB, {.queue_depth = 16}).status();
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  expect_names(s, fresh);
  s = FileDevice::Create(fresh, kMiB, {.sector_size_bytes = 512,
                                       .max_bytes_per_sqe_for_testing = 100})
          .status();
  EXPECT_TRUE(s.IsInvalidArgument()) << s.ToString();
  EXPECT_FALSE(std::filesystem::exists(fresh)) << "a failed Create left a file behind";
}

TEST(FileDeviceTest, CallbackMaySubmitButNotPoll) {
  ScratchDir dir;
  auto dev = MustCreate(dir.File("disk"), kMiB);
  ASSERT_NE(dev, nullptr);
  std::vector<std::byte> buf(4096);
  IoRequest first{.op = IoOp::kRead, .offset_bytes = 0, .length_bytes = 4096, .data = buf.data()};
  IoRequest second = first;
  bool second_done = false;
  second.on_complete = [&](IoRequest&, const Status& s) {
    EXPECT_TRUE(s.ok());
    second_done = true;
  };
  first.on_complete = [&](IoRequest&, const Status& s) {
    EXPECT_TRUE(s.ok());
    EXPECT_TRUE(dev->Submit(second).ok());
  };
  ASSERT_TRUE(dev->Submit(first).ok());
  while (dev->in_flight() > 0) dev->Poll(1);
  EXPECT_TRUE(second_done);
}

void PollFromCallback(const std::string& path) {
  auto dev = std::move(FileDevice::Create(path, kMiB)).value();
  std::vector<std::byte> buf(4096);
  IoRequest r{.op = IoOp::kRead, .offset_bytes = 0, .length_bytes = 4096, .data = buf.data()};
  r.on_complete = [&](IoRequest&, const Status&) { dev->Poll(0); };
  (void)dev->Submit(r);
  dev->Poll(1);
}

TEST(FileDeviceDeathTest, PollFromACallbackAborts) {
  GTEST_FLAG_SET(death_test_style, "threadsafe");
  ScratchDir dir;
  EXPECT_DEATH(PollFromCallback(dir.File("disk")),
               "Poll called from inside a completion callback");
}

TEST(FileDeviceTest, DestroyingWithRequestsInFlightDropsCallbacks) {
  ScratchDir dir;
  auto dev = MustCreate(dir.File("disk"), 4 * kMiB);
  ASSERT_NE(dev, nullptr);
  std::vector<IoRequest> reqs(64);
  std::vector<std::byte> buf(64 * 4096);
  int called = 0;
  for (int i = 0; i < 64; ++i) {
    reqs[i] = IoRequest{.op = IoOp::kWrite, .offset_bytes = uint64_t(i) * 4096,
                        .length_bytes = 4096, .data = buf.data() + i * 4096};
    reqs[i].on_complete = [&](IoRequest&, const Status&) { ++called; };
    ASSERT_TRUE(dev->Submit(reqs[i]).ok());
  }
  dev->Poll(0);  // half-way: some submitted, maybe some reaped
  const int before = called;
  dev.reset();
  EXPECT_EQ(called, before);
}

}  // namespace
}  // namespace snapdisk
