#include "disk/qos_limiter.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cstdio>
#include <functional>
#include <queue>
#include <thread>
#include <vector>

namespace snapdisk {
namespace {

constexpr uint64_t kGiB = kBytesPerGiB;
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSecond = 1'000'000'000;

EssdProfile Custom(uint64_t iops, uint64_t bytes_per_s, int64_t latency_ns = 0) {
  EssdProfile p;
  p.iops_max = iops;
  p.throughput_bytes_per_s = bytes_per_s;
  p.write_latency_ns = latency_ns;
  p.read_latency_ns = latency_ns;
  return p;
}

EssdProfile Essd(EssdLevel level, uint64_t gib) {
  auto p = EssdProfile::For(level, gib * kGiB);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return p.ok() ? p.value() : EssdProfile{};
}

TEST(QosLimiterTest, IopsPacingIsExactWithoutBurst) {
  QosLimiter limiter(Custom(1000, 0), /*burst_ns=*/0);
  for (int64_t k = 0; k < 100; ++k) {
    QosGrant g = limiter.Reserve(IoOp::kWrite, 4096, 0);
    EXPECT_EQ(g.start_ns, k * kMs) << k;
    EXPECT_EQ(g.complete_ns, g.start_ns);
  }
  // A request arriving after the backlog is not delayed.
  EXPECT_EQ(limiter.Reserve(IoOp::kRead, 4096, 200 * kMs).start_ns, 200 * kMs);
}

TEST(QosLimiterTest, FractionalIntervalsDoNotDrift) {
  // 6800 IOPS: 147058.82... ns apart. After 68000 requests the schedule must be
  // exactly 10 s long, give or take the 1 ns of rounding up.
  QosLimiter limiter(Custom(6800, 0), 0);
  QosGrant last;
  for (int k = 0; k < 68'001; ++k) last = limiter.Reserve(IoOp::kWrite, 4096, 0);
  EXPECT_EQ(last.start_ns, 10 * kSecond);
  // And a rate whose interval does not divide: 3 IOPS.
  QosLimiter three(Custom(3, 0), 0);
  std::vector<int64_t> starts;
  for (int k = 0; k < 4; ++k) starts.push_back(three.Reserve(IoOp::kWrite, 512, 0).start_ns);
  EXPECT_EQ(starts, (std::vector<int64_t>{0, 333'333'334, 666'666'667, 1'000'000'000}));
}

TEST(QosLimiterTest, BytePacing) {
  // 1 MB/s and 4 KiB requests: 4.096 ms each; the IOPS bucket is far away.
  QosLimiter limiter(Custom(1'000'000, 1'000'000), 0);
  for (int64_t k = 0; k < 50; ++k) {
    EXPECT_EQ(limiter.Reserve(IoOp::kWrite, 4096, 0).start_ns, k * 4'096'000) << k;
  }
  QosCounters c = limiter.counters();
  EXPECT_EQ(c.requests, 50u);
  EXPECT_EQ(c.throttled_requests, 49u);
  EXPECT_EQ(c.bytes_bound_requests, 49u);
  EXPECT_EQ(c.iops_bound_requests, 0u);
}

TEST(QosLimiterTest, LargeIoCountsOneIopsToken) {
  // 10 IOPS, no byte limit: a 1 MiB request costs the same as a 4 KiB one.
  QosLimiter limiter(Custom(10, 0), 0);
  EXPECT_EQ(limiter.Reserve(IoOp::kWrite, kMiB, 0).start_ns, 0);
  EXPECT_EQ(limiter.Reserve(IoOp::kWrite, 4096, 0).start_ns, 100 * kMs);
  EXPECT_EQ(limiter.Reserve(IoOp::kRead, 64 * kMiB, 0).start_ns, 200 * kMs);
}

TEST(QosLimiterTest, BurstThenPacing) {
  // PL1 100 GiB: 6800 IOPS, a 10 ms burst = floor(10 ms / 147.06 us) + 1 = 69.
  QosLimiter limiter(Essd(EssdLevel::kPL1, 100));
  EXPECT_EQ(limiter.burst_ns(), QosLimiter::kDefaultBurstNs);
  for (int k = 0; k < 69; ++k) {
    ASSERT_EQ(limiter.Reserve(IoOp::kWrite, 4096, 0).start_ns, 0) << k;
  }
  QosGrant g = limiter.Reserve(IoOp::kWrite, 4096, 0);
  EXPECT_GT(g.start_ns, 0);
  EXPECT_LE(g.start_ns, 147'059);
  // The 69 + 68 requests of the first 10 ms are the most it ever gives early.
  int64_t prev = g.start_ns;
  for (int k = 0; k < 1000; ++k) {
    g = limiter.Reserve(IoOp::kWrite, 4096, 0);
    EXPECT_GE(g.start_ns - prev, 147'058);
    EXPECT_LE(g.start_ns - prev, 147'059);
    prev = g.start_ns;
  }
  // Idle for a second: the burst is back, but no more than the burst.
  const int64_t later = prev + kSecond;
  for (int k = 0; k < 69; ++k) {
    ASSERT_EQ(limiter.Reserve(IoOp::kWrite, 4096, later).start_ns, later) << k;
  }
  EXPECT_GT(limiter.Reserve(IoOp::kWrite, 4096, later).start_ns, later);
}

TEST(QosLimiterTest, ByteBurstAllowsOneOversizedRequest) {
  // 1 MB/s with a 10 ms burst (10 kB): a 1 MiB request goes at once and puts
  // the bucket ~1.05 s in debt.
  QosLimiter limiter(Custom(0, 1'000'000), 10 * kMs);
  EXPECT_EQ(limiter.Reserve(IoOp::kWrite, kMiB, 0).start_ns, 0);
  EXPECT_EQ(limiter.Reserve(IoOp::kWrite, kMiB, 0).start_ns, 1'048'576'000 - 10 * kMs);
}

TEST(QosLimiterTest, LatencyFloor) {
  EssdProfile p = Custom(1000, 0);
  p.write_latency_ns = 200'000;
  p.read_latency_ns = 300'000;
  QosLimiter limiter(p, 0);
  // Unthrottled requests (1 ms apart, the pacing interval) complete after exactly the latency.
  QosGrant w = limiter.Reserve(IoOp::kWrite, 4096, 0);
  EXPECT_EQ(w.start_ns, 0);
  EXPECT_EQ(w.complete_ns, 200'000);
  QosGrant r = limiter.Reserve(IoOp::kRead, 4096, 1 * kMs);
  EXPECT_EQ(r.start_ns, 1 * kMs);
  EXPECT_EQ(r.complete_ns, 1 * kMs + 300'000);
  // Throttled ones complete latency after their start.
  QosGrant t = limiter.Reserve(IoOp::kWrite, 4096, 1 * kMs);
  EXPECT_EQ(t.start_ns, 2 * kMs);
  EXPECT_EQ(t.complete_ns, 2 * kMs + 200'000);
  // The modelled latency (delay + floor) is what stats() record.
  OpStats ws = limiter.stats().Snapshot().of(IoOp::kWrite);
  EXPECT_EQ(ws.ops, 2u);
  EXPECT_EQ(ws.bytes, 8192u);
  EXPECT_NEAR(ws.latency_us_mean, (200.0 + 1200.0) / 2, 0.01);
}

TEST(QosLimiterTest, FlushAndDiscardCosts) {
  QosLimiter limiter(Custom(1000, 1'000'000, 50'000), 0);
  EXPECT_EQ(limiter.Reserve(IoOp::kWrite, 4096, 0).start_ns, 0);
  // Flush: no tokens, latency only, even while the buckets are in debt.
  for (int k = 0; k < 10; ++k) {
    QosGrant f = limiter.Reserve(IoOp::kFlush, 0, 0);
    EXPECT_EQ(f.start_ns, 0);
    EXPECT_EQ(f.complete_ns, 50'000);
  }
  // Discard: one IOPS token (the next slot is 1 ms) and no bytes, whatever its length.
  QosGrant d = limiter.Reserve(IoOp::kDiscard, 1024 * kMiB, 0);
  EXPECT_EQ(d.start_ns, 1 * kMs);  // not behind the write's 4096 bytes (4.096 ms at 1 MB/s)
  EXPECT_EQ(d.complete_ns, 1 * kMs + 50'000);
  EXPECT_EQ(limiter.stats().Snapshot().of(IoOp::kFlush).ops, 10u);
  EXPECT_EQ(limiter.stats().Snapshot().of(IoOp::kFlush).bytes, 0u);
}

TEST(QosLimiterTest, DiscardMovesNoBytes) {
  // Byte limit only: discards are never held back by it.
  QosLimiter bytes_only(Custom(0, 1'000'000), 0);
  for (int k = 0; k < 10; ++k) {
    EXPECT_EQ(bytes_only.Reserve(IoOp::kDiscard, 1024 * kMiB, 0).start_ns, 0);
  }
  EXPECT_EQ(bytes_only.Reserve(IoOp::kWrite, 4096, 0).start_ns, 0);
  // IOPS limit only: each discard takes a slot.
  QosLimiter iops_only(Custom(1000, 0), 0);
  EXPECT_EQ(iops_only.Reserve(IoOp::kDiscard, 4096, 0).start_ns, 0);
  EXPECT_EQ(iops_only.Reserve(IoOp::kDiscard, 4096, 0).start_ns, 1 * kMs);
  EXPECT_EQ(iops_only.Reserve(IoOp::kFlush, 0, 0).start_ns, 0);
  EXPECT_EQ(iops_only.Reserve(IoOp::kWrite, 4096, 0).start_ns, 2 * kMs);
}

TEST(QosLimiterTest, UnlimitedAddsNothing) {
  QosLimiter limiter(EssdProfile::Unlimited());
  for (int k = 0; k < 1000; ++k) {
    QosGrant g = limiter.Reserve(k % 2 ? IoOp::kRead : IoOp::kWrite, kMiB, 42);
    ASSERT_EQ(g.start_ns, 42);
    ASSERT_EQ(g.complete_ns, 42);
  }
  EXPECT_EQ(limiter.counters().throttled_requests, 0u);
}

TEST(QosLimiterTest, StatsAndCountersReset) {
  QosLimiter limiter(Custom(1000, 0), 0);
  for (int k = 0; k < 10; ++k) (void)limiter.Reserve(IoOp::kWrite, 4096, 0);
  QosCounters c = limiter.counters();
  EXPECT_EQ(c.requests, 10u);
  EXPECT_EQ(c.throttled_requests, 9u);
  EXPECT_EQ(c.iops_bound_requests, 9u);
  EXPECT_EQ(c.throttled_ns, uint64_t(45 * kMs));  // 1 + 2 + ... + 9 ms
  EXPECT_EQ(limiter.stats().Snapshot().of(IoOp::kWrite).ops, 10u);
  limiter.ResetStats();
  EXPECT_EQ(limiter.counters().requests, 0u);
  EXPECT_EQ(limiter.counters().throttled_ns, 0u);
  EXPECT_EQ(limiter.stats().Snapshot().of(IoOp::kWrite).ops, 0u);
  // The buckets were not reset: the next request is still behind the others.
  EXPECT_EQ(limiter.Reserve(IoOp::kWrite, 4096, 0).start_ns, 10 * kMs);
}

TEST(QosLimiterTest, SetProfileRestartsBuckets) {
  QosLimiter limiter(Custom(10, 0), 0);
  (void)limiter.Reserve(IoOp::kWrite, 4096, 0);
  EXPECT_EQ(limiter.Reserve(IoOp::kWrite, 4096, 0).start_ns, 100 * kMs);
  limiter.SetProfile(Essd(EssdLevel::kPL2, 1000));
  EXPECT_EQ(limiter.profile().iops_max, 51'800u);
  QosGrant g = limiter.Reserve(IoOp::kWrite, 4096, 0);
  EXPECT_EQ(g.start_ns, 0);
  EXPECT_EQ(g.complete_ns, 200'000);
}

TEST(QosLimiterTest, ConcurrentReservationsKeepTotalsAndSchedule) {
  // Every reservation arrives at t=0, so the k-th one taken (in lock order)
  // starts at exactly the same time whichever thread took it: the sorted
  // start times of a multi-threaded run equal those of a single-threaded one.
  constexpr int kThreads = 8;
  constexpr int kPerThread = 5000;
  const EssdProfile profile = Essd(EssdLevel::kPL1, 100);

  QosLimiter reference(profile);
  std::vector<int64_t> expected;
  for (int k = 0; k < kThreads * kPerThread; ++k) {
    expected.push_back(reference.Reserve(IoOp::kWrite, 4096, 0).start_ns);
  }

  QosLimiter limiter(profile);
  std::vector<std::vector<int64_t>> starts(kThreads);
  std::vector<std::thread> threads;
  for (int t = 0; t < kThreads; ++t) {
    threads.emplace_back([&, t] {
      for (int k = 0; k < kPerThread; ++k) {
        starts[t].push_back(limiter.Reserve(IoOp::kWrite, 4096, 0).start_ns);
      }
    });
  }
  for (auto& th : threads) th.join();
  std::vector<int64_t> all;
  for (const auto& s : starts) all.insert(all.end(), s.begin(), s.end());
  std::sort(all.begin(), all.end());
  EXPECT_EQ(all, expected);
  EXPECT_EQ(limiter.counters().requests, uint64_t{kThreads * kPerThread});
  OpStats ws = limiter.stats().Snapshot().of(IoOp::kWrite);
  EXPECT_EQ(ws.ops, uint64_t{kThreads * kPerThread});
  EXPECT_EQ(ws.bytes, uint64_t{kThreads * kPerThread} * 4096);
}

// ---- Accuracy: simulated closed-loop runs ----------------------------------

// `queue_depth` streams each issue a request the moment their previous one
// completes (the fio model), for `duration_ns` of simulated time. Returns the
// requests that completed within the window.
uint64_t SimulateClosedLoop(QosLimiter& limiter, IoOp op, uint64_t io_bytes, uint32_t queue_depth,
                            int64_t duration_ns) {
  std::priority_queue<int64_t, std::vector<int64_t>, std::greater<>> next_submit_ns;
  for (uint32_t i = 0; i < queue_depth; ++i) next_submit_ns.push(0);
  uint64_t completed = 0;
  while (next_submit_ns.top() < duration_ns) {
    const int64_t now_ns = next_submit_ns.top();
    next_submit_ns.pop();
    QosGrant g = limiter.Reserve(op, io_bytes, now_ns);
    if (g.complete_ns <= duration_ns) ++completed;
    next_submit_ns.push(g.complete_ns);
  }
  return completed;
}

struct AccuracyCase {
  EssdLevel level;
  uint64_t gib;
};

TEST(QosLimiterAccuracyTest, Iops4KiBRandomWritesQd32For5Seconds) {
  for (AccuracyCase c : {AccuracyCase{EssdLevel::kPL0, 40}, AccuracyCase{EssdLevel::kPL0, 1000},
                         AccuracyCase{EssdLevel::kPL1, 20}, AccuracyCase{EssdLevel::kPL1, 100},
                         AccuracyCase{EssdLevel::kPL1, 2000}, AccuracyCase{EssdLevel::kPL2, 1000},
                         AccuracyCase{EssdLevel::kPL3, 1261}}) {
    const EssdProfile profile = Essd(c.level, c.gib);
    QosLimiter limiter(profile);
    const uint64_t ops = SimulateClosedLoop(limiter, IoOp::kWrite, 4096, 32, 5 * kSecond);
    const double iops = static_cast<double>(ops) / 5.0;
    std::printf("%-50s measured %.1f IOPS (%.3f%%)\n", profile.Describe().c_str(), iops,
                100.0 * (iops / profile.iops_max - 1));
    EXPECT_NEAR(iops, profile.iops_max, 0.05 * profile.iops_max) << profile.Describe();
  }
}

TEST(QosLimiterAccuracyTest, Pl1At100GiBIs6800Iops) {
  QosLimiter limiter(Essd(EssdLevel::kPL1, 100));
  const double iops = SimulateClosedLoop(limiter, IoOp::kWrite, 4096, 32, 5 * kSecond) / 5.0;
  EXPECT_NEAR(iops, 6800, 340);
  EXPECT_NEAR(iops, 6800, 68);  // in fact within 1%: the burst adds 69 ops over 5 s
}

TEST(QosLimiterAccuracyTest, Throughput1MiBWritesQd32For5Seconds) {
  for (AccuracyCase c :
       {AccuracyCase{EssdLevel::kPL0, 40}, AccuracyCase{EssdLevel::kPL0, 500},
        AccuracyCase{EssdLevel::kPL1, 100}, AccuracyCase{EssdLevel::kPL1, 1000},
        AccuracyCase{EssdLevel::kPL2, 1260}, AccuracyCase{EssdLevel::kPL3, 8000}}) {
    const EssdProfile profile = Essd(c.level, c.gib);
    QosLimiter limiter(profile);
    const uint64_t ops = SimulateClosedLoop(limiter, IoOp::kWrite, kMiB, 32, 5 * kSecond);
    const double bytes_per_s = static_cast<double>(ops * kMiB) / 5.0;
    const double limit = static_cast<double>(profile.throughput_bytes_per_s);
    std::printf("%-50s measured %.2f MB/s (%.3f%%)\n", profile.Describe().c_str(),
                bytes_per_s / 1e6, 100.0 * (bytes_per_s / limit - 1));
    EXPECT_NEAR(bytes_per_s, limit, 0.05 * limit) << profile.Describe();
  }
}

TEST(QosLimiterAccuracyTest, MixedReadWriteShareTheLimit) {
  // Reads and writes draw from the same buckets: 16 read streams + 16 write
  // streams together get the IOPS limit, not twice it.
  const EssdProfile profile = Essd(EssdLevel::kPL1, 100);
  QosLimiter limiter(profile);
  std::priority_queue<std::pair<int64_t, int>, std::vector<std::pair<int64_t, int>>, std::greater<>>
      next;
  for (int i = 0; i < 32; ++i) next.push({0, i});
  uint64_t completed = 0;
  while (next.top().first < 5 * kSecond) {
    auto [now_ns, stream] = next.top();
    next.pop();
    QosGrant g = limiter.Reserve(stream % 2 ? IoOp::kRead : IoOp::kWrite, 4096, now_ns);
    if (g.complete_ns <= 5 * kSecond) ++completed;
    next.push({g.complete_ns, stream});
  }
  EXPECT_NEAR(completed / 5.0, 6800, 340);
}

TEST(QosLimiterAccuracyTest, ShallowQueueIsLatencyBound) {
  // PL3 at 20000 GiB allows 1M IOPS, but 32 requests in flight with 0.2 ms
  // each can only do 32 / 0.2 ms = 160000 IOPS (Little's law), like the real
  // disk: reaching the top figures needs a deep queue.
  QosLimiter limiter(Essd(EssdLevel::kPL3, 20000));
  const double iops = SimulateClosedLoop(limiter, IoOp::kWrite, 4096, 32, kSecond);
  EXPECT_NEAR(iops, 160'000, 1);
  // And QD1 on PL1 is 1 / 0.2 ms = 5000 IOPS, below its 6800 limit.
  QosLimiter pl1(Essd(EssdLevel::kPL1, 100));
  EXPECT_NEAR(SimulateClosedLoop(pl1, IoOp::kWrite, 4096, 1, kSecond), 5000, 1);
}

}  // namespace
}  // namespace snapdisk
