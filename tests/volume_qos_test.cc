// A volume's requests pass its ESSD profile's QoS limiter: over a simulated
// 5-second run (ManualClock: the pool sleeps by advancing it) the volume
// delivers its formula's IOPS within 5%, and no request completes sooner
// than the profile's latency.
#include <gtest/gtest.h>

#include <random>
#include <vector>

#include "disk/clock.h"
#include "engine/pool.h"
#include "engine/volume.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

struct RunResult {
  double iops = 0;
  double bytes_per_s = 0;
  int64_t min_latency_ns = INT64_MAX;
};

RunResult RunQd32(Volume& volume, Pool& pool, ManualClock& clock, uint64_t io_bytes,
                  int64_t duration_ns, uint64_t span_bytes) {
  std::mt19937_64 rng(testing::TestSeed(7));
  std::vector<std::byte> buffer(io_bytes, std::byte{0x5a});
  std::vector<VolumeRequest> requests(32);
  std::vector<int64_t> submitted(32);
  RunResult result;
  uint64_t done = 0;
  const int64_t start = clock.NowNs();
  bool stop = false;
  std::function<void(size_t)> submit = [&](size_t i) {
    VolumeRequest& r = requests[i];
    r = VolumeRequest{.op = VolumeOp::kWrite,
                      .offset_bytes = rng() % (span_bytes / io_bytes) * io_bytes,
                      .length_bytes = io_bytes,
                      .data = buffer.data()};
    r.user_tag = i;
    r.on_complete = [&](VolumeRequest& req, const Status& s) {
      EXPECT_TRUE(s.ok()) << s.ToString();
      result.min_latency_ns =
          std::min(result.min_latency_ns, clock.NowNs() - submitted[req.user_tag]);
      ++done;
      if (clock.NowNs() - start < duration_ns)
        submit(req.user_tag);
      else
        stop = true;
    };
    submitted[i] = clock.NowNs();
    ASSERT_TRUE(volume.Submit(r).ok());
  };
  for (size_t i = 0; i < requests.size(); ++i) submit(i);
  while (pool.in_flight() > 0) pool.Poll(1);
  (void)stop;
  const double seconds = static_cast<double>(clock.NowNs() - start) / 1e9;
  result.iops = done / seconds;
  result.bytes_per_s = done * io_bytes / seconds;
  return result;
}

TEST(VolumeQosTest, Pl1Of100GiBDelivers6800Iops) {
  auto dev = testing::NewMemoryDevice(128 * kGiB);  // sparse: costs only what is written
  ManualClock clock(1'000'000'000);
  PoolOptions options;
  options.clock = &clock;
  auto pool = testing::MustCreatePool(*dev, options);
  ASSERT_TRUE(pool->CreateVolume("db", 100 * kGiB, EssdLevel::kPL1).ok());
  Volume* v = *pool->OpenVolume("db");
  ASSERT_NE(v->qos(), nullptr);
  RunResult r = RunQd32(*v, *pool, clock, 4096, 5'000'000'000, 256 << 20);
  EXPECT_NEAR(r.iops, 6800, 6800 * 0.05) << r.iops;
  EXPECT_GE(r.min_latency_ns, 200'000);  // 0.2 ms for PL1
  std::printf("PL1 100 GiB volume, simulated 5 s QD32 4K writes: %.1f IOPS, min latency %.3f ms\n",
              r.iops, r.min_latency_ns / 1e6);
}

TEST(VolumeQosTest, Pl0ThroughputCapWithLargeWrites) {
  auto dev = testing::NewMemoryDevice(64 * kGiB);
  ManualClock clock(1'000'000'000);
  PoolOptions options;
  options.clock = &clock;
  auto pool = testing::MustCreatePool(*dev, options);
  ASSERT_TRUE(pool->CreateVolume("logs", 40 * kGiB, EssdLevel::kPL0).ok());
  Volume* v = *pool->OpenVolume("logs");
  // PL0 40 GiB: min{100 + 0.25*40, 180} = 110 MB/s.
  RunResult r = RunQd32(*v, *pool, clock, 1 << 20, 5'000'000'000, 512 << 20);
  EXPECT_NEAR(r.bytes_per_s, 110e6, 110e6 * 0.05) << r.bytes_per_s;
}

TEST(VolumeQosTest, UnlimitedHasNoLimiter) {
  auto dev = testing::NewMemoryDevice(64 << 20);
  auto pool = testing::MustCreatePool(*dev);
  ASSERT_TRUE(pool->CreateVolume("raw", 8 << 20).ok());
  EXPECT_EQ((*pool->OpenVolume("raw"))->qos(), nullptr);
}

}  // namespace
}  // namespace snapdisk
