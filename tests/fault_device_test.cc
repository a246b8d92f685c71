#include "disk/fault_device.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <bit>
#include <cmath>
#include <cstdio>
#include <map>
#include <memory>
#include <random>
#include <set>
#include <string>
#include <vector>

#include "disk/memory_device.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

using testing::PatternBytes;
using testing::TestSeed;

constexpr int64_t kMs = 1'000'000;

std::unique_ptr<MemoryDevice> NewInner(uint64_t size = 1 << 20, uint32_t sector = 4096,
                                       uint32_t queue_depth = 64) {
  auto dev = MemoryDevice::Create(size, sector, queue_depth);
  EXPECT_TRUE(dev.ok()) << dev.status().ToString();
  return std::move(dev).value();
}

std::vector<std::byte> ReadRange(BlockDevice& dev, uint64_t offset, uint64_t length) {
  std::vector<std::byte> out(length);
  Status s = dev.Read(offset, out);
  EXPECT_TRUE(s.ok()) << s.ToString();
  return out;
}

uint32_t RuleId(Result<uint32_t> id) {
  EXPECT_TRUE(id.ok()) << id.status().ToString();
  return id.ok() ? *id : 0;
}

int CountBitDifferences(const std::vector<std::byte>& a, const std::vector<std::byte>& b) {
  EXPECT_EQ(a.size(), b.size());
  int bits = 0;
  for (size_t i = 0; i < a.size() && i < b.size(); ++i) {
    bits += std::popcount(static_cast<unsigned>(a[i] ^ b[i]));
  }
  return bits;
}

bool Contains(const std::string& haystack, const std::string& needle) {
  return haystack.find(needle) != std::string::npos;
}

size_t CountKind(const FaultDevice& dev, FaultKind kind) {
  return std::count_if(dev.events().begin(), dev.events().end(),
                       [&](const FaultEvent& e) { return e.kind == kind; });
}

// ---- Pass-through ---------------------------------------------------------------

TEST(FaultDeviceTest, PassesThroughWithoutRules) {
  auto inner = NewInner();
  FaultDevice dev(*inner);
  EXPECT_EQ(dev.name(), "fault(memory device)");
  EXPECT_EQ(dev.size_bytes(), inner->size_bytes());
  EXPECT_EQ(dev.sector_size_bytes(), 4096u);
  EXPECT_EQ(dev.queue_depth(), 64u);
  auto data = PatternBytes(1, 3 * 4096);
  ASSERT_TRUE(dev.Write(4096, data).ok());
  EXPECT_EQ(ReadRange(dev, 4096, data.size()), data);
  EXPECT_EQ(ReadRange(*inner, 4096, data.size()), data);
  ASSERT_TRUE(dev.Discard(8192, 4096).ok());
  EXPECT_EQ(ReadRange(*inner, 8192, 4096), std::vector<std::byte>(4096));
  ASSERT_TRUE(dev.Flush().ok());
  EXPECT_TRUE(dev.Read(1, std::span(data).first(4096)).IsInvalidArgument());
  auto snap = dev.stats().Snapshot();
  EXPECT_EQ(snap.of(IoOp::kWrite).ops, 1u);
  EXPECT_EQ(snap.of(IoOp::kWrite).bytes, 3u * 4096);
  EXPECT_EQ(snap.of(IoOp::kRead).ops, 1u);
  EXPECT_EQ(snap.of(IoOp::kDiscard).ops, 1u);
  EXPECT_EQ(snap.of(IoOp::kFlush).ops, 1u);
  EXPECT_EQ(snap.of(IoOp::kWrite).errors, 0u);
  EXPECT_EQ(dev.ops_submitted(), 4u);
  EXPECT_TRUE(dev.events().empty());
  EXPECT_EQ(dev.unflushed_record_bytes(), 0u);  // the flush covered everything
}

TEST(FaultDeviceTest, QueueDepthIsTheInnerDevicesAndBoundsSubmissions) {
  auto inner = NewInner(1 << 20, 4096, 32);
  FaultDevice dev(*inner);
  std::vector<IoRequest> reqs(33);
  std::vector<std::byte> buf(4096);
  int done = 0;
  for (int i = 0; i < 33; ++i) {
    reqs[i] = IoRequest{.op = IoOp::kRead, .offset_bytes = uint64_t(i) * 4096,
                        .length_bytes = 4096, .data = buf.data()};
    reqs[i].on_complete = [&](IoRequest&, const Status& s) { done += s.ok(); };
  }
  for (int i = 0; i < 32; ++i) ASSERT_TRUE(dev.Submit(reqs[i]).ok());
  EXPECT_EQ(dev.in_flight(), 32u);
  EXPECT_TRUE(dev.Submit(reqs[32]).IsBusy());
  EXPECT_EQ(dev.Poll(32), 32u);
  EXPECT_EQ(done, 32);
  EXPECT_EQ(dev.in_flight(), 0u);
  EXPECT_EQ(dev.ops_submitted(), 32u);  // the Busy one got no number
}

// ---- I/O errors -----------------------------------------------------------------

TEST(FaultDeviceTest, IOErrorOnNthWriteFiresOnceAndTheWriteDoesNotLand) {
  auto inner = NewInner();
  auto old = PatternBytes(7, 4096);
  ASSERT_TRUE(inner->Write(8192, old).ok());
  FaultDevice dev(*inner);
  const uint32_t id = RuleId(dev.AddRule(
      {.action = FaultAction::kIOError, .op = IoOp::kWrite, .from_op_index = 2}));
  auto data = PatternBytes(8, 4096);
  std::vector<std::byte> buf(4096);
  ASSERT_TRUE(dev.Write(0, data).ok());     // op 0, write 0
  ASSERT_TRUE(dev.Read(0, buf).ok());       // op 1
  ASSERT_TRUE(dev.Write(4096, data).ok());  // op 2, write 1
  ASSERT_TRUE(dev.Read(0, buf).ok());       // op 3
  Status s = dev.Write(8192, data);         // op 4, write 2: fails
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "fault(memory device)")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "write at offset 8192")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "injected I/O error")) << s.message();
  EXPECT_EQ(ReadRange(*inner, 8192, 4096), old);  // a failed write changes nothing
  ASSERT_TRUE(dev.Write(8192, data).ok());        // spent: the next one succeeds
  EXPECT_EQ(ReadRange(*inner, 8192, 4096), data);
  ASSERT_EQ(dev.events().size(), 1u);
  const FaultEvent& e = dev.events()[0];
  EXPECT_EQ(e.kind, FaultKind::kIOError);
  EXPECT_EQ(e.op_index, 4u);
  EXPECT_EQ(e.op, IoOp::kWrite);
  EXPECT_EQ(e.offset_bytes, 8192u);
  EXPECT_EQ(e.length_bytes, 4096u);
  EXPECT_EQ(e.rule_id, id);
  auto snap = dev.stats().Snapshot();
  EXPECT_EQ(snap.of(IoOp::kWrite).ops, 4u);
  EXPECT_EQ(snap.of(IoOp::kWrite).errors, 1u);
}

TEST(FaultDeviceTest, PersistentIOErrorFromNthOpOfAnyType) {
  auto inner = NewInner();
  auto old = PatternBytes(9, 8192);
  ASSERT_TRUE(inner->Write(0, old).ok());
  FaultDevice dev(*inner);
  ASSERT_TRUE(dev.AddRule({.action = FaultAction::kIOError, .from_op_index = 3,
                           .persistent = true}).ok());
  std::vector<std::byte> buf(4096);
  auto data = PatternBytes(10, 4096);
  ASSERT_TRUE(dev.Read(0, buf).ok());  // 0
  ASSERT_TRUE(dev.Flush().ok());       // 1
  ASSERT_TRUE(dev.Read(4096, buf).ok());  // 2
  EXPECT_TRUE(dev.Read(0, buf).IsIOError());          // 3
  Status flush = dev.Flush();                         // 4
  EXPECT_TRUE(flush.IsIOError());
  EXPECT_TRUE(Contains(flush.message(), "flush")) << flush.message();
  Status discard = dev.Discard(0, 4096);  // 5
  EXPECT_TRUE(discard.IsIOError());
  EXPECT_TRUE(Contains(discard.message(), "discard at offset 0")) << discard.message();
  EXPECT_TRUE(dev.Write(4096, data).IsIOError());     // 6
  EXPECT_EQ(ReadRange(*inner, 0, 8192), old);  // neither discard nor write landed
  EXPECT_EQ(CountKind(dev, FaultKind::kIOError), 4u);
  EXPECT_EQ(dev.events()[1].op, IoOp::kFlush);
  EXPECT_EQ(dev.events()[1].op_index, 4u);
}

TEST(FaultDeviceTest, IOErrorOnAnOffsetRange) {
  auto inner = NewInner();
  FaultDevice dev(*inner);
  ASSERT_TRUE(dev.AddRule({.action = FaultAction::kIOError, .op = IoOp::kRead,
                           .range = ByteRange{8192, 4096}, .persistent = true}).ok());
  std::vector<std::byte> one(4096), two(8192);
  auto data = PatternBytes(11, 4096);
  EXPECT_TRUE(dev.Read(0, one).ok());
  EXPECT_TRUE(dev.Read(4096, two).IsIOError());  // [4096, 12288) overlaps
  Status s = dev.Read(8192, one);
  EXPECT_TRUE(s.IsIOError());
  EXPECT_TRUE(Contains(s.message(), "read at offset 8192 length 4096")) << s.message();
  EXPECT_TRUE(dev.Read(12288, one).ok());  // touches the end, does not overlap
  EXPECT_TRUE(dev.Write(8192, data).ok());  // the rule is for reads
  EXPECT_TRUE(dev.Flush().ok());            // flushes have no range
  EXPECT_TRUE(dev.Read(8192, one).IsIOError());  // persistent

  // A one-shot range rule on discards.
  auto before = ReadRange(*inner, 8192, 4096);
  ASSERT_TRUE(dev.AddRule({.action = FaultAction::kIOError, .op = IoOp::kDiscard,
                           .range = ByteRange{0, 16384}}).ok());
  EXPECT_TRUE(dev.Discard(1 << 16, 4096).ok());   // outside
  EXPECT_TRUE(dev.Discard(8192, 4096).IsIOError());
  EXPECT_EQ(ReadRange(*inner, 8192, 4096), before);
  EXPECT_TRUE(dev.Discard(8192, 4096).ok());  // once
  EXPECT_EQ(ReadRange(*inner, 8192, 4096), std::vector<std::byte>(4096));
}

// Which of `reads` reads failed, with a probability rule under `seed`.
std::vector<bool> ProbabilisticFailures(uint64_t seed, int reads) {
  auto inner = NewInner();
  FaultDevice dev(*inner, {.seed = seed});
  EXPECT_TRUE(dev.AddRule({.action = FaultAction::kIOError, .op = IoOp::kRead,
                           .probability = 0.25, .persistent = true}).ok());
  std::vector<std::byte> buf(4096);
  std::vector<bool> failed;
  for (int i = 0; i < reads; ++i) {
    Status s = dev.Read(uint64_t(i % 256) * 4096, buf);
    EXPECT_TRUE(s.ok() || s.IsIOError()) << s.ToString();
    failed.push_back(!s.ok());
  }
  EXPECT_EQ(CountKind(dev, FaultKind::kIOError),
            static_cast<size_t>(std::count(failed.begin(), failed.end(), true)));
  return failed;
}

TEST(FaultDeviceTest, ProbabilityRuleIsDeterministicForASeed) {
  const uint64_t seed = TestSeed(20240601);
  auto first = ProbabilisticFailures(seed, 400);
  auto second = ProbabilisticFailures(seed, 400);
  EXPECT_EQ(first, second);
  const auto fired = std::count(first.begin(), first.end(), true);
  EXPECT_GT(fired, 50);  // expected 100; both bounds are > 6 sigma away
  EXPECT_LT(fired, 150);
  EXPECT_NE(first, ProbabilisticFailures(seed + 1, 400));
}

// ---- NoSpace --------------------------------------------------------------------

TEST(FaultDeviceTest, WritesPastTheBudgetGetNoSpace) {
  auto inner = NewInner();
  auto old = PatternBytes(12, 8192);
  ASSERT_TRUE(inner->Write(16384, old).ok());
  FaultDevice dev(*inner, {.write_budget_bytes = 3 * 4096});
  auto data = PatternBytes(13, 8192);
  ASSERT_TRUE(dev.Write(0, data).ok());  // 2 of 3 sectors
  Status s = dev.Write(16384, data);     // would be 4
  EXPECT_TRUE(s.IsNoSpace()) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "write at offset 16384")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "budget")) << s.message();
  EXPECT_EQ(ReadRange(*inner, 16384, 8192), old);
  ASSERT_TRUE(dev.Discard(0, 8192).ok());  // discards neither use nor free budget
  ASSERT_TRUE(dev.Write(8192, std::span(data).first(4096)).ok());  // exactly 3
  EXPECT_EQ(dev.bytes_written(), 3u * 4096);
  EXPECT_TRUE(dev.Write(0, std::span(data).first(4096)).IsNoSpace());
  EXPECT_EQ(CountKind(dev, FaultKind::kNoSpace), 2u);
  dev.set_write_budget_bytes(4 * 4096);
  EXPECT_TRUE(dev.Write(0, std::span(data).first(4096)).ok());
  // A write failed by a rule does not use budget.
  ASSERT_TRUE(dev.AddRule({.action = FaultAction::kIOError, .op = IoOp::kWrite}).ok());
  dev.set_write_budget_bytes(UINT64_MAX);
  EXPECT_TRUE(dev.Write(0, std::span(data).first(4096)).IsIOError());
  EXPECT_EQ(dev.bytes_written(), 4u * 4096);
}

// ---- Latency ----------------------------------------------------------------------

TEST(FaultDeviceTest, LatencySpikeHoldsTheCompletionOnTheClock) {
  auto inner = NewInner();
  ManualClock clock(1'000'000'000);
  FaultDevice dev(*inner, {}, clock);
  const uint32_t id = RuleId(dev.AddRule({.action = FaultAction::kLatency, .op = IoOp::kRead,
                                          .from_op_index = 1, .latency_ns = 5 * kMs}));
  std::vector<std::byte> a(4096), b(4096);
  std::vector<int> order;
  IoRequest ra{.op = IoOp::kRead, .offset_bytes = 0, .length_bytes = 4096, .data = a.data()};
  IoRequest rb{.op = IoOp::kRead, .offset_bytes = 4096, .length_bytes = 4096, .data = b.data()};
  ra.on_complete = [&](IoRequest&, const Status& s) { EXPECT_TRUE(s.ok()); order.push_back(0); };
  rb.on_complete = [&](IoRequest&, const Status& s) { EXPECT_TRUE(s.ok()); order.push_back(1); };
  ASSERT_TRUE(dev.Submit(rb).ok());  // read 0: not delayed
  ASSERT_TRUE(dev.Submit(ra).ok());  // read 1: held 5 ms
  EXPECT_EQ(dev.Poll(0), 1u);
  EXPECT_EQ(order, std::vector<int>({1}));
  clock.AdvanceNs(4 * kMs);
  EXPECT_EQ(dev.Poll(0), 0u);
  EXPECT_EQ(dev.in_flight(), 1u);
  clock.AdvanceNs(1 * kMs);
  EXPECT_EQ(dev.Poll(0), 1u);
  EXPECT_EQ(order, std::vector<int>({1, 0}));
  ASSERT_EQ(dev.events().size(), 1u);
  EXPECT_EQ(dev.events()[0].kind, FaultKind::kLatency);
  EXPECT_EQ(dev.events()[0].op_index, 1u);
  EXPECT_EQ(dev.events()[0].rule_id, id);

  // A blocking Poll sleeps on the clock until the held completion is due.
  ASSERT_TRUE(dev.AddRule({.action = FaultAction::kLatency, .op = IoOp::kWrite,
                           .persistent = true, .latency_ns = 2 * kMs}).ok());
  const int64_t before = clock.NowNs();
  ASSERT_TRUE(dev.Write(0, PatternBytes(14, 4096)).ok());
  EXPECT_EQ(clock.NowNs(), before + 2 * kMs);
  auto snap = dev.stats().Snapshot();
  EXPECT_GE(snap.of(IoOp::kRead).latency_us_max, 5000.0 * 0.97);
  EXPECT_GE(snap.of(IoOp::kWrite).latency_us_p50, 2000.0 * 0.97);
}

// ---- Bit rot ----------------------------------------------------------------------

TEST(FaultDeviceTest, ReadBitFlipChangesOneBitOfTheBufferNotTheStoredData) {
  auto inner = NewInner();
  auto data = PatternBytes(15, 16384);
  ASSERT_TRUE(inner->Write(0, data).ok());
  FaultDevice dev(*inner, {.seed = TestSeed(77)});
  ASSERT_TRUE(dev.AddRule({.action = FaultAction::kReadBitFlip}).ok());
  auto rotten = ReadRange(dev, 0, 16384);
  EXPECT_EQ(CountBitDifferences(rotten, data), 1);
  EXPECT_EQ(ReadRange(dev, 0, 16384), data);    // once: the next read is clean
  EXPECT_EQ(ReadRange(*inner, 0, 16384), data);  // and the stored data never changed
  ASSERT_EQ(dev.events().size(), 1u);
  EXPECT_EQ(dev.events()[0].kind, FaultKind::kReadBitFlip);
  EXPECT_TRUE(Contains(dev.events()[0].detail, "flipped bit")) << dev.events()[0].detail;

  // Persistent, on a range: every read there is hit, writes are not.
  dev.ClearRules();
  ASSERT_TRUE(dev.AddRule({.action = FaultAction::kReadBitFlip, .range = ByteRange{4096, 4096},
                           .persistent = true}).ok());
  ASSERT_TRUE(dev.Write(4096, std::span(data).subspan(4096, 4096)).ok());
  EXPECT_EQ(ReadRange(dev, 0, 4096), std::vector<std::byte>(data.begin(), data.begin() + 4096));
  for (int i = 0; i < 3; ++i) {
    EXPECT_EQ(CountBitDifferences(ReadRange(dev, 4096, 4096),
                                  std::vector<std::byte>(data.begin() + 4096,
                                                         data.begin() + 8192)),
              1);
  }
  EXPECT_EQ(ReadRange(*inner, 0, 16384), data);
}

TEST(FaultDeviceTest, BitFlipAtRestChangesExactlyOneStoredBit) {
  auto inner = NewInner();
  auto data = PatternBytes(16, 65536);
  ASSERT_TRUE(inner->Write(0, data).ok());
  FaultDevice dev(*inner);
  ASSERT_TRUE(dev.FlipBitAtRest(5000, 3).ok());
  auto stored = ReadRange(*inner, 0, 65536);
  EXPECT_EQ(CountBitDifferences(stored, data), 1);
  EXPECT_EQ(stored[5000], data[5000] ^ std::byte{0x08});
  EXPECT_EQ(ReadRange(dev, 0, 65536), stored);  // reads see it
  ASSERT_EQ(dev.events().size(), 1u);
  EXPECT_EQ(dev.events()[0].kind, FaultKind::kBitFlipAtRest);
  EXPECT_EQ(dev.events()[0].offset_bytes, 5000u);
  EXPECT_FALSE(dev.events()[0].op.has_value());
  EXPECT_TRUE(dev.FlipBitAtRest((1 << 20) - 1, 7).ok());  // any byte of the device
  EXPECT_TRUE(dev.FlipBitAtRest(1 << 20, 0).IsInvalidArgument());
  EXPECT_TRUE(dev.FlipBitAtRest(0, 8).IsInvalidArgument());
  std::vector<std::byte> buf(4096);
  IoRequest r{.op = IoOp::kRead, .offset_bytes = 0, .length_bytes = 4096, .data = buf.data()};
  r.on_complete = [](IoRequest&, const Status&) {};
  ASSERT_TRUE(dev.Submit(r).ok());
  EXPECT_TRUE(dev.FlipBitAtRest(0, 0).IsBusy());
  dev.Poll(1);
  EXPECT_TRUE(dev.FlipBitAtRest(0, 0).ok());
}

// ---- Whole-disk failure -----------------------------------------------------------

TEST(FaultDeviceTest, WholeDiskFailureFromAnOpCount) {
  auto inner = NewInner();
  FaultDevice dev(*inner);
  dev.FailAtOpIndex(3);
  std::vector<std::byte> buf(4096);
  ASSERT_TRUE(dev.Read(0, buf).ok());
  ASSERT_TRUE(dev.Write(0, buf).ok());
  ASSERT_TRUE(dev.Flush().ok());
  // Refused synchronously: the callback never runs.
  bool called = false;
  IoRequest r{.op = IoOp::kWrite, .offset_bytes = 4096, .length_bytes = 4096, .data = buf.data()};
  r.on_complete = [&](IoRequest&, const Status&) { called = true; };
  Status s = dev.Submit(r);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "whole-disk failure")) << s.message();
  EXPECT_TRUE(Contains(s.message(), "write at offset 4096")) << s.message();
  EXPECT_EQ(dev.Poll(0), 0u);
  EXPECT_FALSE(called);
  EXPECT_TRUE(dev.Read(0, buf).IsIOError());
  EXPECT_TRUE(dev.Flush().IsIOError());
  EXPECT_TRUE(dev.Discard(0, 4096).IsIOError());
  EXPECT_EQ(CountKind(dev, FaultKind::kDiskFailure), 4u);
  EXPECT_EQ(dev.events()[0].op_index, 3u);
  EXPECT_EQ(dev.events()[3].op_index, 6u);
  dev.ClearDiskFailure();
  EXPECT_TRUE(dev.Read(0, buf).ok());
}

TEST(FaultDeviceTest, WholeDiskFailureFromAClockTimeAndFailNow) {
  auto inner = NewInner();
  ManualClock clock(0);
  FaultDevice dev(*inner, {}, clock);
  dev.FailAtTimeNs(10 * kMs);
  std::vector<std::byte> buf(4096);
  clock.AdvanceNs(10 * kMs - 1);
  ASSERT_TRUE(dev.Read(0, buf).ok());
  clock.AdvanceNs(1);
  EXPECT_TRUE(dev.Read(0, buf).IsIOError());
  dev.ClearDiskFailure();

  // FailNow: requests accepted before it still complete normally.
  Status result = Status::IOError("not called");
  IoRequest r{.op = IoOp::kRead, .offset_bytes = 0, .length_bytes = 4096, .data = buf.data()};
  r.on_complete = [&](IoRequest&, const Status& s) { result = s; };
  ASSERT_TRUE(dev.Submit(r).ok());
  dev.FailNow();
  EXPECT_TRUE(dev.Write(0, buf).IsIOError());
  EXPECT_EQ(dev.Poll(1), 1u);
  EXPECT_TRUE(result.ok()) << result.ToString();
  EXPECT_EQ(CountKind(dev, FaultKind::kDiskFailure), 2u);
}

// ---- Rules and the event log --------------------------------------------------------

TEST(FaultDeviceTest, RuleValidationRemovalAndClearing) {
  auto inner = NewInner();
  FaultDevice dev(*inner);
  EXPECT_TRUE(dev.AddRule({.probability = 1.5}).status().IsInvalidArgument());
  EXPECT_TRUE(dev.AddRule({.probability = std::nan("")}).status().IsInvalidArgument());
  EXPECT_TRUE(dev.AddRule({.range = ByteRange{0, 0}}).status().IsInvalidArgument());
  EXPECT_TRUE(dev.AddRule({.action = FaultAction::kLatency}).status().IsInvalidArgument());
  EXPECT_TRUE(dev.AddRule({.latency_ns = 5}).status().IsInvalidArgument());
  EXPECT_TRUE(dev.AddRule({.action = FaultAction::kReadBitFlip, .op = IoOp::kWrite})
                  .status()
                  .IsInvalidArgument());
  const uint32_t a = RuleId(dev.AddRule({.op = IoOp::kRead, .persistent = true}));
  const uint32_t b = RuleId(dev.AddRule({.op = IoOp::kWrite, .persistent = true}));
  EXPECT_EQ(a, 1u);
  EXPECT_EQ(b, 2u);
  std::vector<std::byte> buf(4096);
  EXPECT_TRUE(dev.Read(0, buf).IsIOError());
  EXPECT_TRUE(dev.Write(0, buf).IsIOError());
  ASSERT_TRUE(dev.RemoveRule(a).ok());
  EXPECT_TRUE(dev.RemoveRule(a).IsNotFound());
  EXPECT_TRUE(dev.Read(0, buf).ok());
  EXPECT_TRUE(dev.Write(0, buf).IsIOError());
  dev.ClearRules();
  EXPECT_TRUE(dev.Write(0, buf).ok());
  EXPECT_EQ(RuleId(dev.AddRule({})), 3u);  // ids are never reused
}

TEST(FaultDeviceTest, EventLogRecordsEveryFaultInOrderAndClears) {
  auto inner = NewInner();
  ManualClock clock(0);
  FaultDevice dev(*inner, {.write_budget_bytes = 4096}, clock);
  const uint32_t lat = RuleId(dev.AddRule({.action = FaultAction::kLatency, .op = IoOp::kFlush,
                                           .latency_ns = kMs}));
  const uint32_t err = RuleId(dev.AddRule({.op = IoOp::kRead, .from_op_index = 1}));
  std::vector<std::byte> buf(4096);
  ASSERT_TRUE(dev.Read(0, buf).ok());             // 0
  ASSERT_TRUE(dev.Write(4096, buf).ok());         // 1
  EXPECT_TRUE(dev.Write(8192, buf).IsNoSpace());  // 2
  EXPECT_TRUE(dev.Read(12288, buf).IsIOError());  // 3
  ASSERT_TRUE(dev.Flush().ok());                  // 4, held 1 ms
  ASSERT_TRUE(dev.FlipBitAtRest(100, 1).ok());
  dev.FailNow();
  EXPECT_TRUE(dev.Discard(0, 4096).IsIOError());  // 5
  const auto& ev = dev.events();
  ASSERT_EQ(ev.size(), 5u);
  EXPECT_EQ(ev[0].kind, FaultKind::kNoSpace);
  EXPECT_EQ(ev[0].op_index, 2u);
  EXPECT_EQ(ev[0].offset_bytes, 8192u);
  EXPECT_EQ(ev[0].rule_id, 0u);
  EXPECT_EQ(ev[1].kind, FaultKind::kIOError);
  EXPECT_EQ(ev[1].op_index, 3u);
  EXPECT_EQ(ev[1].op, IoOp::kRead);
  EXPECT_EQ(ev[1].offset_bytes, 12288u);
  EXPECT_EQ(ev[1].length_bytes, 4096u);
  EXPECT_EQ(ev[1].rule_id, err);
  EXPECT_EQ(ev[2].kind, FaultKind::kLatency);
  EXPECT_EQ(ev[2].op, IoOp::kFlush);
  EXPECT_EQ(ev[2].rule_id, lat);
  EXPECT_TRUE(Contains(ev[2].detail, "1000000 ns")) << ev[2].detail;
  EXPECT_EQ(ev[3].kind, FaultKind::kBitFlipAtRest);
  EXPECT_EQ(ev[3].op_index, 5u);
  EXPECT_EQ(ev[4].kind, FaultKind::kDiskFailure);
  EXPECT_EQ(ev[4].op, IoOp::kDiscard);
  EXPECT_STREQ(FaultKindName(ev[4].kind), "disk_failure");
  EXPECT_STREQ(FaultKindName(FaultKind::kCrashTorn), "crash_torn");
  dev.ClearEvents();
  EXPECT_TRUE(dev.events().empty());
  EXPECT_TRUE(dev.Crash(1).ok());
  ASSERT_EQ(dev.events().size(), 1u);
  EXPECT_EQ(dev.events()[0].kind, FaultKind::kCrash);
}

// ---- Power loss: directed tests ------------------------------------------------------

constexpr uint32_t kSmallSector = 512;
constexpr uint64_t kSmallSectors = 64;
constexpr uint64_t kSmallSize = kSmallSector * kSmallSectors;

// A mirror of what the image should be, kept next to a device.
struct Mirror {
  std::vector<std::byte> bytes = {};
  void Write(uint64_t offset, const std::vector<std::byte>& data) {
    std::copy(data.begin(), data.end(), bytes.begin() + offset);
  }
  void Discard(uint64_t offset, uint64_t length) {
    std::fill(bytes.begin() + offset, bytes.begin() + offset + length, std::byte{0});
  }
};

// A durable prefix, then uncovered overlapping writes and discards; crash with
// `mix` and return the surviving image. `flushed` and `final_image` get the
// images at the last flush and after everything.
std::vector<std::byte> CrashAfterUncoveredWrites(const CrashMix& mix, std::vector<std::byte>* flushed,
                                                 std::vector<std::byte>* final_image) {
  auto inner = NewInner(kSmallSize, kSmallSector);
  Mirror m{PatternBytes(100, kSmallSize)};
  EXPECT_TRUE(inner->Write(0, m.bytes).ok());
  auto dev = std::make_unique<FaultDevice>(*inner);
  auto w = [&](uint64_t offset, uint64_t sectors, uint64_t seed) {
    auto data = PatternBytes(seed, sectors * kSmallSector);
    EXPECT_TRUE(dev->Write(offset * kSmallSector, data).ok());
    m.Write(offset * kSmallSector, data);
  };
  auto d = [&](uint64_t offset, uint64_t sectors) {
    EXPECT_TRUE(dev->Discard(offset * kSmallSector, sectors * kSmallSector).ok());
    m.Discard(offset * kSmallSector, sectors * kSmallSector);
  };
  w(0, 8, 1);
  w(4, 8, 2);
  d(20, 4);
  EXPECT_TRUE(dev->Flush().ok());
  *flushed = m.bytes;
  w(2, 4, 3);   // overlaps both durable writes
  w(3, 10, 4);  // overlaps the previous uncovered write
  d(5, 2);      // punches into it
  w(21, 2, 5);  // into the durable discard
  d(40, 8);
  w(44, 2, 6);
  *final_image = m.bytes;
  EXPECT_TRUE(dev->Crash(42, mix).ok());
  auto image = ReadRange(*inner, 0, kSmallSize);
  // The surviving image can be wrapped again.
  FaultDevice reopened(*inner);
  EXPECT_EQ(ReadRange(reopened, 0, kSmallSize), image);
  EXPECT_EQ(CountKind(*dev, FaultKind::kCrash), 1u);
  const size_t decisions = CountKind(*dev, FaultKind::kCrashKept) +
                           CountKind(*dev, FaultKind::kCrashDropped) +
                           CountKind(*dev, FaultKind::kCrashTorn);
  EXPECT_EQ(decisions, 6u);
  return image;
}

TEST(FaultDeviceTest, CrashKeepAllGivesTheFinalImageAndDropAllTheFlushedOne) {
  std::vector<std::byte> flushed, final_image;
  EXPECT_EQ(CrashAfterUncoveredWrites(CrashMix::KeepAll(), &flushed, &final_image), final_image);
  EXPECT_EQ(CrashAfterUncoveredWrites(CrashMix::DropAll(), &flushed, &final_image), flushed);
  EXPECT_NE(flushed, final_image);
}

TEST(FaultDeviceTest, CrashedDeviceRefusesSubmitsAndFailsRequestsInFlight) {
  auto inner = NewInner(kSmallSize, kSmallSector);
  FaultDevice dev(*inner);
  auto data = PatternBytes(21, 4096);
  std::vector<std::byte> buf(4096);
  std::vector<Status> results;
  IoRequest w{.op = IoOp::kWrite, .offset_bytes = 0, .length_bytes = 4096, .data = data.data()};
  IoRequest r{.op = IoOp::kRead, .offset_bytes = 8192, .length_bytes = 4096, .data = buf.data()};
  w.on_complete = r.on_complete = [&](IoRequest&, const Status& s) { results.push_back(s); };
  ASSERT_TRUE(dev.Submit(w).ok());
  ASSERT_TRUE(dev.Submit(r).ok());
  ASSERT_TRUE(dev.Crash(5, CrashMix::KeepAll()).ok());
  EXPECT_TRUE(dev.crashed());
  Status s = dev.Read(0, buf);
  EXPECT_TRUE(s.IsIOError());
  EXPECT_TRUE(Contains(s.message(), "device crashed")) << s.message();
  EXPECT_EQ(dev.Poll(2), 2u);
  ASSERT_EQ(results.size(), 2u);
  for (const Status& st : results) {
    EXPECT_TRUE(st.IsIOError());
    EXPECT_TRUE(Contains(st.message(), "device crashed")) << st.message();
  }
  EXPECT_EQ(ReadRange(*inner, 0, 4096), data);  // in flight = uncovered; kept by the mix
  EXPECT_TRUE(dev.Crash(6).IsInvalidArgument());
  EXPECT_TRUE(dev.FlipBitAtRest(0, 0).ok());  // rot of the surviving image
}

TEST(FaultDeviceTest, FlushCoversOnlyWritesCompletedBeforeItWasSubmitted) {
  auto old = PatternBytes(30, 4096);
  auto data = PatternBytes(31, 4096);
  for (bool wait_for_write : {false, true}) {
    SCOPED_TRACE(wait_for_write ? "flush after the write completed" : "flush while in flight");
    auto inner = NewInner(kSmallSize, kSmallSector);
    ASSERT_TRUE(inner->Write(0, old).ok());
    FaultDevice dev(*inner);
    int done = 0;
    IoRequest w{.op = IoOp::kWrite, .offset_bytes = 0, .length_bytes = 4096, .data = data.data()};
    IoRequest f{.op = IoOp::kFlush};
    w.on_complete = f.on_complete = [&](IoRequest&, const Status& s) {
      EXPECT_TRUE(s.ok());
      ++done;
    };
    ASSERT_TRUE(dev.Submit(w).ok());
    if (wait_for_write) dev.Poll(1);
    ASSERT_TRUE(dev.Submit(f).ok());
    while (done < 2) dev.Poll(1);
    ASSERT_TRUE(dev.Crash(1, CrashMix::DropAll()).ok());
    EXPECT_EQ(ReadRange(*inner, 0, 4096), wait_for_write ? data : old);
  }
}

TEST(FaultDeviceTest, FlushCoverageFollowsCompletionNotSubmissionUnderLatency) {
  // W1 is held by latency; W2 (same sectors, submitted later) completes first
  // and is flushed. W1 is uncovered, W2 covered: W2 must survive whatever
  // happens to W1, since it was submitted later.
  for (const CrashMix& mix : {CrashMix::KeepAll(), CrashMix::DropAll()}) {
    auto inner = NewInner(kSmallSize, kSmallSector);
    ManualClock clock(0);
    FaultDevice dev(*inner, {}, clock);
    ASSERT_TRUE(dev.AddRule({.action = FaultAction::kLatency, .op = IoOp::kWrite,
                             .from_op_index = 0, .latency_ns = 10 * kMs}).ok());
    auto d1 = PatternBytes(41, 4096), d2 = PatternBytes(42, 4096);
    IoRequest w1{.op = IoOp::kWrite, .offset_bytes = 0, .length_bytes = 4096, .data = d1.data()};
    w1.on_complete = [](IoRequest&, const Status&) {};
    ASSERT_TRUE(dev.Submit(w1).ok());
    ASSERT_TRUE(dev.Write(0, d2).ok());  // not delayed (the rule fired once)
    ASSERT_TRUE(dev.Flush().ok());
    EXPECT_EQ(dev.in_flight(), 1u);  // W1 still held
    ASSERT_TRUE(dev.Crash(3, mix).ok());
    EXPECT_EQ(ReadRange(*inner, 0, 4096), d2);
    dev.Poll(1);
  }
}

TEST(FaultDeviceTest, TornWritesKeepASeededSubsetOfSectors) {
  const uint64_t seed = TestSeed(555);
  auto run = [&](uint64_t crash_seed) {
    auto inner = NewInner(kSmallSize, kSmallSector);
    auto old = PatternBytes(50, kSmallSize);
    EXPECT_TRUE(inner->Write(0, old).ok());
    FaultDevice dev(*inner);
    auto data = PatternBytes(51, kSmallSize);
    for (uint64_t i = 0; i < 8; ++i) {
      EXPECT_TRUE(dev.Write(i * 8 * kSmallSector,
                            std::span(data).subspan(i * 8 * kSmallSector, 8 * kSmallSector))
                      .ok());
    }
    CrashMix tear{.keep_weight = 0, .drop_weight = 0, .tear_weight = 1};
    EXPECT_TRUE(dev.Crash(crash_seed, tear).ok());
    auto image = ReadRange(*inner, 0, kSmallSize);
    EXPECT_EQ(CountKind(dev, FaultKind::kCrashTorn), 8u);
    // Each sector is old or new, as the event says.
    for (const FaultEvent& e : dev.events()) {
      if (e.kind != FaultKind::kCrashTorn) continue;
      for (uint64_t s = 0; s < 8; ++s) {
        const uint64_t at = e.offset_bytes + s * kSmallSector;
        const bool is_new = std::equal(image.begin() + at, image.begin() + at + kSmallSector,
                                       data.begin() + at);
        const bool is_old = std::equal(image.begin() + at, image.begin() + at + kSmallSector,
                                       old.begin() + at);
        EXPECT_TRUE(is_new != is_old) << "sector " << at / kSmallSector;
        // The detail lists kept sectors as runs: check membership by parsing.
        const std::string& d = e.detail;
        const std::string list = d.substr(d.find("kept sectors ") + 13);
        bool listed = false;
        size_t p = 0;
        while (p < list.size() && list[p] != ' ') {
          size_t end = list.find_first_of(", ", p);
          std::string item = list.substr(p, end - p);
          if (item != "none") {
            size_t dash = item.find('-');
            uint64_t lo = std::stoull(item.substr(0, dash));
            uint64_t hi = dash == std::string::npos ? lo : std::stoull(item.substr(dash + 1));
            listed |= s >= lo && s <= hi;
          }
          p = end == std::string::npos || list[end] == ' ' ? list.size() : end + 1;
        }
        EXPECT_EQ(listed, is_new) << d << " sector " << s;
      }
    }
    return image;
  };
  auto a = run(seed);
  EXPECT_EQ(a, run(seed));  // deterministic
  EXPECT_NE(a, run(seed + 1));
}

TEST(FaultDeviceTest, RecordBoundAsksTheCallerToFlush) {
  auto inner = NewInner();
  FaultDevice dev(*inner, {.max_unflushed_record_bytes = 4 * 4096});
  auto data = PatternBytes(60, 3 * 4096);
  auto one = std::span(data).first(4096);
  ASSERT_TRUE(dev.Write(0, one).ok());  // 8 KiB held: old + new
  EXPECT_EQ(dev.unflushed_record_bytes(), 2u * 4096);
  ASSERT_TRUE(dev.Write(4096, one).ok());
  const uint64_t ops = dev.ops_submitted();
  Status s = dev.Write(8192, one);
  EXPECT_TRUE(s.IsBusy()) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "flush")) << s.message();
  EXPECT_EQ(dev.ops_submitted(), ops);  // not numbered
  EXPECT_TRUE(dev.Discard(0, 4096).IsBusy());
  ASSERT_TRUE(dev.Flush().ok());
  EXPECT_EQ(dev.unflushed_record_bytes(), 0u);
  ASSERT_TRUE(dev.Write(8192, one).ok());
  ASSERT_TRUE(dev.Discard(0, 4096).ok());  // 4 KiB: old only
  EXPECT_EQ(dev.unflushed_record_bytes(), 3u * 4096);
  Status big = dev.Write(0, data);  // 24 KiB alone > 16 KiB
  EXPECT_TRUE(big.IsNoSpace()) << big.ToString();
  EXPECT_TRUE(Contains(big.message(), "max_unflushed_record_bytes")) << big.message();

  // Without the power-loss model there is no record and no bound, and Crash
  // keeps the image as it is.
  FaultDevice plain(*inner, {.model_power_loss = false, .max_unflushed_record_bytes = 4096});
  ASSERT_TRUE(plain.Write(0, data).ok());
  EXPECT_EQ(plain.unflushed_record_bytes(), 0u);
  ASSERT_TRUE(plain.Crash(1, CrashMix::DropAll()).ok());
  EXPECT_EQ(ReadRange(*inner, 0, data.size()), data);
}

TEST(FaultDeviceTest, FailedInnerWriteIsReadBackForTheCrashModel) {
  // outer -> middle -> memory. The middle device fails a write, so nothing of
  // it lands; the outer device's record must learn that and keep the old
  // contents even when the crash "keeps" the write.
  auto inner = NewInner(kSmallSize, kSmallSector);
  auto old = PatternBytes(70, kSmallSize);
  ASSERT_TRUE(inner->Write(0, old).ok());
  FaultDevice middle(*inner);
  ASSERT_TRUE(middle.AddRule({.op = IoOp::kWrite, .from_op_index = 1}).ok());
  FaultDevice outer(middle);
  auto data = PatternBytes(71, 4096);
  ASSERT_TRUE(outer.Write(0, data).ok());
  Status s = outer.Write(8192, data);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_TRUE(Contains(s.message(), "fault(memory device)")) << s.message();
  ASSERT_TRUE(outer.Crash(9, CrashMix::KeepAll()).ok());
  auto expected = old;
  std::copy(data.begin(), data.end(), expected.begin());
  EXPECT_EQ(ReadRange(*inner, 0, kSmallSize), expected);
}

// ---- Power loss: the model over many seeds ---------------------------------------------

// One submitted op as the harness saw it.
struct TrackedOp {
  IoOp op = IoOp::kWrite;
  uint64_t offset = 0;
  uint64_t length = 0;
  std::vector<std::byte> data = {};  // writes
  uint64_t op_index = 0;
  uint64_t submit_tick = 0;
  uint64_t complete_tick = 0;  // 0 until the callback ran
  Status status = {};
};

struct CaseOutcome {
  std::vector<std::byte> image;
  std::vector<std::string> events;
};

// What the randomized cases exercised, summed over cases (printed, so that a
// change that makes them vacuous shows).
struct Coverage {
  uint64_t covered = 0, kept = 0, dropped = 0, torn = 0, injected = 0, in_flight_at_crash = 0,
           overlapping_uncovered = 0;
};

std::vector<bool> ParseKeptSectors(const std::string& detail, uint64_t sectors) {
  std::vector<bool> kept(sectors, false);
  const size_t at = detail.find("kept sectors ");
  if (at == std::string::npos) return kept;
  const size_t begin = at + 13;
  const std::string list = detail.substr(begin, detail.find(" of ", begin) - begin);
  if (list == "none") return kept;
  size_t p = 0;
  while (p <= list.size()) {
    size_t end = list.find(',', p);
    if (end == std::string::npos) end = list.size();
    std::string item = list.substr(p, end - p);
    size_t dash = item.find('-');
    uint64_t lo = std::stoull(item.substr(0, dash));
    uint64_t hi = dash == std::string::npos ? lo : std::stoull(item.substr(dash + 1));
    for (uint64_t s = lo; s <= hi && s < sectors; ++s) kept[s] = true;
    p = end + 1;
  }
  return kept;
}

CaseOutcome RunPowerLossCase(uint64_t seed, Coverage* coverage) {
  std::mt19937_64 rng(seed);
  auto inner = NewInner(kSmallSize, kSmallSector, 32);
  const auto initial = PatternBytes(seed ^ 0x5eed, kSmallSize);
  EXPECT_TRUE(inner->Write(0, initial).ok());
  ManualClock clock(0);
  FaultDevice dev(*inner, {.seed = seed}, clock);
  if (rng() % 2) {
    EXPECT_TRUE(dev.AddRule({.action = FaultAction::kLatency, .probability = 0.3,
                             .persistent = true,
                             .latency_ns = static_cast<int64_t>(1 + rng() % 4) * kMs}).ok());
  }
  if (rng() % 3 == 0) {
    EXPECT_TRUE(dev.AddRule({.op = IoOp::kWrite, .probability = 0.1, .persistent = true}).ok());
  }
  if (rng() % 3 == 0) {
    EXPECT_TRUE(dev.AddRule({.op = IoOp::kFlush, .probability = 0.3, .persistent = true}).ok());
  }
  if (rng() % 4 == 0) {
    EXPECT_TRUE(dev.AddRule({.op = IoOp::kDiscard, .probability = 0.2, .persistent = true}).ok());
  }

  std::vector<TrackedOp> ops;
  ops.reserve(256);
  std::vector<IoRequest> reqs(8);
  std::vector<size_t> free_reqs;
  for (size_t i = 0; i < reqs.size(); ++i) free_reqs.push_back(i);
  uint64_t tick = 0;
  for (IoRequest& r : reqs) {
    r.on_complete = [&](IoRequest& req, const Status& s) {
      TrackedOp& op = ops[req.user_tag];
      op.complete_tick = ++tick;
      op.status = s;
      free_reqs.push_back(static_cast<size_t>(&req - reqs.data()));
    };
  }
  auto submit = [&](TrackedOp op) {
    while (free_reqs.empty()) dev.Poll(1);
    const size_t ri = free_reqs.back();
    free_reqs.pop_back();
    IoRequest& r = reqs[ri];
    r.op = op.op;
    r.offset_bytes = op.offset;
    r.length_bytes = op.length;
    r.user_tag = ops.size();
    op.op_index = dev.ops_submitted();
    op.submit_tick = ++tick;
    ops.push_back(std::move(op));
    r.data = ops.back().data.empty() ? nullptr : ops.back().data.data();
    Status s = dev.Submit(r);
    ASSERT_TRUE(s.ok()) << s.ToString();
  };

  const int steps = 30 + static_cast<int>(rng() % 70);
  for (int step = 0; step < steps; ++step) {
    const uint64_t dice = rng() % 100;
    if (dice < 55) {  // write or discard, 1..8 sectors, anywhere
      const uint64_t first = rng() % kSmallSectors;
      const uint64_t count = 1 + rng() % std::min<uint64_t>(8, kSmallSectors - first);
      TrackedOp op{.op = dice < 45 ? IoOp::kWrite : IoOp::kDiscard,
                   .offset = first * kSmallSector, .length = count * kSmallSector};
      if (op.op == IoOp::kWrite) op.data = PatternBytes(seed * 1000 + step, op.length);
      submit(std::move(op));
    } else if (dice < 70) {
      submit(TrackedOp{.op = IoOp::kFlush});
    } else if (dice < 88) {
      dev.Poll(static_cast<uint32_t>(rng() % 3));
    } else {
      clock.AdvanceNs(static_cast<int64_t>(rng() % (3 * kMs)));
    }
  }
  if (rng() % 2) dev.Poll(static_cast<uint32_t>(rng() % 4));

  CrashMix mix;
  switch (rng() % 5) {
    case 0: mix = CrashMix::KeepAll(); break;
    case 1: mix = CrashMix::DropAll(); break;
    case 2: mix = CrashMix{.keep_weight = 0, .drop_weight = 0, .tear_weight = 1}; break;
    case 3:
      mix = CrashMix{.keep_weight = double(rng() % 4), .drop_weight = double(rng() % 4),
                     .tear_weight = 1 + double(rng() % 4),
                     .torn_sector_keep_probability = double(rng() % 11) / 10,
                     .discard_keep_probability = double(rng() % 11) / 10};
      break;
    default: break;  // the default mix
  }
  const uint64_t crash_seed = rng();
  const uint64_t events_before_crash = dev.events().size();
  coverage->in_flight_at_crash += dev.in_flight();
  Status crash = dev.Crash(crash_seed, mix);
  EXPECT_TRUE(crash.ok()) << crash.ToString();
  while (dev.in_flight() > 0) dev.Poll(1);

  // What the device logged for each op index.
  std::set<uint64_t> injected;  // forwarded nowhere: failed by a rule
  std::map<uint64_t, const FaultEvent*> fate;
  for (size_t i = 0; i < dev.events().size(); ++i) {
    const FaultEvent& e = dev.events()[i];
    if (e.kind == FaultKind::kIOError) injected.insert(e.op_index);
    coverage->kept += e.kind == FaultKind::kCrashKept;
    coverage->dropped += e.kind == FaultKind::kCrashDropped;
    coverage->torn += e.kind == FaultKind::kCrashTorn;
    if (e.kind == FaultKind::kCrashKept || e.kind == FaultKind::kCrashDropped ||
        e.kind == FaultKind::kCrashTorn) {
      EXPECT_GE(i, events_before_crash);
      EXPECT_TRUE(fate.emplace(e.op_index, &e).second) << "two fates for op " << e.op_index;
    }
  }

  // The harness's own view of durability: an op is covered when it completed
  // OK and a flush submitted after that completed OK (before the crash).
  auto covered = [&](const TrackedOp& op) {
    if (op.complete_tick == 0 || !op.status.ok()) return false;
    for (const TrackedOp& f : ops) {
      if (f.op == IoOp::kFlush && f.status.ok() && f.complete_tick != 0 &&
          f.submit_tick > op.complete_tick) {
        return true;
      }
    }
    return false;
  };

  const std::vector<std::byte> zeros(kSmallSector);
  auto sector_of = [&](const TrackedOp& op, uint64_t sector) -> std::vector<std::byte> {
    if (op.op == IoOp::kDiscard) return zeros;
    const uint64_t at = sector * kSmallSector - op.offset;
    return {op.data.begin() + at, op.data.begin() + at + kSmallSector};
  };

  // Exact expectation from the logged fates, and a check of the fates' coverage.
  std::vector<std::byte> expected = initial;
  std::vector<bool> landed(ops.size(), false);
  for (size_t i = 0; i < ops.size(); ++i) {
    const TrackedOp& op = ops[i];
    EXPECT_NE(op.complete_tick, 0u) << "op " << i << " never completed";
    if (op.op == IoOp::kFlush) continue;
    if (injected.count(op.op_index)) {
      ++coverage->injected;
      EXPECT_FALSE(op.status.ok());
      EXPECT_EQ(fate.count(op.op_index), 0u);
      continue;
    }
    if (!op.status.ok()) {
      EXPECT_TRUE(Contains(op.status.message(), "device crashed")) << op.status.ToString();
    }
    landed[i] = true;
    const uint64_t sectors = op.length / kSmallSector;
    std::vector<bool> kept(sectors, true);
    if (covered(op)) {
      ++coverage->covered;
      EXPECT_EQ(fate.count(op.op_index), 0u) << "covered op " << op.op_index << " got a fate";
    } else {
      auto it = fate.find(op.op_index);
      EXPECT_NE(it, fate.end()) << "uncovered op " << op.op_index << " got no fate";
      if (it == fate.end()) continue;
      const FaultEvent& e = *it->second;
      EXPECT_EQ(e.op, op.op);
      EXPECT_EQ(e.offset_bytes, op.offset);
      EXPECT_EQ(e.length_bytes, op.length);
      if (e.kind == FaultKind::kCrashDropped) kept.assign(sectors, false);
      if (e.kind == FaultKind::kCrashTorn) {
        EXPECT_EQ(op.op, IoOp::kWrite);
        kept = ParseKeptSectors(e.detail, sectors);
      }
      if (mix.keep_weight == 0 && mix.tear_weight == 0) {
        EXPECT_TRUE(op.op == IoOp::kDiscard || e.kind == FaultKind::kCrashDropped);
      }
    }
    for (uint64_t s = 0; s < sectors; ++s) {
      if (!kept[s]) continue;
      auto value = sector_of(op, op.offset / kSmallSector + s);
      std::copy(value.begin(), value.end(), expected.begin() + op.offset + s * kSmallSector);
    }
  }

  // The surviving image, through a fresh wrapper.
  FaultDevice reopened(*inner);
  CaseOutcome outcome{ReadRange(reopened, 0, kSmallSize), {}};
  EXPECT_TRUE(outcome.image == expected) << "image differs from the logged fates";

  // Oracle independent of the log: each sector holds the latest covered value
  // (or the initial one) or the value of an uncovered write or discard
  // submitted after it; nothing else.
  for (uint64_t s = 0; s < kSmallSectors; ++s) {
    std::vector<std::vector<std::byte>> allowed = {
        {initial.begin() + s * kSmallSector, initial.begin() + (s + 1) * kSmallSector}};
    for (size_t i = 0; i < ops.size(); ++i) {
      const TrackedOp& op = ops[i];
      if (!landed[i] || s < op.offset / kSmallSector ||
          s >= (op.offset + op.length) / kSmallSector) {
        continue;
      }
      if (covered(op)) allowed.clear();  // a durable value replaces all before it
      allowed.push_back(sector_of(op, s));
    }
    coverage->overlapping_uncovered += allowed.size() > 2;
    const std::vector<std::byte> got(outcome.image.begin() + s * kSmallSector,
                                     outcome.image.begin() + (s + 1) * kSmallSector);
    EXPECT_TRUE(std::find(allowed.begin(), allowed.end(), got) != allowed.end())
        << "sector " << s << " holds a value no write left there";
  }
  for (const FaultEvent& e : dev.events()) {
    outcome.events.push_back(std::string(FaultKindName(e.kind)) + " " +
                             std::to_string(e.op_index) + " " + e.detail);
  }
  return outcome;
}

TEST(FaultDeviceTest, PowerLossModelHoldsOverManySeeds) {
  const uint64_t base = TestSeed(1);
  const uint64_t cases = 300 * testing::TestScale();
  Coverage coverage;
  for (uint64_t i = 0; i < cases; ++i) {
    const uint64_t seed = base * 1'000'003 + i;
    SCOPED_TRACE("case seed " + std::to_string(seed));
    CaseOutcome first = RunPowerLossCase(seed, &coverage);
    if (::testing::Test::HasFailure()) {
      ADD_FAILURE() << "power-loss case failed; base seed " << base << ", case " << i;
      return;
    }
    if (i % 10 == 0) {  // same seed, same faults and image
      Coverage ignored;
      CaseOutcome second = RunPowerLossCase(seed, &ignored);
      EXPECT_TRUE(first.image == second.image);
      EXPECT_EQ(first.events, second.events);
    }
  }
  std::printf("[coverage] %llu cases: %llu covered writes/discards; uncovered: %llu kept, "
              "%llu dropped, %llu torn; %llu failed by rules; %llu in flight at crash; "
              "%llu sectors with several uncovered candidates\n",
              static_cast<unsigned long long>(cases),
              static_cast<unsigned long long>(coverage.covered),
              static_cast<unsigned long long>(coverage.kept),
              static_cast<unsigned long long>(coverage.dropped),
              static_cast<unsigned long long>(coverage.torn),
              static_cast<unsigned long long>(coverage.injected),
              static_cast<unsigned long long>(coverage.in_flight_at_crash),
              static_cast<unsigned long long>(coverage.overlapping_uncovered));
  EXPECT_GT(coverage.covered, cases);
  EXPECT_GT(coverage.kept, cases / 2);
  EXPECT_GT(coverage.dropped, cases / 2);
  EXPECT_GT(coverage.torn, cases / 2);
  EXPECT_GT(coverage.in_flight_at_crash, cases / 2);
}

}  // namespace
}  // namespace snapdisk
