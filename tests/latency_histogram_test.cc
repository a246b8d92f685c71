// LatencyHistogram (disk/latency_histogram.h): percentiles
// against a sorted oracle of every sample, over distributions latencies take
// (log-normal, uniform, bimodal with stalls, a constant), merged and compacted.
#include "disk/latency_histogram.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <functional>
#include <random>
#include <vector>

#include "support/test_env.h"

namespace snapdisk {
namespace {

// The sample of rank ceil(p/100 * n) (at least 1), as Percentile defines it.
int64_t OraclePercentile(const std::vector<int64_t>& sorted, double p) {
  const double wanted = std::ceil(p / 100.0 * static_cast<double>(sorted.size()));
  const size_t rank = std::max<size_t>(1, static_cast<size_t>(wanted));
  return sorted[rank - 1];
}

void ExpectClose(const LatencyHistogram& h, std::vector<int64_t> samples, const char* what) {
  std::sort(samples.begin(), samples.end());
  ASSERT_EQ(h.count(), samples.size()) << what;
  EXPECT_EQ(h.min_ns(), samples.front()) << what;
  EXPECT_EQ(h.max_ns(), samples.back()) << what;
  for (double p : {0.001, 1.0, 10.0, 50.0, 90.0, 99.0, 99.9, 99.99, 100.0}) {
    const int64_t want = OraclePercentile(samples, p);
    const int64_t got = h.Percentile(p);
    if (want < 256) {
      EXPECT_EQ(got, want) << what << " p" << p;
    } else {
      EXPECT_LE(std::abs(static_cast<double>(got - want)) / static_cast<double>(want), 0.01)
          << what << " p" << p << ": " << got << " vs " << want;
    }
  }
}

TEST(LatencyHistogramTest, PercentilesWithinOnePercentOfTheSortedSamples) {
  std::mt19937_64 rng(testing::TestSeed(31));
  struct Case {
    const char* name;
    std::function<int64_t()> draw;
  };
  std::lognormal_distribution<double> lognormal(std::log(150'000.0), 0.6);  // ~150 us
  std::uniform_int_distribution<int64_t> uniform(0, 5'000'000);
  std::uniform_int_distribution<int64_t> small(0, 300);
  const std::vector<Case> cases = {
      {"log-normal", [&] { return static_cast<int64_t>(lognormal(rng)); }},
      {"uniform", [&] { return uniform(rng); }},
      {"small values", [&] { return small(rng); }},
      {"bimodal with stalls",
       [&] {
         return rng() % 100 == 0 ? 20'000'000 + static_cast<int64_t>(rng() % 30'000'000)
                                 : 80'000 + static_cast<int64_t>(rng() % 40'000);
       }},
      {"constant", [] { return int64_t{123'456}; }},
      {"wide", [&] { return static_cast<int64_t>(rng() % (int64_t{1} << 38)); }},
  };
  for (const Case& c : cases) {
    for (size_t n : {1ul, 7ul, 1000ul, 200'000ul}) {
      LatencyHistogram h;
      std::vector<int64_t> samples;
      for (size_t i = 0; i < n; ++i) {
        samples.push_back(c.draw());
        h.Record(samples.back());
      }
      ExpectClose(h, samples, c.name);
    }
  }
}

TEST(LatencyHistogramTest, MergedAndCompactedHistogramsGiveTheSamePercentiles) {
  std::mt19937_64 rng(testing::TestSeed(32));
  std::lognormal_distribution<double> lognormal(std::log(400'000.0), 1.0);
  LatencyHistogram all;
  std::vector<LatencyHistogram> seconds(10);
  std::vector<int64_t> samples;
  for (int s = 0; s < 10; ++s) {
    for (int i = 0; i < 5000; ++i) {
      const int64_t v = static_cast<int64_t>(lognormal(rng)) * (s == 7 ? 20 : 1);  // a stall
      samples.push_back(v);
      seconds[s].Record(v);
      all.Record(v);
    }
  }
  LatencyHistogram merged;
  for (const LatencyHistogram& h : seconds)
    merged.Merge(LatencyHistogram::FromCompact(h.Compact()));
  for (double p : {50.0, 99.0, 99.9}) {
    EXPECT_EQ(merged.Percentile(p), all.Percentile(p)) << p;
  }
  ExpectClose(all, samples, "all");
  EXPECT_EQ(merged.count(), all.count());
  EXPECT_NEAR(merged.mean_ns(), all.mean_ns(), all.mean_ns() * 0.005);
  // The stalled second stands out in its own histogram, not in the average.
  EXPECT_GT(seconds[7].Percentile(50), 10 * seconds[6].Percentile(50));
}

TEST(LatencyHistogramTest, BucketsTileTheRangeAndOutOfRangeValuesAreClamped) {
  using Buckets = LatencyHistogram::Buckets;
  int64_t next = 0;
  for (uint32_t b = 0; b < Buckets::kCount; ++b) {
    ASSERT_EQ(Buckets::Lowest(b), next) << b;
    const int64_t high = Buckets::Highest(b);
    ASSERT_GE(high, next);
    ASSERT_EQ(Buckets::Of(next), b);
    ASSERT_EQ(Buckets::Of(high), b);
    // No bucket is wider than 1/128 of its values.
    if (next >= 256) {
      ASSERT_LE(high - next + 1, next / 128) << b;
    }
    next = high + 1;
  }
  EXPECT_EQ(next, LatencyHistogram::kMaxValueNs + 1);
  LatencyHistogram h;
  EXPECT_EQ(h.Percentile(99), 0);
  EXPECT_EQ(h.min_ns(), 0);
  h.Record(-5);
  h.Record(int64_t{1} << 50);
  EXPECT_EQ(h.min_ns(), 0);
  EXPECT_EQ(h.max_ns(), LatencyHistogram::kMaxValueNs);
  EXPECT_EQ(h.Percentile(100), LatencyHistogram::kMaxValueNs);
  h.Reset();
  EXPECT_EQ(h.count(), 0u);
}

}  // namespace
}  // namespace snapdisk
