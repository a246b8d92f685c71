// Backup policies: parsing, validation, JSON, keeping them with the volume,
// the scheduler's decisions (pure), and the scheduler run against a simulated
// clock for 60 days.
#include "snapshot/policy.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <functional>
#include <map>
#include <random>
#include <set>

#include "engine/volume.h"
#include "snapshot/backup.h"
#include "snapshot/backup_set.h"
#include "engine/memory_worm_store.h"
#include "support/pool_fixture.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

using testing::MustCreatePool;
using testing::MustOpenPool;
using testing::NewMemoryDevice;
using testing::PatternBytes;
using testing::ScratchDir;

constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr uint64_t kKiB = uint64_t{1} << 10;
constexpr int64_t kNsPerMinute = int64_t{60} * 1'000'000'000;
constexpr int64_t kNsPerHour = 60 * kNsPerMinute;
constexpr int64_t kNsPerDay = 24 * kNsPerHour;
// 2024-01-01 00:00:00 UTC, a Monday.
constexpr int64_t kMonday = int64_t{1704067200} * 1'000'000'000;
// The long run's length: 60 simulated days, fewer under the sanitizers (the
// backup jobs read every manifest of the volume at each start); scaled up by
// SNAPDISK_TEST_SCALE.
#if defined(__SANITIZE_ADDRESS__)
constexpr int kLongRunDays = 8;
#else
constexpr int kLongRunDays = 60;
#endif
constexpr uint8_t kMon = 1 << 0, kTue = 1 << 1, kWed = 1 << 2, kThu = 1 << 3, kFri = 1 << 4,
                  kSat = 1 << 5, kSun = 1 << 6;

int64_t At(int day, int hour, int minute = 0) {
  return kMonday + day * kNsPerDay + hour * kNsPerHour + minute * kNsPerMinute;
}

BackupPolicy ValidPolicy() {
  BackupPolicy policy;
  policy.store_dir = "/backups/store";
  return policy;
}

void ExpectInvalid(const Status& status, std::initializer_list<std::string_view> words) {
  EXPECT_TRUE(status.IsInvalidArgument()) << status.ToString();
  for (std::string_view word : words) {
    EXPECT_NE(status.message().find(word), std::string::npos)
        << "'" << word << "' not in: " << status.message();
  }
}

// ---- Names, cycle, window ----------------------------------------------------

TEST(PolicyNamesTest, MethodsAndFrequenciesRoundTrip) {
  for (PolicyMethod method : {PolicyMethod::kSnapshot, PolicyMethod::kPhysical}) {
    auto parsed = ParsePolicyMethod(PolicyMethodName(method));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, method);
  }
  for (LogFrequency frequency :
       {LogFrequency::kEvery5Min, LogFrequency::kEvery30Min, LogFrequency::kWithData}) {
    auto parsed = ParseLogFrequency(LogFrequencyName(frequency));
    ASSERT_TRUE(parsed.ok());
    EXPECT_EQ(*parsed, frequency);
  }
  EXPECT_STREQ(PolicyMethodName(PolicyMethod::kPhysical), "physical");
  EXPECT_STREQ(LogFrequencyName(LogFrequency::kEvery5Min), "5m");
  ExpectInvalid(ParsePolicyMethod("logical").status(), {"snapshot or physical", "'logical'"});
  ExpectInvalid(ParseLogFrequency("10m").status(), {"5m, 30m or data", "'10m'"});
}

TEST(PolicyCycleTest, ParsesAndFormats) {
  auto cycle = ParseCycle("mon,thu");
  ASSERT_TRUE(cycle.ok());
  EXPECT_EQ(*cycle, kMon | kThu);
  cycle = ParseCycle(" Sunday, MON ,wed ");
  ASSERT_TRUE(cycle.ok());
  EXPECT_EQ(*cycle, kSun | kMon | kWed);
  EXPECT_EQ(FormatCycle(*cycle), "mon,wed,sun");
  cycle = ParseCycle("mon,tue,wed,thu,fri,sat,sun");
  ASSERT_TRUE(cycle.ok());
  EXPECT_EQ(*cycle, 0x7f);
  EXPECT_EQ(FormatCycle(0x7f), "mon,tue,wed,thu,fri,sat,sun");
  cycle = ParseCycle("fri");  // one day parses; ValidatePolicy wants two
  ASSERT_TRUE(cycle.ok());
  EXPECT_EQ(*cycle, kFri);
}

TEST(PolicyCycleTest, RefusesBadDays) {
  ExpectInvalid(ParseCycle("").status(), {"cycle", "at least two"});
  ExpectInvalid(ParseCycle("mon,,thu").status(), {"cycle", "empty day"});
  ExpectInvalid(ParseCycle("mon,funday").status(), {"cycle", "'funday'", "mon,tue,wed"});
  ExpectInvalid(ParseCycle("mon,thu,monday").status(), {"cycle", "mon twice"});
  ExpectInvalid(ParseCycle("mon thu").status(), {"cycle", "unknown day"});
}

TEST(PolicyWindowTest, ParsesAndFormats) {
  uint32_t start = 0, end = 0;
  ASSERT_TRUE(ParseWindow("02:00-03:00", &start, &end).ok());
  EXPECT_EQ(start, 120u);
  EXPECT_EQ(end, 180u);
  EXPECT_EQ(FormatWindow(start, end), "02:00-03:00");
  ASSERT_TRUE(ParseWindow("23:30-01:15", &start, &end).ok());  // wraps past midnight
  EXPECT_EQ(start, 23 * 60u + 30);
  EXPECT_EQ(end, 75u);
  EXPECT_EQ(FormatWindow(start, end), "23:30-01:15");
  ASSERT_TRUE(ParseWindow(" 6:00 - 7:00 ", &start, &end).ok());
  EXPECT_EQ(FormatWindow(start, end), "06:00-07:00");
  ASSERT_TRUE(ParseWindow("00:00-24:00", &start, &end).ok());  // the whole day
  EXPECT_EQ(start, 0u);
  EXPECT_EQ(end, 0u);
  EXPECT_EQ(FormatWindow(start, end), "00:00-24:00");
  ASSERT_TRUE(ParseWindow("22:00-24:00", &start, &end).ok());
  EXPECT_EQ(FormatWindow(start, end), "22:00-00:00");
}

TEST(PolicyWindowTest, RefusesBadWindows) {
  uint32_t start = 7, end = 9;
  ExpectInvalid(ParseWindow("02:00", &start, &end), {"HH:MM-HH:MM", "'02:00'"});
  ExpectInvalid(ParseWindow("2-3", &start, &end), {"HH:MM-HH:MM"});
  ExpectInvalid(ParseWindow("02:00-03:00x", &start, &end), {"HH:MM-HH:MM"});
  ExpectInvalid(ParseWindow("25:00-26:00", &start, &end), {"hours must be 00-23", "25"});
  ExpectInvalid(ParseWindow("02:60-03:00", &start, &end), {"minutes must be 00-59", "60"});
  ExpectInvalid(ParseWindow("24:00-01:00", &start, &end), {"hours must be 00-23"});
  ExpectInvalid(ParseWindow("02:00-02:30", &start, &end), {"1 to 24 hours", "30 minutes"});
  // Typed by a user, the same start and end is empty, not the whole day
  // (that is 00:00-24:00); a stored policy's such window still reads.
  ExpectInvalid(ParseNewWindow("02:00-02:00", &start, &end),
                {"'02:00-02:00'", "empty", "00:00-24:00"});
  ExpectInvalid(ParseNewWindow("00:00-00:00", &start, &end), {"empty"});
  EXPECT_EQ(start, 7u);  // untouched on error
  EXPECT_EQ(end, 9u);
  EXPECT_TRUE(ParseNewWindow("00:00-24:00", &start, &end).ok());
  EXPECT_TRUE(ParseNewWindow("02:00-03:00", &start, &end).ok());
  EXPECT_TRUE(ParseWindow("02:00-02:00", &start, &end).ok());
}

// ---- Validation --------------------------------------------------------------

TEST(PolicyValidateTest, DefaultsAreValid) {
  EXPECT_TRUE(ValidatePolicy(ValidPolicy()).ok()) << ValidatePolicy(ValidPolicy()).ToString();
  BackupPolicy snapshot = ValidPolicy();
  snapshot.method = PolicyMethod::kSnapshot;
  snapshot.log_frequency = LogFrequency::kEvery5Min;
  snapshot.retention_days = 730;
  snapshot.log_retention_days = 730;
  snapshot.cycle_days = 0x7f;
  snapshot.window_start_min = 0;
  snapshot.window_end_min = 0;
  EXPECT_TRUE(ValidatePolicy(snapshot).ok()) << ValidatePolicy(snapshot).ToString();
}

TEST(PolicyValidateTest, RefusesOutOfRangeNamingFieldAndRange) {
  struct Case {
    std::function<void(BackupPolicy&)> change;
    std::vector<std::string_view> words;
  };
  const std::vector<Case> cases = {
      {[](BackupPolicy& p) { p.store_dir.clear(); }, {"store_dir"}},
      {[](BackupPolicy& p) { p.retention_days = 6; }, {"retention must be 7-730 days (got 6)"}},
      {[](BackupPolicy& p) { p.retention_days = 731; }, {"retention must be 7-730 days (got 731)"}},
      {[](BackupPolicy& p) { p.cycle_days = kMon; },
       {"cycle needs at least two days", "(got mon)"}},
      {[](BackupPolicy& p) { p.cycle_days = 0; }, {"cycle needs at least two days", "(got none)"}},
      {[](BackupPolicy& p) { p.cycle_days = 0x81; }, {"cycle days", "0x81"}},
      {[](BackupPolicy& p) { p.window_end_min = p.window_start_min + 59; },
       {"window must be 1 to 24 hours long", "59 minutes", "02:00-02:59"}},
      {[](BackupPolicy& p) { p.window_start_min = 1440; }, {"window start", "0-1439", "1440"}},
      {[](BackupPolicy& p) { p.window_end_min = 2000; }, {"window end", "0-1439", "2000"}},
      {[](BackupPolicy& p) {
         p.method = PolicyMethod::kSnapshot;
         p.incremental = true;
         p.log_frequency = LogFrequency::kEvery30Min;
       },
       {"incremental", "not available with method snapshot"}},
      {[](BackupPolicy& p) { p.method = PolicyMethod::kSnapshot; },
       {"log frequency data", "not available with method snapshot", "5m, 30m"}},
      {[](BackupPolicy& p) { p.log_retention_days = 6; },
       {"log retention must be 7-7 days", "(got 6)"}},
      {[](BackupPolicy& p) {
         p.retention_days = 30;
         p.log_retention_days = 31;
       },
       {"log retention must be 7-30 days", "at most the data retention", "(got 31)"}},
      {[](BackupPolicy& p) { p.method = static_cast<PolicyMethod>(9); }, {"method"}},
      {[](BackupPolicy& p) { p.log_frequency = static_cast<LogFrequency>(9); }, {"log frequency"}},
  };
  for (size_t i = 0; i < cases.size(); ++i) {
    SCOPED_TRACE("case " + std::to_string(i));
    BackupPolicy policy = ValidPolicy();
    cases[i].change(policy);
    Status status = ValidatePolicy(policy);
    EXPECT_TRUE(status.IsInvalidArgument()) << status.ToString();
    for (std::string_view word : cases[i].words) {
      EXPECT_NE(status.message().find(word), std::string::npos)
          << "'" << word << "' not in: " << status.message();
    }
  }
  // Incremental with physical is fine; so is a longer log retention within
  // the data retention.
  BackupPolicy policy = ValidPolicy();
  policy.incremental = true;
  policy.retention_days = 30;
  policy.log_retention_days = 30;
  EXPECT_TRUE(ValidatePolicy(policy).ok());
}

// ---- JSON --------------------------------------------------------------------

TEST(PolicyJsonTest, RoundTrips) {
  BackupPolicy policy = ValidPolicy();
  policy.store_dir = "/srv/backups/\"quoted\" dir";
  policy.incremental = true;
  policy.retention_days = 90;
  policy.cycle_days = kMon | kWed | kSat;
  policy.window_start_min = 23 * 60;
  policy.window_end_min = 60;
  policy.log_frequency = LogFrequency::kEvery30Min;
  policy.log_retention_days = 14;
  const std::string json = EncodePolicy(policy);
  EXPECT_NE(json.find("\"cycle\":\"mon,wed,sat\""), std::string::npos) << json;
  EXPECT_NE(json.find("\"window\":\"23:00-01:00\""), std::string::npos) << json;
  auto decoded = DecodePolicy(json);
  ASSERT_TRUE(decoded.ok()) << decoded.status().ToString();
  EXPECT_EQ(decoded->store_dir, policy.store_dir);
  EXPECT_EQ(decoded->method, policy.method);
  EXPECT_EQ(decoded->incremental, policy.incremental);
  EXPECT_EQ(decoded->retention_days, policy.retention_days);
  EXPECT_EQ(decoded->cycle_days, policy.cycle_days);
  EXPECT_EQ(decoded->window_start_min, policy.window_start_min);
  EXPECT_EQ(decoded->window_end_min, policy.window_end_min);
  EXPECT_EQ(decoded->log_frequency, policy.log_frequency);
  EXPECT_EQ(decoded->log_retention_days, policy.log_retention_days);
  EXPECT_EQ(EncodePolicy(*decoded), json);
}

TEST(PolicyJsonTest, RefusesMalformedNamingTheField) {
  const std::string good = EncodePolicy(ValidPolicy());
  const auto replace = [&](std::string_view from, std::string_view to) {
    std::string out = good;
    const size_t at = out.find(from);
    EXPECT_NE(at, std::string::npos) << from;
    return out.replace(at, from.size(), to);
  };
  ExpectInvalid(DecodePolicy("").status(), {"not valid JSON"});
  ExpectInvalid(DecodePolicy("{\"version\":1").status(), {"not valid JSON"});
  ExpectInvalid(DecodePolicy("[1,2]").status(), {"JSON object"});
  ExpectInvalid(DecodePolicy(replace("\"retention_days\":7", "\"retention_days\":-1")).status(),
                {"'retention_days'", "7-730", "-1"});
  ExpectInvalid(DecodePolicy(replace("\"retention_days\":7", "\"retention_days\":7.5")).status(),
                {"'retention_days'", "whole number"});
  ExpectInvalid(
      DecodePolicy(replace("\"retention_days\":7", "\"retention_days\":99999999999")).status(),
      {"'retention_days'"});
  ExpectInvalid(DecodePolicy(replace("\"retention_days\":7", "\"retention_days\":5")).status(),
                {"retention must be 7-730 days (got 5)"});
  ExpectInvalid(DecodePolicy(replace("\"incremental\":false", "\"incremental\":\"no\"")).status(),
                {"'incremental'", "true or false"});
  ExpectInvalid(DecodePolicy(replace("\"cycle\":\"mon,thu\"", "\"cycle\":\"mon\"")).status(),
                {"cycle needs at least two days"});
  ExpectInvalid(DecodePolicy(replace("\"window\":\"02:00-03:00\"", "\"window\":7")).status(),
                {"'window'", "a string"});
  ExpectInvalid(DecodePolicy(replace("\"method\":\"physical\"", "\"method\":\"tape\"")).status(),
                {"snapshot or physical"});
  ExpectInvalid(DecodePolicy(replace("\"version\":1,", "")).status(), {"'version'", "missing"});
  ExpectInvalid(
      DecodePolicy(replace("\"version\":1,", "\"version\":1,\"colour\":\"red\",")).status(),
      {"unknown field 'colour'"});
  Status newer = DecodePolicy(replace("\"version\":1", "\"version\":2")).status();
  EXPECT_TRUE(newer.IsUnsupported()) << newer.ToString();
}

// ---- Planning (pure) ---------------------------------------------------------

TEST(PlanScheduleTest, Calendar) {
  EXPECT_EQ(WeekdayOfDay(UnixDay(kMonday)), 0);
  EXPECT_EQ(WeekdayOfDay(UnixDay(At(3, 12))), 3);  // Thursday
  EXPECT_EQ(WeekdayOfDay(UnixDay(At(6, 23, 59))), 6);
  EXPECT_EQ(WeekdayOfDay(UnixDay(At(7, 0))), 0);
  EXPECT_EQ(WeekdayOfDay(0), 3);  // 1970-01-01, a Thursday
  EXPECT_EQ(UnixDay(-1), -1);
  EXPECT_EQ(WeekdayOfDay(-1), 2);
}

TEST(PlanScheduleTest, FirstBackupAtTheWindowNotBefore) {
  BackupPolicy policy = ValidPolicy();  // physical, mon,thu 02:00-03:00, log with data
  ScheduleFacts facts;
  facts.watch_from_unix_ns = At(0, 0);
  ScheduleDecision plan = PlanSchedule(policy, facts, At(0, 1, 59));
  EXPECT_FALSE(plan.data_method);
  EXPECT_FALSE(plan.log_due);
  EXPECT_EQ(plan.next_due_unix_ns, At(0, 2));
  plan = PlanSchedule(policy, facts, At(0, 2, 1));
  ASSERT_TRUE(plan.data_method);
  EXPECT_EQ(*plan.data_method, BackupMethod::kFull);
  EXPECT_EQ(plan.data_due_unix_ns, At(0, 2));
  EXPECT_TRUE(plan.log_due);  // with the data backup
  EXPECT_EQ(plan.log_due_unix_ns, At(0, 2));
  EXPECT_EQ(plan.next_due_unix_ns, At(0, 2, 1));
}

TEST(PlanScheduleTest, PolicySetAfterTheWindowRunsLateThatDayElseWaits) {
  BackupPolicy policy = ValidPolicy();
  ScheduleFacts facts;
  facts.watch_from_unix_ns = At(0, 10);  // Monday, after 02:00-03:00
  ScheduleDecision plan = PlanSchedule(policy, facts, At(0, 10));
  ASSERT_TRUE(plan.data_method);
  EXPECT_EQ(plan.data_due_unix_ns, At(0, 2));  // reported late, not skipped
  facts.watch_from_unix_ns = At(1, 10);        // Tuesday: not a cycle day
  plan = PlanSchedule(policy, facts, At(1, 10));
  EXPECT_FALSE(plan.data_method);
  EXPECT_EQ(plan.next_due_unix_ns, At(3, 2));  // Thursday's window
}

TEST(PlanScheduleTest, ServedOccurrenceWaitsForTheNextCycleDay) {
  BackupPolicy policy = ValidPolicy();
  policy.incremental = true;
  ScheduleFacts facts;
  facts.watch_from_unix_ns = At(0, 0);
  facts.last_data_unix_ns = At(0, 2, 1);
  facts.last_full_unix_ns = At(0, 2, 1);
  for (int64_t now : {At(0, 2, 1), At(0, 2, 30), At(0, 23), At(2, 12), At(3, 1, 59)}) {
    ScheduleDecision plan = PlanSchedule(policy, facts, now);
    EXPECT_FALSE(plan.data_method) << (now - kMonday) / kNsPerMinute;
    EXPECT_EQ(plan.next_due_unix_ns, At(3, 2));
  }
  ScheduleDecision plan = PlanSchedule(policy, facts, At(3, 2));
  ASSERT_TRUE(plan.data_method);
  EXPECT_EQ(*plan.data_method, BackupMethod::kIncr);  // a full this week already
  EXPECT_EQ(plan.data_due_unix_ns, At(3, 2));
  // The next week starts with a full again.
  facts.last_data_unix_ns = At(3, 2, 5);
  plan = PlanSchedule(policy, facts, At(7, 2, 3));
  ASSERT_TRUE(plan.data_method);
  EXPECT_EQ(*plan.data_method, BackupMethod::kFull);
  // Without incremental, every backup is a full.
  facts.last_data_unix_ns = At(0, 2, 1);
  policy.incremental = false;
  plan = PlanSchedule(policy, facts, At(3, 2));
  ASSERT_TRUE(plan.data_method);
  EXPECT_EQ(*plan.data_method, BackupMethod::kFull);
  // No full of the lineage (e.g. after a rollback): a full.
  policy.incremental = true;
  facts.last_full_unix_ns.reset();
  plan = PlanSchedule(policy, facts, At(3, 2));
  ASSERT_TRUE(plan.data_method);
  EXPECT_EQ(*plan.data_method, BackupMethod::kFull);
}

TEST(PlanScheduleTest, MissedOccurrencesAreCaughtUpOnceAndReportedLate) {
  BackupPolicy policy = ValidPolicy();
  policy.incremental = true;
  ScheduleFacts facts;
  facts.watch_from_unix_ns = At(0, 0);
  facts.last_data_unix_ns = At(0, 2);
  facts.last_full_unix_ns = At(0, 2);
  // Down from Monday to the next Friday: Thursday and Monday were missed.
  ScheduleDecision plan = PlanSchedule(policy, facts, At(11, 9));
  ASSERT_TRUE(plan.data_method);
  EXPECT_EQ(plan.data_due_unix_ns, At(3, 2));         // the first missed one
  EXPECT_EQ(*plan.data_method, BackupMethod::kFull);  // for the latest: a new week
  facts.last_data_unix_ns = At(11, 9);
  plan = PlanSchedule(policy, facts, At(11, 9, 30));
  EXPECT_FALSE(plan.data_method);
  EXPECT_EQ(plan.next_due_unix_ns, At(14, 2));
}

TEST(PlanScheduleTest, WindowPastMidnightBelongsToItsStartDay) {
  BackupPolicy policy = ValidPolicy();
  policy.cycle_days = kTue | kSat;
  ASSERT_TRUE(ParseWindow("23:30-00:30", &policy.window_start_min, &policy.window_end_min).ok());
  ScheduleFacts facts;
  facts.watch_from_unix_ns = At(0, 0);
  ScheduleDecision plan = PlanSchedule(policy, facts, At(1, 12));
  EXPECT_FALSE(plan.data_method);
  EXPECT_EQ(plan.next_due_unix_ns, At(1, 23, 30));
  plan = PlanSchedule(policy, facts, At(2, 0, 10));  // Wednesday 00:10, inside Tuesday's
  ASSERT_TRUE(plan.data_method);
  EXPECT_EQ(plan.data_due_unix_ns, At(1, 23, 30));
}

TEST(PlanScheduleTest, RetryWaitsAfterAFailure) {
  BackupPolicy policy = ValidPolicy();
  ScheduleFacts facts;
  facts.watch_from_unix_ns = At(0, 0);
  facts.retry_data_at_unix_ns = At(0, 2, 20);
  ScheduleDecision plan = PlanSchedule(policy, facts, At(0, 2, 10));
  EXPECT_FALSE(plan.data_method);
  EXPECT_FALSE(plan.log_due);
  EXPECT_EQ(plan.next_due_unix_ns, At(0, 2, 20));
  plan = PlanSchedule(policy, facts, At(0, 2, 20));
  EXPECT_TRUE(plan.data_method);
}

TEST(PlanScheduleTest, LogCutsOnPeriodBoundaries) {
  BackupPolicy policy = ValidPolicy();
  policy.log_frequency = LogFrequency::kEvery30Min;
  ScheduleFacts facts;
  facts.watch_from_unix_ns = At(1, 10, 7);  // Tuesday: no data backup due
  // No segment yet: the writes so far are due at once.
  ScheduleDecision plan = PlanSchedule(policy, facts, At(1, 10, 7));
  EXPECT_TRUE(plan.log_due);
  EXPECT_EQ(plan.log_due_unix_ns, At(1, 10));
  EXPECT_EQ(plan.next_due_unix_ns, At(1, 10, 7));
  facts.last_log_unix_ns = At(1, 10, 7);
  plan = PlanSchedule(policy, facts, At(1, 10, 8));
  EXPECT_FALSE(plan.log_due);
  EXPECT_EQ(plan.next_due_unix_ns, At(1, 10, 30));
  plan = PlanSchedule(policy, facts, At(1, 10, 31));
  EXPECT_TRUE(plan.log_due);
  EXPECT_EQ(plan.log_due_unix_ns, At(1, 10, 30));
  facts.last_log_unix_ns = At(1, 10, 31);
  plan = PlanSchedule(policy, facts, At(1, 10, 59));
  EXPECT_FALSE(plan.log_due);
  EXPECT_EQ(plan.next_due_unix_ns, At(1, 11));
  // Late: the first boundary not served.
  plan = PlanSchedule(policy, facts, At(1, 13, 10));
  EXPECT_TRUE(plan.log_due);
  EXPECT_EQ(plan.log_due_unix_ns, At(1, 11));
  policy.log_frequency = LogFrequency::kEvery5Min;
  plan = PlanSchedule(policy, facts, At(1, 10, 34));
  EXPECT_FALSE(plan.log_due);
  EXPECT_EQ(plan.next_due_unix_ns, At(1, 10, 35));
  // A cut exactly on the boundary serves it.
  facts.last_log_unix_ns = At(1, 10, 35);
  plan = PlanSchedule(policy, facts, At(1, 10, 39));
  EXPECT_FALSE(plan.log_due);
  EXPECT_EQ(plan.next_due_unix_ns, At(1, 10, 40));
}

// Walks four weeks in uneven steps, feeding back what "ran": exactly one data
// backup per cycle day, inside its window, a full first each week.
TEST(PlanScheduleTest, FourWeeksOfDecisions) {
  BackupPolicy policy = ValidPolicy();
  policy.incremental = true;
  policy.cycle_days = kTue | kThu | kSun;
  policy.window_start_min = 22 * 60;
  policy.window_end_min = 1 * 60;  // 22:00-01:00
  policy.log_frequency = LogFrequency::kEvery30Min;
  ScheduleFacts facts;
  facts.watch_from_unix_ns = At(0, 0);
  std::mt19937_64 rng(testing::TestSeed(7));
  std::map<int64_t, BackupMethod> data_by_day;
  std::vector<int64_t> log_cuts;
  int64_t now = At(0, 0);
  while (now < At(28, 0)) {
    ScheduleDecision plan = PlanSchedule(policy, facts, now);
    if (plan.log_due) {
      EXPECT_LT(now - plan.log_due_unix_ns, 10 * kNsPerMinute);
      log_cuts.push_back(now);
      facts.last_log_unix_ns = now;
    }
    if (plan.data_method) {
      const int64_t day = UnixDay(plan.data_due_unix_ns);
      EXPECT_FALSE(data_by_day.contains(day));
      data_by_day[day] = *plan.data_method;
      EXPECT_GE(now, plan.data_due_unix_ns);
      EXPECT_LT(now, plan.data_due_unix_ns + 3 * kNsPerHour);  // inside the window
      facts.last_data_unix_ns = now;
      if (*plan.data_method == BackupMethod::kFull) facts.last_full_unix_ns = now;
    }
    plan = PlanSchedule(policy, facts, now);
    ASSERT_GT(plan.next_due_unix_ns, now);
    now = plan.next_due_unix_ns + static_cast<int64_t>(rng() % (10 * kNsPerMinute));
  }
  EXPECT_EQ(data_by_day.size(), 12u);
  for (const auto& [day, method] : data_by_day) {
    const int weekday = WeekdayOfDay(day);
    EXPECT_TRUE((policy.cycle_days >> weekday) & 1) << weekday;
    EXPECT_EQ(method, weekday == 1 ? BackupMethod::kFull : BackupMethod::kIncr) << weekday;
  }
  EXPECT_EQ(log_cuts.size(), 28u * 48);
}

// ---- With a pool and a store -------------------------------------------------

// A pool on a memory device and a store sharing one simulated wall clock. The
// store is a directory store (the real one: restarts reopen it), or the
// in-memory one for the long runs: the backup jobs read every manifest of the
// volume at each start, which on a directory costs a file read per manifest.
enum class StoreKind { kDir, kMemory };

class SimWorld {
 public:
  explicit SimWorld(int64_t start_ns, StoreKind kind = StoreKind::kDir) : now_ns_(start_ns) {
    device_ = NewMemoryDevice(256 * kMiB);
    pool_ = MustCreatePool(*device_, PoolOpts());
    WormStoreConfig config;
    config.chunk_bytes = 256 * kKiB;
    if (kind == StoreKind::kMemory) {
      memory_store_ = new MemoryWormStore(config, start_ns);
      store_.reset(memory_store_);
      store_dir_ = "memory";
      return;
    }
    store_dir_ = scratch_.File("store");
    Status created = CreateDirStore(store_dir_, config);
    SNAPDISK_CHECK(created.ok(), created.ToString().c_str());
    OpenStore();
  }

  PoolOptions PoolOpts() {
    PoolOptions options;
    options.wall_clock_ns = [this] { return now_ns_.load(); };
    return options;
  }
  void OpenStore() {
    SNAPDISK_CHECK(memory_store_ == nullptr, "the memory store cannot be reopened");
    store_.reset();
    DirStoreOptions options;
    options.now_unix_ns = [this] { return now_ns_.load(); };
    auto store = OpenDirStore(store_dir_, options);
    SNAPDISK_CHECK(store.ok(), store.status().ToString().c_str());
    store_ = std::move(store).value();
  }
  // Like a restart: the pool and the store are closed and opened again.
  void Reopen() {
    store_.reset();
    Status closed = pool_->Close();
    SNAPDISK_CHECK(closed.ok(), closed.ToString().c_str());
    pool_.reset();
    pool_ = MustOpenPool(*device_, PoolOpts());
    OpenStore();
  }

  int64_t now() const { return now_ns_.load(); }
  void Set(int64_t now_ns) {
    now_ns_.store(now_ns);
    if (memory_store_ != nullptr) memory_store_->SetNowUnixNs(now_ns);
  }
  Pool& pool() { return *pool_; }
  WormStore& store() { return *store_; }
  const std::string& store_dir() const { return store_dir_; }

  void MakeVolume(const std::string& name, uint64_t size_bytes = 64 * kMiB) {
    auto created = pool_->CreateVolume(name, size_bytes);
    ASSERT_TRUE(created.ok()) << created.status().ToString();
  }
  // A few writes of 4-32 KiB in the volume's first 8 MiB.
  void Write(const std::string& name, std::mt19937_64& rng, int count) {
    auto volume = pool_->OpenVolume(name);
    ASSERT_TRUE(volume.ok()) << volume.status().ToString();
    for (int i = 0; i < count; ++i) {
      const uint64_t length = 4 * kKiB * (1 + rng() % 8);
      const uint64_t offset = (rng() % (8 * kMiB / (4 * kKiB))) * 4 * kKiB;
      Status written = (*volume)->Write(offset, PatternBytes(rng(), length));
      ASSERT_TRUE(written.ok()) << written.ToString();
    }
  }

 private:
  ScratchDir scratch_;
  std::atomic<int64_t> now_ns_;
  std::unique_ptr<MemoryDevice> device_;
  std::unique_ptr<Pool> pool_;
  std::string store_dir_;
  std::unique_ptr<WormStore> store_;
  MemoryWormStore* memory_store_ = nullptr;  // store_, when in memory
};

TEST(PolicyStoreTest, SetGetRemoveAndTheLogIsRequired) {
  SimWorld world(At(0, 0));
  world.MakeVolume("db");
  world.MakeVolume("other");
  auto none = GetPolicy(world.pool(), "db");
  ASSERT_TRUE(none.ok()) << none.status().ToString();
  EXPECT_FALSE(none->has_value());
  EXPECT_TRUE(GetPolicy(world.pool(), "nope").status().IsNotFound());

  BackupPolicy policy = ValidPolicy();
  policy.store_dir = world.store_dir();
  policy.incremental = true;
  policy.retention_days = 30;
  ASSERT_TRUE(world.pool().SetLogEnabled("db", false).ok());
  ASSERT_TRUE(SetPolicy(world.pool(), "db", policy).ok());
  auto got = GetPolicy(world.pool(), "db");
  ASSERT_TRUE(got.ok()) << got.status().ToString();
  ASSERT_TRUE(got->has_value());
  EXPECT_EQ(EncodePolicy(**got), EncodePolicy(policy));
  auto log = world.pool().GetLogInfo("db");
  ASSERT_TRUE(log.ok());
  EXPECT_TRUE(log->enabled);  // turned back on
  EXPECT_TRUE(log->required);
  EXPECT_TRUE(world.pool().SetLogEnabled("db", false).IsPermissionDenied());
  EXPECT_FALSE(world.pool().GetLogInfo("other")->required);

  // Refused policies change nothing.
  BackupPolicy bad = policy;
  bad.retention_days = 5;
  Status refused = SetPolicy(world.pool(), "db", bad);
  ExpectInvalid(refused, {"'db'", "retention must be 7-730 days (got 5)"});
  EXPECT_EQ(EncodePolicy(**GetPolicy(world.pool(), "db")), EncodePolicy(policy));
  EXPECT_TRUE(SetPolicy(world.pool(), "nope", policy).IsNotFound());

  // Survives a restart.
  world.Reopen();
  got = GetPolicy(world.pool(), "db");
  ASSERT_TRUE(got.ok() && got->has_value());
  EXPECT_EQ(EncodePolicy(**got), EncodePolicy(policy));
  EXPECT_TRUE(world.pool().GetLogInfo("db")->required);

  ASSERT_TRUE(RemovePolicy(world.pool(), "db").ok());
  EXPECT_FALSE(GetPolicy(world.pool(), "db")->has_value());
  EXPECT_FALSE(world.pool().GetLogInfo("db")->required);
  EXPECT_TRUE(RemovePolicy(world.pool(), "db").IsNotFound());
  EXPECT_TRUE(world.pool().SetLogEnabled("db", false).ok());

  // A damaged attribute is Corruption, not a crash.
  ASSERT_TRUE(world.pool().SetAttribute("db", kPolicyAttribute, "{nonsense").ok());
  Status damaged = GetPolicy(world.pool(), "db").status();
  EXPECT_TRUE(damaged.IsCorruption()) << damaged.ToString();
}

// What the long runs check at every tick and at the end.
class Auditor {
 public:
  Auditor(SimWorld& world, std::string volume, BackupPolicy policy)
      : world_(world), volume_(std::move(volume)), policy_(std::move(policy)) {}

  // Slack for expiry: the pass runs every `expire_interval` at a tick.
  int64_t expire_slack_ns = 2 * kNsPerHour;

  void Record(const std::vector<ScheduledRun>& runs) {
    for (const ScheduledRun& run : runs) {
      ASSERT_TRUE(run.status.ok())
          << run.volume << " " << BackupMethodName(run.method) << ": " << run.status.ToString();
      ASSERT_EQ(run.volume, volume_);
      ASSERT_FALSE(run.set_id.empty());
      EXPECT_GE(run.ran_unix_ns, run.due_unix_ns);
      Tracked tracked;
      tracked.run = run;
      tracked.retain_until_ns = run.retain_until_unix_ns;
      const uint32_t days =
          run.method == BackupMethod::kLog ? policy_.log_retention_days : policy_.retention_days;
      EXPECT_GE(run.retain_until_unix_ns, run.ran_unix_ns + days * kNsPerDay);
      EXPECT_LE(run.retain_until_unix_ns, world_.now() + days * kNsPerDay);
      sets_[run.set_id] = tracked;
      runs_.push_back(run);
    }
  }

  // The store against what ran: nothing gone before its own retain-until,
  // nothing left well after its (possibly extended) retain-until, and a recent
  // full/snapshot once the first backup day is over.
  void CheckStore(int64_t first_backup_done_ns) {
    const int64_t now = world_.now();
    auto objects = world_.store().List("sets/" + volume_ + "/");
    ASSERT_TRUE(objects.ok()) << objects.status().ToString();
    std::map<std::string, const WormObjectInfo*> present;  // by set id
    int64_t newest_full_ns = 0;
    int64_t newest_data_ns = 0;
    for (const WormObjectInfo& object : *objects) {
      const size_t dash = object.key.rfind('-');
      const size_t dot = object.key.rfind('.');
      ASSERT_TRUE(dash != std::string::npos && dot > dash) << object.key;
      const std::string id = object.key.substr(dash + 1, dot - dash - 1);
      present[id] = &object;
      if (id[0] == 'F' || id[0] == 'S')
        newest_full_ns = std::max(newest_full_ns, object.created_unix_ns);
      if (id[0] != 'L') newest_data_ns = std::max(newest_data_ns, object.created_unix_ns);
    }
    for (auto& [id, tracked] : sets_) {
      if (tracked.gone) continue;
      auto it = present.find(id);
      if (it != present.end()) {
        tracked.retain_until_ns =
            std::max(tracked.retain_until_ns, it->second->retain_until_unix_ns);
        ASSERT_LT(now, tracked.retain_until_ns + expire_slack_ns)
            << id << " outlived its retain-until (extended to dependents' included)";
        continue;
      }
      ASSERT_GE(now, tracked.run.retain_until_unix_ns) << id << " expired before its retain-until";
      tracked.gone = true;
      ++expired_sets_;
    }
    if (now >= first_backup_done_ns) {
      const int64_t full_age_limit =
          policy_.method == PolicyMethod::kPhysical && policy_.incremental ? 8 * kNsPerDay
                                                                           : MaxGapNs() + kNsPerDay;
      ASSERT_GE(newest_full_ns, now - full_age_limit) << "no recent full/snapshot set";
      ASSERT_GE(newest_data_ns, now - (MaxGapNs() + kNsPerDay)) << "no recent data set";
    }
  }

  // The longest gap between cycle days.
  int64_t MaxGapNs() const {
    int64_t gap = 0;
    for (int day = 0; day < 7; ++day) {
      if (!((policy_.cycle_days >> day) & 1)) continue;
      int next = 1;
      while (!((policy_.cycle_days >> ((day + next) % 7)) & 1)) ++next;
      gap = std::max<int64_t>(gap, next);
    }
    return gap * kNsPerDay;
  }

  // Every cycle day in [from, to) has exactly one data backup, started inside
  // its window; nothing else has one. Returns the data runs by day.
  std::map<int64_t, ScheduledRun> CheckDataOnTime(int64_t from_ns, int64_t to_ns) {
    std::map<int64_t, ScheduledRun> by_day;
    for (const ScheduledRun& run : runs_) {
      if (run.method == BackupMethod::kLog) continue;
      const int64_t day = UnixDay(run.ran_unix_ns - policy_.window_start_min * kNsPerMinute);
      EXPECT_FALSE(by_day.contains(day)) << "two data backups for day " << day;
      by_day[day] = run;
    }
    const int64_t window_ns =
        ((policy_.window_end_min + 1440 - policy_.window_start_min) % 1440) * kNsPerMinute;
    for (int64_t day = UnixDay(from_ns); day < UnixDay(to_ns); ++day) {
      const bool cycle_day = (policy_.cycle_days >> WeekdayOfDay(day)) & 1;
      auto it = by_day.find(day);
      if (!cycle_day) {
        EXPECT_TRUE(it == by_day.end()) << "a data backup on day " << day << ", not a cycle day";
        continue;
      }
      if (OccurrenceNs(day) + window_ns > to_ns) continue;  // the window is not over yet
      EXPECT_TRUE(it != by_day.end()) << "no data backup on cycle day " << day;
      if (it == by_day.end()) continue;
      EXPECT_EQ(it->second.due_unix_ns, OccurrenceNs(day));
      EXPECT_GE(it->second.ran_unix_ns, OccurrenceNs(day));
      EXPECT_LT(it->second.ran_unix_ns, OccurrenceNs(day) + window_ns) << "ran outside the window";
    }
    return by_day;
  }

  // Log segments: contiguous LSNs, each cut soon after its boundary.
  size_t CheckLogs(int64_t max_late_ns) {
    size_t count = 0;
    const ScheduledRun* previous = nullptr;
    for (const ScheduledRun& run : runs_) {
      if (run.method != BackupMethod::kLog) continue;
      ++count;
      EXPECT_EQ(run.type, BackupType::kLog);
      EXPECT_LE(run.first_lsn, run.last_lsn) << run.set_id;
      EXPECT_LT(run.ran_unix_ns - run.due_unix_ns, max_late_ns) << run.set_id;
      if (previous != nullptr) {
        EXPECT_EQ(run.first_lsn, previous->last_lsn + 1)
            << previous->set_id << " then " << run.set_id << ": a gap or an overlap";
      }
      previous = &run;
    }
    return count;
  }

  int64_t OccurrenceNs(int64_t day) const {
    return day * kNsPerDay + policy_.window_start_min * kNsPerMinute;
  }
  const std::vector<ScheduledRun>& runs() const { return runs_; }
  uint64_t expired_sets() const { return expired_sets_; }

 private:
  struct Tracked {
    ScheduledRun run;
    int64_t retain_until_ns = 0;  // the latest seen (extended by dependents)
    bool gone = false;
  };
  SimWorld& world_;
  const std::string volume_;
  const BackupPolicy policy_;
  std::map<std::string, Tracked> sets_;
  std::vector<ScheduledRun> runs_;
  uint64_t expired_sets_ = 0;
};

// Runs the scheduler from world.now() until the next thing due is at or after
// `end_ns`: ticks when it says something is due (plus up to 90 s of jitter),
// writes between ticks, checks the store after each.
void Drive(SimWorld& world, Scheduler& scheduler, Auditor& auditor, const std::string& volume,
           int64_t end_ns, std::mt19937_64& rng, int64_t first_backup_done_ns) {
  while (true) {
    auto next = scheduler.NextDueUnixNs();
    ASSERT_TRUE(next.ok()) << next.status().ToString();
    if (*next >= end_ns) break;
    const int64_t jitter = static_cast<int64_t>(rng() % (90 * 1'000'000'000ull));
    world.Set(std::max(*next, world.now() + 1) + jitter);
    ASSERT_NO_FATAL_FAILURE(world.Write(volume, rng, 3));
    auto runs = scheduler.Tick();
    ASSERT_TRUE(runs.ok()) << runs.status().ToString();
    ASSERT_NO_FATAL_FAILURE(auditor.Record(*runs));
    ASSERT_NO_FATAL_FAILURE(auditor.CheckStore(first_backup_done_ns));
  }
}

TEST(SchedulerTest, SixtyDaysPhysicalIncrementalWith30MinuteLogs) {
  const auto started = std::chrono::steady_clock::now();
  SimWorld world(At(0, 0), StoreKind::kMemory);
  world.MakeVolume("db");
  BackupPolicy policy = ValidPolicy();
  policy.store_dir = world.store_dir();
  policy.incremental = true;
  policy.retention_days = 7;
  policy.cycle_days = kMon | kThu;
  policy.log_frequency = LogFrequency::kEvery30Min;
  policy.log_retention_days = 7;
  ASSERT_TRUE(SetPolicy(world.pool(), "db", policy).ok());
  ASSERT_TRUE(world.pool().Commit().ok());

  SchedulerOptions options;
  options.store_dir = world.store_dir();
  Scheduler scheduler(world.pool(), world.store(), options);
  Auditor auditor(world, "db", policy);
  std::mt19937_64 rng(testing::TestSeed(60));
  const int days = static_cast<int>(kLongRunDays * testing::TestScale());
  ASSERT_NO_FATAL_FAILURE(Drive(world, scheduler, auditor, "db", At(days, 0), rng, At(0, 3)));

  auto by_day = auditor.CheckDataOnTime(At(0, 0), At(days, 0));
  size_t cycle_days = 0;
  for (int day = 0; day < days; ++day) cycle_days += day % 7 == 0 || day % 7 == 3;
  EXPECT_EQ(by_day.size(), cycle_days);
  for (const auto& [day, run] : by_day) {
    const bool monday = WeekdayOfDay(day) == 0;
    EXPECT_EQ(run.type, monday ? BackupType::kFull : BackupType::kIncr) << run.set_id;
  }
  const size_t cuts = auditor.CheckLogs(3 * kNsPerMinute);
  EXPECT_EQ(cuts, static_cast<size_t>(days * 48));
  // Log segments are kept 7 days: those of all but the last 8 are gone.
  EXPECT_GE(auditor.expired_sets(), static_cast<uint64_t>(std::max(0, days - 8) * 48));
  EXPECT_TRUE(scheduler.expire_status().ok()) << scheduler.expire_status().ToString();

  // Late (a tick missed): one segment catches up and ends at the volume's LSN.
  world.Write("db", rng, 3);
  world.Set(At(days, 1, 10));
  auto runs = scheduler.Tick();
  ASSERT_TRUE(runs.ok());
  ASSERT_NO_FATAL_FAILURE(auditor.Record(*runs));
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0].due_unix_ns, At(days, 0));
  EXPECT_EQ((*runs)[0].last_lsn, world.pool().GetVolume("db")->lsn);
  EXPECT_EQ(auditor.CheckLogs(2 * kNsPerHour), cuts + 1);
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
  std::printf("%d simulated days: %zu runs, %llu sets expired, %.1f s\n", days,
              auditor.runs().size(), static_cast<unsigned long long>(auditor.expired_sets()),
              seconds);
}

TEST(SchedulerTest, SnapshotMethodWith5MinuteLogs) {
  SimWorld world(At(0, 20), StoreKind::kMemory);
  world.MakeVolume("web");
  BackupPolicy policy = ValidPolicy();
  policy.store_dir = world.store_dir();
  policy.method = PolicyMethod::kSnapshot;
  policy.cycle_days = kMon | kTue | kWed | kFri;
  ASSERT_TRUE(ParseWindow("23:00-01:00", &policy.window_start_min, &policy.window_end_min).ok());
  policy.log_frequency = LogFrequency::kEvery5Min;
  ASSERT_TRUE(SetPolicy(world.pool(), "web", policy).ok());
  SchedulerOptions options;
  options.store_dir = world.store_dir();
  Scheduler scheduler(world.pool(), world.store(), options);
  Auditor auditor(world, "web", policy);
  std::mt19937_64 rng(testing::TestSeed(5));
  // Monday 20:00 to Tuesday 02:00 (scaled): Monday's window, 23:00-01:00.
  const int hours = static_cast<int>(6 * testing::TestScale());
  const int64_t end_ns = At(0, 20) + hours * kNsPerHour;
  ASSERT_NO_FATAL_FAILURE(Drive(world, scheduler, auditor, "web", end_ns, rng, At(1, 1)));
  auto by_day = auditor.CheckDataOnTime(At(0, 20), end_ns);
  size_t occurrences = 0;  // windows opening in the run
  for (int64_t day = UnixDay(At(0, 0)); day <= UnixDay(end_ns); ++day) {
    const int64_t opens_ns = auditor.OccurrenceNs(day);
    occurrences += ((policy.cycle_days >> WeekdayOfDay(day)) & 1) && opens_ns >= At(0, 20) &&
                   opens_ns < end_ns;
  }
  EXPECT_EQ(by_day.size(), occurrences);
  for (const auto& [day, run] : by_day) EXPECT_EQ(run.type, BackupType::kSnapshot);
  // One cut per 5-minute boundary, each no more than 90 s late.
  const size_t cuts = auditor.CheckLogs(2 * kNsPerMinute);
  EXPECT_EQ(cuts, static_cast<size_t>(hours * 12));
}

TEST(SchedulerTest, StateComesFromTheStoreAcrossRestartsAndMissedWindowsRunLate) {
  SimWorld world(At(0, 0));
  world.MakeVolume("db");
  BackupPolicy policy = ValidPolicy();  // physical full, log with data
  policy.store_dir = world.store_dir();
  policy.cycle_days = kMon | kWed | kFri;
  ASSERT_TRUE(SetPolicy(world.pool(), "db", policy).ok());
  ASSERT_TRUE(world.pool().Commit().ok());
  std::mt19937_64 rng(testing::TestSeed(3));
  Auditor auditor(world, "db", policy);
  {
    Scheduler scheduler(world.pool(), world.store());
    ASSERT_NO_FATAL_FAILURE(Drive(world, scheduler, auditor, "db", At(2, 12), rng, At(0, 3)));
  }
  auditor.CheckDataOnTime(At(0, 0), At(2, 12));
  ASSERT_EQ(auditor.runs().size(), 4u);  // log + full, Monday and Wednesday

  // Restart: Wednesday's backup is not taken again.
  world.Reopen();
  {
    Scheduler scheduler(world.pool(), world.store());
    auto runs = scheduler.Tick();
    ASSERT_TRUE(runs.ok());
    EXPECT_TRUE(runs->empty());
    auto next = scheduler.NextDueUnixNs();
    ASSERT_TRUE(next.ok());
    EXPECT_EQ(*next, world.now() + 60 * kNsPerMinute);  // only the expiry pass
  }
  // Down through Friday's window: the backup runs at once on restart, late.
  world.Write("db", rng, 5);
  world.Set(At(5, 10));
  world.Reopen();
  {
    Scheduler scheduler(world.pool(), world.store());
    auto next = scheduler.NextDueUnixNs();
    ASSERT_TRUE(next.ok());
    EXPECT_LE(*next, world.now());
    auto runs = scheduler.Tick();
    ASSERT_TRUE(runs.ok());
    ASSERT_NO_FATAL_FAILURE(auditor.Record(*runs));
    ASSERT_EQ(runs->size(), 2u);
    EXPECT_EQ((*runs)[0].method, BackupMethod::kLog);
    EXPECT_EQ((*runs)[1].method, BackupMethod::kFull);
    EXPECT_EQ((*runs)[1].due_unix_ns, At(4, 2));  // Friday 02:00
    EXPECT_EQ((*runs)[1].ran_unix_ns, At(5, 10));
    runs = scheduler.Tick();
    ASSERT_TRUE(runs.ok());
    EXPECT_TRUE(runs->empty());
    next = scheduler.NextDueUnixNs();
    ASSERT_TRUE(next.ok());
    EXPECT_EQ(*next, std::min(At(7, 2), world.now() + 60 * kNsPerMinute));
  }
  auditor.CheckLogs(kNsPerDay * 2);
}

TEST(SchedulerTest, ManualBackupsOnDemandAndTheScheduleAfterThem) {
  SimWorld world(At(0, 0));
  world.MakeVolume("db");
  BackupPolicy policy = ValidPolicy();
  policy.store_dir = world.store_dir();
  policy.incremental = true;
  ASSERT_TRUE(SetPolicy(world.pool(), "db", policy).ok());
  Scheduler scheduler(world.pool(), world.store());
  std::mt19937_64 rng(testing::TestSeed(11));
  world.Write("db", rng, 10);
  auto runs = scheduler.Tick();  // loads the (empty) store
  ASSERT_TRUE(runs.ok());
  EXPECT_TRUE(runs->empty());

  // Monday 01:00, before the window: a manual full.
  world.Set(At(0, 1));
  BackupOptions manual;
  manual.method = BackupMethod::kFull;
  manual.retain_days = 30;
  auto job = BackupJob::Start(world.pool(), world.store(), "db", manual);
  ASSERT_TRUE(job.ok()) << job.status().ToString();
  auto set = (*job)->Run();
  ASSERT_TRUE(set.ok()) << set.status().ToString();
  EXPECT_EQ(set->type, BackupType::kFull);

  // The window still gets its backup: an incremental on that full.
  world.Write("db", rng, 10);
  world.Set(At(0, 2, 5));
  runs = scheduler.Tick();
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 2u);
  EXPECT_EQ((*runs)[0].method, BackupMethod::kLog);
  EXPECT_EQ((*runs)[0].status.ToString(), "OK");
  EXPECT_EQ((*runs)[1].status.ToString(), "OK");
  EXPECT_EQ((*runs)[1].type, BackupType::kIncr);
  auto incr = FindBackupSet(world.store(), (*runs)[1].set_id);
  ASSERT_TRUE(incr.ok()) << incr.status().ToString();
  EXPECT_EQ(incr->base, set->id);
}

TEST(SchedulerTest, FailuresAreReportedRetriedAndIncrementalFallsBackToFull) {
  SimWorld world(At(0, 0));
  world.MakeVolume("db");
  BackupPolicy policy = ValidPolicy();
  policy.store_dir = world.store_dir();
  policy.incremental = true;
  policy.log_frequency = LogFrequency::kEvery30Min;
  ASSERT_TRUE(SetPolicy(world.pool(), "db", policy).ok());
  Scheduler scheduler(world.pool(), world.store());
  std::mt19937_64 rng(testing::TestSeed(13));

  // Another job holds the volume at the window: the backup fails, says why,
  // and is tried again after the retry interval (logs go on meanwhile).
  world.Write("db", rng, 5);
  auto held = ReserveBackupSequence(world.store(), "db");
  ASSERT_TRUE(held.ok()) << held.status().ToString();
  world.Set(At(0, 2, 1));
  auto runs = scheduler.Tick();
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 2u);
  EXPECT_EQ((*runs)[0].method, BackupMethod::kLog);  // the first sight: the writes so far
  EXPECT_TRUE((*runs)[0].status.IsBusy()) << (*runs)[0].status.ToString();
  EXPECT_EQ((*runs)[0].due_unix_ns, At(0, 2));
  EXPECT_EQ((*runs)[1].method, BackupMethod::kFull);
  EXPECT_TRUE((*runs)[1].status.IsBusy()) << (*runs)[1].status.ToString();
  EXPECT_TRUE((*runs)[1].set_id.empty());
  auto next = scheduler.NextDueUnixNs();
  ASSERT_TRUE(next.ok());
  EXPECT_EQ(*next, At(0, 2, 11));  // the retry
  ReleaseBackupSequence(world.store(), "db", *held);
  world.Set(At(0, 2, 5));
  runs = scheduler.Tick();
  ASSERT_TRUE(runs.ok());
  EXPECT_TRUE(runs->empty());
  world.Set(At(0, 2, 11));
  runs = scheduler.Tick();
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_TRUE((*runs)[0].status.ok()) << (*runs)[0].status.ToString();
  EXPECT_EQ((*runs)[0].type, BackupType::kFull);
  EXPECT_EQ((*runs)[0].due_unix_ns, At(0, 2));
  const std::string full = (*runs)[0].set_id;
  world.Set(At(0, 2, 31));  // the failed cut's writes go with the next one
  runs = scheduler.Tick();
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_TRUE((*runs)[0].status.ok()) << (*runs)[0].status.ToString();
  EXPECT_EQ((*runs)[0].method, BackupMethod::kLog);
  EXPECT_EQ((*runs)[0].due_unix_ns, At(0, 2, 30));

  // Thursday: the full's snapshot is gone, so no incremental can be cut from
  // it; the scheduler reports that and takes a full instead.
  ASSERT_TRUE(world.pool().DeleteSnapshot("db", "backup-" + full).ok());
  world.Write("db", rng, 5);
  world.Set(At(3, 2, 1));
  runs = scheduler.Tick();
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 3u);
  EXPECT_EQ((*runs)[0].method, BackupMethod::kLog);
  EXPECT_TRUE((*runs)[0].status.ok()) << (*runs)[0].status.ToString();
  EXPECT_EQ((*runs)[1].method, BackupMethod::kIncr);
  EXPECT_TRUE((*runs)[1].status.IsNotFound()) << (*runs)[1].status.ToString();
  EXPECT_EQ((*runs)[2].method, BackupMethod::kFull);
  EXPECT_TRUE((*runs)[2].status.ok()) << (*runs)[2].status.ToString();

  // An unreadable policy is reported once, and nothing runs for it.
  ASSERT_TRUE(world.pool().SetAttribute("db", kPolicyAttribute, "{").ok());
  world.Set(At(7, 2, 1));
  runs = scheduler.Tick();
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_TRUE((*runs)[0].status.IsCorruption()) << (*runs)[0].status.ToString();
  world.Set(At(7, 2, 40));
  runs = scheduler.Tick();
  ASSERT_TRUE(runs.ok());
  EXPECT_TRUE(runs->empty());
}

TEST(SchedulerTest, PolicyNamingAnotherStoreIsSkippedWithAnError) {
  SimWorld world(At(0, 0));
  world.MakeVolume("db");
  world.MakeVolume("plain");  // no policy: never touched
  BackupPolicy policy = ValidPolicy();
  policy.store_dir = "/somewhere/else";
  policy.log_frequency = LogFrequency::kEvery5Min;
  ASSERT_TRUE(SetPolicy(world.pool(), "db", policy).ok());
  SchedulerOptions options;
  options.store_dir = world.store_dir() + "/";  // spelled differently: same directory
  Scheduler scheduler(world.pool(), world.store(), options);
  world.Set(At(0, 2, 10));
  auto runs = scheduler.Tick();
  ASSERT_TRUE(runs.ok());
  ASSERT_EQ(runs->size(), 1u);
  EXPECT_EQ((*runs)[0].volume, "db");
  ExpectInvalid((*runs)[0].status, {"'db'", "/somewhere/else", "skipped"});
  world.Set(At(0, 2, 20));
  runs = scheduler.Tick();
  ASSERT_TRUE(runs.ok());
  EXPECT_TRUE(runs->empty());  // reported once, not at every tick
  auto next = scheduler.NextDueUnixNs();
  ASSERT_TRUE(next.ok());
  EXPECT_GT(*next, world.now());  // and it does not keep a daemon busy

  // Pointed at this store, it runs.
  policy.store_dir = world.store_dir();
  ASSERT_TRUE(SetPolicy(world.pool(), "db", policy).ok());
  runs = scheduler.Tick();
  ASSERT_TRUE(runs.ok());
  ASSERT_FALSE(runs->empty());
  for (const ScheduledRun& run : *runs) EXPECT_TRUE(run.status.ok()) << run.status.ToString();
  auto sets = ListBackupSets(world.store(), "plain");
  ASSERT_TRUE(sets.ok());
  EXPECT_TRUE(sets->empty());
}

}  // namespace
}  // namespace snapdisk
