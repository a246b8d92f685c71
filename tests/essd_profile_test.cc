#include "disk/essd_profile.h"

#include <gtest/gtest.h>

#include <string>

namespace snapdisk {
namespace {

constexpr uint64_t kGiB = kBytesPerGiB;
constexpr uint64_t kMB = kBytesPerMB;

EssdProfile Profile(EssdLevel level, uint64_t capacity_gib) {
  auto p = EssdProfile::For(level, capacity_gib * kGiB);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return p.ok() ? p.value() : EssdProfile{};
}

struct Expected {
  EssdLevel level;
  uint64_t gib;
  uint64_t iops;
  uint64_t throughput_bytes_per_s;
};

TEST(EssdProfileTest, FormulasAtSeveralCapacities) {
  const Expected cases[] = {
      // PL0: min{1800 + 12 C, 10000}, min{100 + 0.25 C, 180} MB/s
      {EssdLevel::kPL0, 40, 2280, 110 * kMB},
      {EssdLevel::kPL0, 101, 3012, 125'250'000},  // quarter-MB step stays exact
      {EssdLevel::kPL0, 320, 5640, 180 * kMB},    // throughput cap reached exactly
      {EssdLevel::kPL0, 683, 9996, 180 * kMB},    // last capacity under the IOPS cap
      {EssdLevel::kPL0, 684, 10000, 180 * kMB},   // IOPS cap reached
      {EssdLevel::kPL0, 32768, 10000, 180 * kMB},
      // PL1: min{1800 + 50 C, 50000}, min{120 + 0.5 C, 350}
      {EssdLevel::kPL1, 20, 2800, 130 * kMB},
      {EssdLevel::kPL1, 100, 6800, 170 * kMB},
      {EssdLevel::kPL1, 461, 24850, 350 * kMB},  // throughput cap (350.5 -> 350)
      {EssdLevel::kPL1, 964, 50000, 350 * kMB},  // IOPS cap reached exactly
      {EssdLevel::kPL1, 32768, 50000, 350 * kMB},
      // PL2: min{1800 + 50 C, 100000}, min{120 + 0.5 C, 750}
      {EssdLevel::kPL2, 461, 24850, 350'500'000},
      {EssdLevel::kPL2, 1000, 51800, 620 * kMB},
      {EssdLevel::kPL2, 1260, 64800, 750 * kMB},   // throughput cap reached exactly
      {EssdLevel::kPL2, 1964, 100000, 750 * kMB},  // IOPS cap reached exactly
      {EssdLevel::kPL2, 32768, 100000, 750 * kMB},
      // PL3: min{1800 + 50 C, 1000000}, min{120 + 0.5 C, 4000}
      {EssdLevel::kPL3, 1261, 64850, 750'500'000},
      {EssdLevel::kPL3, 7760, 389800, 4000 * kMB},      // throughput cap reached exactly
      {EssdLevel::kPL3, 19964, 1'000'000, 4000 * kMB},  // IOPS cap reached exactly
      {EssdLevel::kPL3, 32768, 1'000'000, 4000 * kMB},
  };
  for (const Expected& c : cases) {
    SCOPED_TRACE(std::string(EssdLevelName(c.level)) + " " + std::to_string(c.gib) + " GiB");
    EssdProfile p = Profile(c.level, c.gib);
    EXPECT_EQ(p.level, c.level);
    EXPECT_EQ(p.capacity_bytes, c.gib * kGiB);
    EXPECT_EQ(p.capacity_gib(), c.gib);
    EXPECT_EQ(p.iops_max, c.iops);
    EXPECT_EQ(p.throughput_bytes_per_s, c.throughput_bytes_per_s);
  }
}

TEST(EssdProfileTest, Latencies) {
  EXPECT_EQ(Profile(EssdLevel::kPL0, 40).write_latency_ns, 400'000);
  EXPECT_EQ(Profile(EssdLevel::kPL0, 40).read_latency_ns, 400'000);
  for (EssdLevel level : {EssdLevel::kPL1, EssdLevel::kPL2, EssdLevel::kPL3}) {
    EssdProfile p = Profile(level, 2000);
    EXPECT_EQ(p.write_latency_ns, 200'000) << EssdLevelName(level);
    EXPECT_EQ(p.read_latency_ns, 200'000) << EssdLevelName(level);
  }
}

TEST(EssdProfileTest, RangeErrorsNameLevelAndRange) {
  auto r = EssdProfile::For(EssdLevel::kPL2, 100 * kGiB);
  ASSERT_TRUE(r.status().IsInvalidArgument());
  EXPECT_EQ(r.status().message(), "PL2 needs a capacity of 461–32768 GiB; 100 GiB is outside it");

  r = EssdProfile::For(EssdLevel::kPL3, 1260 * kGiB);
  ASSERT_TRUE(r.status().IsInvalidArgument());
  EXPECT_EQ(r.status().message(), "PL3 needs a capacity of 1261–32768 GiB; 1260 GiB is outside it");

  r = EssdProfile::For(EssdLevel::kPL0, 39 * kGiB);
  ASSERT_TRUE(r.status().IsInvalidArgument());
  EXPECT_EQ(r.status().message(), "PL0 needs a capacity of 40–32768 GiB; 39 GiB is outside it");

  r = EssdProfile::For(EssdLevel::kPL1, 32769 * kGiB);
  ASSERT_TRUE(r.status().IsInvalidArgument());
  EXPECT_EQ(r.status().message(), "PL1 needs a capacity of 20–32768 GiB; 32769 GiB is outside it");

  EXPECT_TRUE(EssdProfile::For(EssdLevel::kPL1, 0).status().IsInvalidArgument());
  EXPECT_TRUE(EssdProfile::For(static_cast<EssdLevel>(9), 100 * kGiB).status().IsInvalidArgument());

  // Range ends are inclusive.
  for (EssdLevel level : {EssdLevel::kPL0, EssdLevel::kPL1, EssdLevel::kPL2, EssdLevel::kPL3}) {
    EssdCapacityRange range = EssdCapacityRangeGib(level);
    EXPECT_TRUE(EssdProfile::For(level, range.min_gib * kGiB).ok()) << EssdLevelName(level);
    EXPECT_TRUE(EssdProfile::For(level, range.max_gib * kGiB).ok()) << EssdLevelName(level);
    EXPECT_FALSE(EssdProfile::For(level, range.min_gib * kGiB - 4096).ok());
    EXPECT_FALSE(EssdProfile::For(level, range.max_gib * kGiB + 4096).ok());
  }
}

TEST(EssdProfileTest, FractionalCapacityFloorsForFormulaButRangeIsExact) {
  // 100.5 GiB: figures of 100 GiB.
  auto p = EssdProfile::For(EssdLevel::kPL1, 100 * kGiB + kGiB / 2);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->iops_max, 6800u);
  EXPECT_EQ(p->throughput_bytes_per_s, 170 * kMB);
  EXPECT_EQ(p->capacity_bytes, 100 * kGiB + kGiB / 2);
  EXPECT_EQ(p->capacity_gib(), 100u);

  // 19.5 GiB is below PL1's 20 GiB even though nothing is lost by flooring.
  auto small = EssdProfile::For(EssdLevel::kPL1, 19 * kGiB + kGiB / 2);
  ASSERT_TRUE(small.status().IsInvalidArgument());
  EXPECT_EQ(small.status().message(),
            "PL1 needs a capacity of 20–32768 GiB; 19.5 GiB (20937965568 bytes) is outside it");
}

TEST(EssdProfileTest, Unlimited) {
  auto p = EssdProfile::For(EssdLevel::kUnlimited, 12345 * 4096);
  ASSERT_TRUE(p.ok());
  EXPECT_EQ(p->level, EssdLevel::kUnlimited);
  EXPECT_EQ(p->iops_max, 0u);
  EXPECT_EQ(p->throughput_bytes_per_s, 0u);
  EXPECT_EQ(p->write_latency_ns, 0);
  EXPECT_EQ(p->read_latency_ns, 0);
  EXPECT_TRUE(EssdProfile::For(EssdLevel::kUnlimited, 0).ok());
  EXPECT_EQ(EssdProfile::Unlimited().Describe(),
            "unlimited: no IOPS limit, no throughput limit, no added latency");
}

TEST(EssdProfileTest, ParseAndNames) {
  struct Case {
    const char* text;
    EssdLevel level;
  };
  for (Case c :
       {Case{"PL0", EssdLevel::kPL0}, Case{"pl1", EssdLevel::kPL1}, Case{"Pl2", EssdLevel::kPL2},
        Case{"pL3", EssdLevel::kPL3}, Case{"unlimited", EssdLevel::kUnlimited},
        Case{"UNLIMITED", EssdLevel::kUnlimited}}) {
    auto level = ParseEssdLevel(c.text);
    ASSERT_TRUE(level.ok()) << c.text;
    EXPECT_EQ(*level, c.level) << c.text;
  }
  for (EssdLevel level : {EssdLevel::kPL0, EssdLevel::kPL1, EssdLevel::kPL2, EssdLevel::kPL3,
                          EssdLevel::kUnlimited}) {
    auto back = ParseEssdLevel(EssdLevelName(level));
    ASSERT_TRUE(back.ok());
    EXPECT_EQ(*back, level);
  }
  EXPECT_STREQ(EssdLevelName(EssdLevel::kPL1), "PL1");
  EXPECT_STREQ(EssdLevelName(EssdLevel::kUnlimited), "unlimited");
  for (const char* bad : {"", "PL4", "pl", "PL1 ", "essd"}) {
    auto level = ParseEssdLevel(bad);
    ASSERT_TRUE(level.status().IsInvalidArgument()) << bad;
    EXPECT_NE(level.status().message().find("expected PL0, PL1, PL2, PL3 or unlimited"),
              std::string::npos);
  }
}

TEST(EssdProfileTest, Describe) {
  EXPECT_EQ(Profile(EssdLevel::kPL1, 100).Describe(),
            "ESSD PL1, 100 GiB: 6800 IOPS, 170 MB/s, 0.2 ms latency");
  EXPECT_EQ(Profile(EssdLevel::kPL0, 101).Describe(),
            "ESSD PL0, 101 GiB: 3012 IOPS, 125.25 MB/s, 0.4 ms latency");
  EXPECT_EQ(Profile(EssdLevel::kPL2, 461).Describe(),
            "ESSD PL2, 461 GiB: 24850 IOPS, 350.5 MB/s, 0.2 ms latency");
  EXPECT_EQ(FormatCapacityGib(3 * kGiB), "3 GiB");
}

}  // namespace
}  // namespace snapdisk
