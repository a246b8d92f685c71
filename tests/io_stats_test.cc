#include "disk/io_stats.h"

#include <gtest/gtest.h>

#include <random>
#include <thread>
#include <vector>

namespace snapdisk {
namespace {

TEST(AtomicLatencyHistogramTest, PercentilesWithinBucketPrecision) {
  AtomicLatencyHistogram h;
  // 1..100000 ns uniformly: p50 ~ 50000, p99 ~ 99000, p99.9 ~ 99900.
  for (uint64_t v = 1; v <= 100000; ++v) h.Record(v);
  EXPECT_EQ(h.count(), 100000u);
  auto near = [](uint64_t got, double want) {
    return got >= want && got <= want * 1.04;  // upper bucket edge, <= 1/32 above
  };
  EXPECT_TRUE(near(h.PercentileNs(0.5), 50000)) << h.PercentileNs(0.5);
  EXPECT_TRUE(near(h.PercentileNs(0.99), 99000)) << h.PercentileNs(0.99);
  EXPECT_TRUE(near(h.PercentileNs(0.999), 99900)) << h.PercentileNs(0.999);
  EXPECT_EQ(h.max_ns(), 100000u);
  h.Reset();
  EXPECT_EQ(h.count(), 0u);
  EXPECT_EQ(h.PercentileNs(0.5), 0u);
}

TEST(IoStatsTest, RecordsPerOpAndResets) {
  IoStats stats;
  stats.Record(IoOp::kWrite, 4096, 200'000, true);
  stats.Record(IoOp::kWrite, 4096, 400'000, false);
  stats.Record(IoOp::kRead, 8192, 100'000, true);
  auto snap = stats.Snapshot();
  EXPECT_EQ(snap.of(IoOp::kWrite).ops, 2u);
  EXPECT_EQ(snap.of(IoOp::kWrite).bytes, 4096u);  // failed requests move no bytes
  EXPECT_EQ(snap.of(IoOp::kWrite).errors, 1u);
  EXPECT_NEAR(snap.of(IoOp::kWrite).latency_us_mean, 300.0, 0.001);
  EXPECT_EQ(snap.of(IoOp::kRead).bytes, 8192u);
  EXPECT_NE(snap.ToString().find("write"), std::string::npos);
  stats.Reset();
  EXPECT_EQ(stats.Snapshot().of(IoOp::kWrite).ops, 0u);
}

TEST(IoStatsTest, ConcurrentRecordingLosesNothing) {
  IoStats stats;
  std::vector<std::thread> threads;
  for (int t = 0; t < 4; ++t) {
    threads.emplace_back([&stats, t] {
      for (int i = 0; i < 50000; ++i) stats.Record(IoOp::kRead, 512, 1000 + t, true);
    });
  }
  for (int i = 0; i < 100; ++i) (void)stats.Snapshot();  // readable while recording
  for (auto& th : threads) th.join();
  EXPECT_EQ(stats.Snapshot().of(IoOp::kRead).ops, 200000u);
  EXPECT_EQ(stats.Snapshot().of(IoOp::kRead).bytes, 200000u * 512);
}

}  // namespace
}  // namespace snapdisk
