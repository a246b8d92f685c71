// The policy simulation (bench/comparator/policy_simulation.h): days of a
// policy on a simulated clock, whole-disk failures restored from the store and
// compared with the oracle of acknowledged writes; and `snapdisk policy
// simulate`, which prints it.
#include "bench/comparator/policy_simulation.h"

#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "support/cli_test_support.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

constexpr int64_t kNsPerMinute = int64_t{60} * 1'000'000'000;
constexpr int64_t kNsPerHour = 60 * kNsPerMinute;
constexpr int64_t kNsPerDay = 24 * kNsPerHour;
// Under the sanitizers (~10x slower) the runs are shorter.
#if defined(__SANITIZE_ADDRESS__)
constexpr int kLongRunDays = 6;
constexpr int kShortRunDays = 1;
#else
constexpr int kLongRunDays = 60;
constexpr int kShortRunDays = 2;
#endif

PolicySimulationOptions Physical30m(uint64_t seed) {
  PolicySimulationOptions o;
  o.policy.method = PolicyMethod::kPhysical;
  o.policy.incremental = true;
  o.policy.cycle_days = 0b0001001;  // mon,thu
  o.policy.log_frequency = LogFrequency::kEvery30Min;
  o.seed = seed;
  return o;
}

void ExpectLossesWithin(const PolicySimulationReport& r, int64_t interval_ns) {
  for (const SimulatedFailure& f : r.failures) {
    SCOPED_TRACE(FormatRfc3339(f.at_unix_ns));
    EXPECT_FALSE(f.applied.empty());
    EXPECT_GE(f.loss_ns, 0);
    // Lost: only what was written after the last shipped point.
    EXPECT_LE(f.loss_ns, f.at_unix_ns - f.last_shipped_unix_ns);
    EXPECT_LE(f.loss_ns, interval_ns);
    EXPECT_EQ(f.loss_bytes == 0, f.lost_writes == 0);
  }
}

TEST(PolicySimulationTest, SixtyDaysOfPhysicalBackupsWith30MinuteLogsAndFailures) {
  PolicySimulationOptions o = Physical30m(testing::TestSeed(7));
  o.duration_ns = kLongRunDays * testing::TestScale() * kNsPerDay;
  o.failures = 4;
  auto r = SimulatePolicy(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  std::printf("%d simulated days: %llu log, %llu full, %llu incr, %.1f s\n", kLongRunDays,
              static_cast<unsigned long long>(r->log_backups),
              static_cast<unsigned long long>(r->full_backups),
              static_cast<unsigned long long>(r->incr_backups), r->real_seconds);
  EXPECT_TRUE(r->first_run_error.ok()) << r->first_run_error.ToString();
  EXPECT_EQ(r->failed_runs, 0u);
  // A cut every 30 minutes; no write waits longer to be shipped.
  EXPECT_GE(r->log_backups, static_cast<uint64_t>(o.duration_ns / (30 * kNsPerMinute)) - 1);
  EXPECT_LE(r->max_unshipped_ns, 30 * kNsPerMinute);
  EXPECT_GT(r->max_unshipped_ns, 20 * kNsPerMinute);
  EXPECT_GE(r->full_backups, static_cast<uint64_t>(o.duration_ns / (7 * kNsPerDay)));
  EXPECT_GT(r->writes, 0u);
  if (o.duration_ns > 8 * kNsPerDay) {
    EXPECT_GT(r->expired_objects, 0u);  // 7-day retention
  }
  ASSERT_EQ(r->failures.size(), 4u);
  ExpectLossesWithin(*r, 30 * kNsPerMinute);
  for (size_t i = 1; i < r->failures.size(); ++i) {
    EXPECT_LE(r->failures[i - 1].at_unix_ns, r->failures[i].at_unix_ns);
  }
}

TEST(PolicySimulationTest, SnapshotWith5MinuteLogsLosesAtMostFiveMinutes) {
  PolicySimulationOptions o;
  o.policy.method = PolicyMethod::kSnapshot;
  o.policy.cycle_days = 0b1111111;
  o.policy.log_frequency = LogFrequency::kEvery5Min;
  o.duration_ns = kShortRunDays * kNsPerDay;
  o.writes_per_hour = 600;
  o.failures = 6;
  o.seed = testing::TestSeed(5);
  auto r = SimulatePolicy(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  EXPECT_TRUE(r->first_run_error.ok()) << r->first_run_error.ToString();
  ASSERT_EQ(r->failures.size(), 6u);
  ExpectLossesWithin(*r, 5 * kNsPerMinute);
  EXPECT_LE(r->max_unshipped_ns, 5 * kNsPerMinute);
  EXPECT_GE(r->snapshot_backups, kShortRunDays + 6u);  // a day each, one after each replacement
  // At 600 writes an hour, a failure loses something almost always: the
  // losses are measured, not all zero.
  uint64_t lost = 0;
  for (const SimulatedFailure& f : r->failures) lost += f.lost_writes;
  EXPECT_GT(lost, 0u);
}

TEST(PolicySimulationTest, LogsWithDataBackupsLoseUpToACycle) {
  PolicySimulationOptions o = Physical30m(testing::TestSeed(3));
  o.policy.incremental = false;
  o.policy.log_frequency = LogFrequency::kWithData;
  o.duration_ns = 8 * kNsPerDay;
  o.failures = 3;
  auto r = SimulatePolicy(o);
  ASSERT_TRUE(r.ok()) << r.status().ToString();
  ASSERT_EQ(r->failures.size(), 3u);
  // mon,thu: at most 4 days between data backups (and their log cuts).
  ExpectLossesWithin(*r, 4 * kNsPerDay);
  int64_t max_loss = 0;
  for (const SimulatedFailure& f : r->failures) max_loss = std::max(max_loss, f.loss_ns);
  EXPECT_GT(max_loss, 30 * kNsPerMinute);  // far beyond a 30-minute log's
}

TEST(PolicySimulationTest, TheSameSeedGivesTheSameRun) {
  PolicySimulationOptions o = Physical30m(11);
  o.duration_ns = 2 * kShortRunDays * kNsPerDay;
  o.failures = 2;
  o.keep_runs = true;
  auto a = SimulatePolicy(o);
  auto b = SimulatePolicy(o);
  ASSERT_TRUE(a.ok()) << a.status().ToString();
  ASSERT_TRUE(b.ok()) << b.status().ToString();
  ASSERT_EQ(a->runs.size(), b->runs.size());
  for (size_t i = 0; i < a->runs.size(); ++i) {
    EXPECT_EQ(a->runs[i].set_id, b->runs[i].set_id);
    EXPECT_EQ(a->runs[i].ran_unix_ns, b->runs[i].ran_unix_ns);
    EXPECT_EQ(a->runs[i].last_lsn, b->runs[i].last_lsn);
  }
  ASSERT_EQ(a->failures.size(), b->failures.size());
  for (size_t i = 0; i < a->failures.size(); ++i) {
    EXPECT_EQ(a->failures[i].at_unix_ns, b->failures[i].at_unix_ns);
    EXPECT_EQ(a->failures[i].loss_ns, b->failures[i].loss_ns);
    EXPECT_EQ(a->failures[i].loss_bytes, b->failures[i].loss_bytes);
  }
  EXPECT_EQ(a->store_objects, b->store_objects);
  o.seed = 12;
  auto c = SimulatePolicy(o);
  ASSERT_TRUE(c.ok());
  EXPECT_NE(c->failures[0].at_unix_ns, a->failures[0].at_unix_ns);
}

TEST(PolicySimulationTest, RefusesBadOptionsByName) {
  const auto refused = [](const std::function<void(PolicySimulationOptions&)>& change,
                          const std::string& words) {
    PolicySimulationOptions o;
    change(o);
    auto r = SimulatePolicy(o);
    ASSERT_FALSE(r.ok()) << words;
    EXPECT_TRUE(r.status().IsInvalidArgument()) << r.status().ToString();
    EXPECT_NE(r.status().message().find(words), std::string::npos) << r.status().ToString();
  };
  refused([](auto& o) { o.policy.retention_days = 3; }, "retention");
  refused([](auto& o) { o.duration_ns = 0; }, "duration");
  refused([](auto& o) { o.working_set_bytes = o.volume_size_bytes * 2; }, "working set");
  refused([](auto& o) { o.volume_size_bytes = 1000; }, "volume size");
  refused([](auto& o) { o.max_write_bytes = 0; }, "write size");
  refused([](auto& o) { o.writes_per_hour = -1; }, "writes per hour");
}

TEST(PolicySimulationTest, StopsWhenTheInMemoryStoreOutgrowsItsLimit) {
  PolicySimulationOptions o = Physical30m(4);
  o.duration_ns = kNsPerDay;
  o.max_write_bytes = o.working_set_bytes;  // up to 16 MiB a write
  o.memory_limit_bytes = uint64_t{256} << 20;
  auto r = SimulatePolicy(o);
  ASSERT_TRUE(r.status().IsNoSpace()) << r.status().ToString();
  EXPECT_NE(r.status().message().find("over the memory limit of 256 MiB"), std::string::npos)
      << r.status().ToString();
}

TEST(PolicySimulationTest, CancelledByProgress) {
  PolicySimulationOptions o = Physical30m(1);
  o.duration_ns = 10 * kNsPerDay;
  int calls = 0;
  o.progress = [&calls](int64_t done_ns, int64_t total_ns) {
    EXPECT_LE(done_ns, total_ns);
    return ++calls < 5;
  };
  auto r = SimulatePolicy(o);
  EXPECT_TRUE(r.status().IsCancelled()) << r.status().ToString();
  EXPECT_EQ(calls, 5);
}

TEST(PolicySimulateCliTest, ADayWithFailuresAsJsonAndText) {
  // A day of 5-minute logs is ~290 backup jobs: ~3 s here, ~45 s under ASan.
  cli::testing::CliOptions slow;
  slow.timeout_s = 300;
  auto json = cli::testing::RunCli({"policy", "simulate", "--duration", "1d", "--log-frequency",
                                    "5m", "--method", "snapshot", "--cycle", "mon,wed,fri",
                                    "--failures", "3", "--seed", "9", "--json"},
                                   slow);
  ASSERT_EQ(json.exit_code, 0) << json.err;
  const auto doc = nlohmann::json::parse(json.out);
  EXPECT_EQ(doc["policy"]["method"], "snapshot");
  EXPECT_EQ(doc["start_unix_ns"], 1767571200000000000);
  EXPECT_EQ(doc["end_unix_ns"], 1767571200000000000 + int64_t{86400} * 1000000000);
  EXPECT_GE(doc["backups"]["log"].get<uint64_t>(), 288u - 10);  // idle 5 minutes: no cut
  EXPECT_EQ(doc["backups"]["failed"], 0);
  ASSERT_EQ(doc["failures"].size(), 3u);
  for (const auto& f : doc["failures"]) EXPECT_LE(f["loss_seconds"].get<double>(), 300.0);
  EXPECT_LE(doc["max_loss_seconds"].get<double>(), 300.0);
  EXPECT_LE(doc["max_unshipped_seconds"].get<double>(), 300.0);

  auto text = cli::testing::RunCli({"policy", "simulate", "--duration", "1d", "--runs"}, slow);
  ASSERT_EQ(text.exit_code, 0) << text.err;
  EXPECT_NE(text.out.find("Simulated 1d 0h (2026-01-05"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("physical backups"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("log backups every 30 minutes"), std::string::npos) << text.out;
  EXPECT_NE(text.out.find("RAN"), std::string::npos) << text.out;
}

TEST(PolicySimulateCliTest, BadInputIsAUsageErrorNamingTheValue) {
  const std::vector<std::pair<std::vector<std::string>, std::string>> cases = {
      {{"--duration", "0d"}, "'0d' is not a duration"},
      {{"--duration", "5y"}, "'5y' is not a duration"},
      {{"--window", "02:00-02:00"}, "02:00-02:00"},
      {{"--method", "snapshot", "--log-frequency", "data"}, "data"},
      {{"--writes-per-hour", "-3"}, "writes-per-hour"},
      {{"--start", "2026-02-30"}, "2026-02-30"},
      {{"--working-set", "1G", "--volume-size", "64M"}, "working set"},
  };
  for (const auto& [extra, words] : cases) {
    std::vector<std::string> args = {"policy", "simulate"};
    args.insert(args.end(), extra.begin(), extra.end());
    auto r = cli::testing::RunCli(args);
    EXPECT_EQ(r.exit_code, 2) << extra[0] << ": " << r.err;
    EXPECT_NE(r.err.find(words), std::string::npos) << r.err;
  }
}

}  // namespace
}  // namespace snapdisk
