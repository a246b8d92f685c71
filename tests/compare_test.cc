// The comparator's parts: scenario parsing, the open-loop workload, the
// adaptive rate controller; and `snapdisk compare --quick` end to end (the
// report's contract and its physics).
#include <fcntl.h>
#include <gtest/gtest.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <thread>

#include "bench/comparator/adaptive_rate.h"
#include "bench/comparator/fio_workload.h"
#include "bench/comparator/open_loop_workload.h"
#include "bench/comparator/scenario.h"
#include "disk/memory_device.h"
#include "engine/pool.h"
#include "support/cli_test_support.h"
#include "support/crash_oracle.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

constexpr uint64_t kMiB = uint64_t{1} << 20;

// ---- Scenario parsing --------------------------------------------------------

TEST(ScenarioTest, EmptyObjectIsTheDefaultAndKeysReplaceIt) {
  auto d = ParseScenario("{}");
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_EQ(d->profile, EssdLevel::kPL1);
  EXPECT_EQ(d->methods.size(), 8u);
  EXPECT_EQ(d->written.size(), 3u);
  EXPECT_EQ(d->backup_store, BackupStoreChoice::kMemory);
  EXPECT_EQ(ParseScenario(R"({"store": "directory"})")->backup_store, BackupStoreChoice::kDirectory);
  // The server a fio job talks to puts into a directory.
  EXPECT_EQ(ParseScenario(R"({"workload": {"fio": "j.fio"}})")->backup_store, BackupStoreChoice::kDirectory);

  auto s = ParseScenario(R"({"profile": "pl0", "volume_size": "40G", "written": ["16M", 33554432],
      "foreground": {"iops": 500, "read_pct": 70, "block_size": "4K", "seconds_before": 2},
      "methods": ["full", "snapshot"], "rate": 25.5, "p99_target": 900,
      "log_frequencies": ["30m"], "rpo_hours": 12, "rpo_failures": 2, "seed": 42})");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->profile, EssdLevel::kPL0);
  EXPECT_EQ(s->volume_size_bytes, uint64_t{40} << 30);
  EXPECT_EQ(s->written, (std::vector<uint64_t>{16 * kMiB, 32 * kMiB}));
  EXPECT_EQ(s->foreground.iops, 500);
  EXPECT_EQ(s->foreground.read_pct, 70);
  EXPECT_EQ(s->foreground.block_bytes, 4096u);
  EXPECT_EQ(s->foreground.seconds_before, 2);
  EXPECT_EQ(s->foreground.seconds_after, Scenario().foreground.seconds_after);
  EXPECT_EQ(s->methods, (std::vector<CompareMethod>{CompareMethod::kFull, CompareMethod::kSnapshot}));
  EXPECT_EQ(s->rate_mb_per_s, 25.5);
  EXPECT_EQ(s->p99_target_us, 900);
  EXPECT_EQ(s->log_frequencies, std::vector<LogFrequencyChoice>{LogFrequencyChoice::k30m});
  EXPECT_EQ(s->rpo_hours, 12);
  EXPECT_EQ(s->rpo_failures, 2u);
  EXPECT_EQ(s->seed, 42u);

  // Over --quick's base, keys not given keep the quick values.
  auto q = ParseScenario(R"({"seed": 3})", Scenario::Quick());
  ASSERT_TRUE(q.ok());
  EXPECT_EQ(q->written, Scenario::Quick().written);
  EXPECT_EQ(q->seed, 3u);
}

TEST(ScenarioTest, EveryBadInputIsRefusedByName) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"[]", "must be a JSON object"},
      {"{", "not valid JSON"},
      {R"({"profil": "PL1"})", "unknown key 'profil'"},
      {R"({"foreground": {"iopz": 1}})", "unknown key 'foreground.iopz'"},
      {R"({"workload": {"fio": ""}})", "workload.fio"},
      {R"({"workload": {"fio": 3}})", "workload.fio = 3"},
      {R"({"workload": {"fio": "job.fio"}, "methods": ["full", "full-adaptive"]})",
       "full-adaptive\": cannot run with workload.fio"},
      {R"({"workload": {"x": 1}})", "unknown key 'workload.x'"},
      {R"({"profile": "PL9"})", "profile = \"PL9\""},
      {R"({"profile": 1})", "profile = 1"},
      {R"({"profile": "PL2"})", "volume_size"},  // 100 GiB is below PL2's 461 GiB
      {R"({"volume_size": "12Q"})", "volume_size = \"12Q\""},
      {R"({"volume_size": -5})", "volume_size = -5"},
      {R"({"written": []})", "written = []"},
      {R"({"written": ["1G", "256M"]})", "ascend"},
      {R"({"written": ["1M"]})", "written = \"1M\""},
      {R"({"written": ["200G"]})", "more than volume_size"},
      {R"({"foreground": {"iops": 0}})", "foreground.iops = 0"},
      {R"({"foreground": {"iops": "fast"}})", "foreground.iops = \"fast\""},
      {R"({"foreground": {"read_pct": 101}})", "foreground.read_pct = 101"},
      {R"({"foreground": {"block_size": 1000}})", "foreground.block_size = 1000"},
      {R"({"foreground": {"seconds_before": 0}})", "foreground.seconds_before = 0"},
      {R"({"foreground": 3})", "foreground = 3"},
      {R"({"methods": ["ful"]})", "methods = \"ful\""},
      {R"({"methods": ["full", "full"]})", "listed twice"},
      {R"({"methods": []})", "methods = []"},
      {R"({"rate": 0})", "rate = 0"},
      {R"({"p99_target": -1})", "p99_target = -1"},
      {R"({"log_frequencies": ["10m"]})", "log_frequencies = \"10m\""},
      {R"({"rpo_hours": 0})", "rpo_hours = 0"},
      {R"({"rpo_failures": 0})", "rpo_failures = 0"},
      {R"({"rpo_failures": 1.5})", "rpo_failures = 1.5"},
      {R"({"seed": -1})", "seed = -1"},
      {R"({"store": "s3"})", "store = \"s3\""},
      {R"({"store": 1})", "store = 1"},
      {R"({"workload": {"fio": "job.fio"}, "store": "memory"})", "store = \"memory\": cannot run with workload.fio"},
  };
  for (const auto& [text, words] : cases) {
    auto s = ParseScenario(text);
    ASSERT_FALSE(s.ok()) << text;
    EXPECT_TRUE(s.status().IsInvalidArgument()) << text;
    EXPECT_NE(s.status().message().find(words), std::string::npos) << text << " -> " << s.status().ToString();
  }
}

TEST(ScenarioTest, AFioWorkloadLeavesOutFullAdaptiveUnlessMethodsAreGiven) {
  auto s = ParseScenario(R"({"workload": {"fio": "jobs/db.fio"}})");
  ASSERT_TRUE(s.ok()) << s.status().ToString();
  EXPECT_EQ(s->fio_job, "jobs/db.fio");
  std::vector<CompareMethod> expected = AllCompareMethods();
  expected.erase(std::find(expected.begin(), expected.end(), CompareMethod::kFullAdaptive));
  EXPECT_EQ(s->methods, expected);
  auto chosen = ParseScenario(R"({"workload": {"fio": "db.fio"}, "methods": ["snapshot", "full-throttled"]})");
  ASSERT_TRUE(chosen.ok()) << chosen.status().ToString();
  EXPECT_EQ(chosen->methods, (std::vector<CompareMethod>{CompareMethod::kSnapshot, CompareMethod::kFullThrottled}));
}

// ---- The fio workload's parts ------------------------------------------------

TEST(FioWorkloadTest, TheJobGetsTheTargetInFrontAndMayNotOverrideIt) {
  FioTarget t;
  t.uri = "nbd+unix:///vol?socket=/tmp/x/nbd.sock";
  t.size_bytes = 64 * kMiB;
  t.log_prefix = "/work/fio";
  t.interval_ms = 100;
  const std::string job = "; a database\n[db]\nrw=randrw\nbs=8k\n  iodepth = 4\nrate_iops=500\n";
  auto made = MakeFioJob(job, t);
  ASSERT_TRUE(made.ok()) << made.status().ToString();
  for (const char* line : {"[global]\n", "ioengine=nbd\n", "uri=nbd+unix:///vol?socket=/tmp/x/nbd.sock\n",
                           "size=67108864\n", "time_based=1\n", "write_hist_log=/work/fio\n",
                           "log_hist_msec=100\n", "log_unix_epoch=1\n"}) {
    EXPECT_NE(made->find(line), std::string::npos) << line;
  }
  // The user's job follows, whole, so its options win over the defaults
  // (size) but cannot touch the target.
  EXPECT_GT(made->find(job), made->find("log_unix_epoch=1"));

  const std::vector<std::pair<std::string, std::string>> refused = {
      {"[db]\nrw=read\nfilename=/dev/sda\n", "line 3 'filename=/dev/sda' sets 'filename'"},
      {"[global]\nIOENGINE=libaio\n[db]\nrw=read\n", "sets 'ioengine'"},
      {"[db]\nruntime=10\n", "sets 'runtime'"},
      {"[db]\ntime_based\n", "sets 'time_based'"},
      {"[db]\nwrite_hist_log=x\n", "sets 'write_hist_log'"},
      {"[db]\nnumber_ios=100\n", "sets 'number_ios', which would end, delay or serialize"},
      {"[db]\nstartdelay=5\n", "sets 'startdelay'"},
      {"[global]\nrw=read\n", "no job section"},
      {"rw=read\n", "no job section"},
      {"[db\nrw=read\n", "line 1 '[db' is not a [section]"},
      {"[db]\ninclude other.fio\n", "includes"},
      {"[db]\n!!!\n", "line 2 '!!!' is not an option"},
  };
  for (const auto& [text, words] : refused) {
    auto r = MakeFioJob(text, t);
    ASSERT_FALSE(r.ok()) << text;
    EXPECT_TRUE(r.status().IsInvalidArgument());
    EXPECT_NE(r.status().message().find(words), std::string::npos) << text << " -> " << r.status().ToString();
  }
}

TEST(FioWorkloadTest, HistogramBinsAreFiosLayout) {
  // The first 128 bins are exact; then 64 per power of two, each reported
  // at its middle.
  EXPECT_EQ(FioBinValueNs(0), 0);
  EXPECT_EQ(FioBinValueNs(127), 127);
  EXPECT_EQ(FioBinValueNs(128), 129);        // [128, 130)
  EXPECT_EQ(FioBinValueNs(191), 128 + 127);  // [254, 256)
  EXPECT_EQ(FioBinValueNs(192), 256 + 2);    // [256, 260)
  // The last group of 64 starts at 2^33 ns (about 8.6 s).
  EXPECT_GE(FioBinValueNs(kFioHistBins - 64), int64_t{1} << 33);
  for (uint32_t i = 1; i < kFioHistBins; ++i) {
    ASSERT_GT(FioBinValueNs(i), FioBinValueNs(i - 1)) << i;
    // Neighbouring bins are within fio's 1/64 of each other.
    if (i >= 128) {
      ASSERT_LE(FioBinValueNs(i) - FioBinValueNs(i - 1), FioBinValueNs(i - 1) / 64 + 1) << i;
    }
  }
}

std::string HistLine(int64_t ms, int direction, const std::vector<std::pair<uint32_t, uint64_t>>& bins) {
  std::vector<uint64_t> counts(kFioHistBins, 0);
  for (const auto& [bin, n] : bins) counts[bin] = n;
  std::string line = std::to_string(ms) + ", " + std::to_string(direction) + ", 8192";
  for (uint64_t c : counts) line += ", " + std::to_string(c);
  return line + "\n";
}

TEST(FioWorkloadTest, HistLogLinesBecomeHistogramsAndBadLinesAreNamed) {
  // Bin 1000: error_bits = (1000 >> 6) - 1 = 14, base 2^20, k 40:
  // 1048576 + 40.5 * 16384 ns, about 1.71 ms.
  const int64_t slow = FioBinValueNs(1000);
  EXPECT_EQ(slow, 1048576 + 40 * 16384 + 8192);
  const std::string text = HistLine(1000, 0, {{100, 98}, {1000, 2}}) + HistLine(1000, 1, {{120, 50}}) +
                           "\n" + HistLine(1100, 0, {});
  std::vector<FioInterval> out;
  ASSERT_TRUE(ParseFioHistLog(text, "fio_clat_hist.1.log", out).ok());
  ASSERT_EQ(out.size(), 3u);
  EXPECT_EQ(out[0].end_unix_ms, 1000);
  EXPECT_EQ(out[0].latency.count(), 100u);
  EXPECT_EQ(out[0].latency.Percentile(50), 100);
  EXPECT_NEAR(static_cast<double>(out[0].latency.Percentile(99)), static_cast<double>(slow), slow * 0.01);
  EXPECT_EQ(out[1].latency.count(), 50u);
  EXPECT_EQ(out[2].latency.count(), 0u);

  const std::vector<std::pair<std::string, std::string>> bad = {
      {"1000, 0, 8192, 1, 2\n", "line 1: 5 fields, not 1859"},
      {HistLine(1, 0, {}) + "x, 0, 8192\n", "line 2: field 1 'x'"},
      {"1000, 0, 8192, -1\n", "field 4 '-1'"},
      {HistLine(1, 0, {}).substr(0, HistLine(1, 0, {}).size() - 1) + ", 7\n", "more than 1856 bins"},
  };
  for (const auto& [t, words] : bad) {
    std::vector<FioInterval> ignored;
    Status s = ParseFioHistLog(t, "h.log", ignored);
    ASSERT_TRUE(s.IsCorruption()) << words;
    EXPECT_NE(s.message().find("h.log line "), std::string::npos) << s.ToString();
    EXPECT_NE(s.message().find(words), std::string::npos) << s.ToString();
  }
}

// ---- The open-loop workload --------------------------------------------------

struct MemoryPool {
  std::unique_ptr<MemoryDevice> device;
  std::unique_ptr<Pool> pool;
  Volume* volume = nullptr;
  explicit MemoryPool(uint64_t data_bytes) {
    device = MemoryDevice::Create(256 * kMiB).value();
    pool = Pool::Create(*device, PoolOptions{}).value();
    EXPECT_TRUE(pool->CreateVolume("v", 64 * kMiB).ok());
    volume = pool->OpenVolume("v").value();
    std::vector<std::byte> data(data_bytes, std::byte{7});
    EXPECT_TRUE(volume->Write(0, data).ok());
  }
};

ForegroundOptions Reads(double iops, uint64_t seed) {
  ForegroundOptions o;
  o.iops = iops;
  o.read_pct = 50;
  o.block_bytes = 4096;
  o.span_bytes = 4 * kMiB;
  o.seed = seed;
  return o;
}

// Runs `seconds` of the workload; `stall` (when > 0) blocks the driving
// thread that long once, 0.3 s in (a stalled disk or server looks the same
// to the workload: its requests are not served).
OpenLoopWorkload* RunWorkload(MemoryPool& m, std::unique_ptr<OpenLoopWorkload>& w, double iops, double seconds,
                              int64_t stall_ns, uint64_t seed) {
  Clock& clock = SystemClock::Get();
  w = std::make_unique<OpenLoopWorkload>(*m.pool, *m.volume, Reads(iops, seed), clock);
  w->Start(clock.NowNs());
  w->StopAt(w->start_ns() + static_cast<int64_t>(seconds * 1e9));
  bool stalled = false;
  DriveOptions d;
  d.until_ns = w->start_ns() + static_cast<int64_t>(seconds * 1e9);
  d.tick = [&](int64_t now) {
    if (stall_ns > 0 && !stalled && now - w->start_ns() > 300'000'000) {
      stalled = true;
      std::this_thread::sleep_for(std::chrono::nanoseconds(stall_ns));
    }
    return true;
  };
  EXPECT_TRUE(DriveUntil(*m.pool, *w, clock, d).ok());
  DrainWorkload(*m.pool, *w, clock);
  return w.get();
}

TEST(OpenLoopWorkloadTest, AStallRaisesLatencyAndLosesNoSamples) {
  MemoryPool m(4 * kMiB);
  std::unique_ptr<OpenLoopWorkload> calm_holder, stalled_holder;
  OpenLoopWorkload& calm = *RunWorkload(m, calm_holder, 2000, 1.0, 0, 5);
  OpenLoopWorkload& stalled = *RunWorkload(m, stalled_holder, 2000, 1.0, 300'000'000, 5);
  for (OpenLoopWorkload* w : {&calm, &stalled}) {
    // Poisson: 2000 +- 5 sigma (sigma = sqrt(2000) = 45).
    EXPECT_GE(w->arrivals(), 1775u);
    EXPECT_LE(w->arrivals(), 2225u);
    EXPECT_EQ(w->completed(), w->arrivals());  // every arrival is a sample
    EXPECT_TRUE(w->first_error().ok());
  }
  // The same seed: the same schedule, stall or not.
  EXPECT_EQ(calm.arrivals(), stalled.arrivals());
  const LatencyHistogram c = calm.AllLatencies();
  const LatencyHistogram s = stalled.AllLatencies();
  EXPECT_EQ(c.count(), calm.arrivals());
  EXPECT_EQ(s.count(), stalled.arrivals());
  // Calm: a memory device answers in microseconds.
  EXPECT_LT(c.Percentile(99), 50'000'000) << c.Percentile(99);
  // Stalled: what was due in the 300 ms waited for it, counted from when it
  // was due (a closed loop would have issued ~nothing then, and seen 0).
  EXPECT_GE(s.max_ns(), 250'000'000);
  EXPECT_GE(s.Percentile(90), 50'000'000) << "the stall's ~600 requests are > 10% of the samples";
  uint64_t slow = 0;
  for (const SecondStats& sec : stalled.seconds()) {
    for (const auto& [bucket, n] : sec.latency.Compact()) {
      if (LatencyHistogram::Buckets::Lowest(bucket) >= 100'000'000) slow += n;
    }
  }
  EXPECT_GE(slow, 300u) << "requests that waited >= 100 ms";
}

TEST(OpenLoopWorkloadTest, PhasesSplitTheSamplesAndCountCompletions) {
  MemoryPool m(4 * kMiB);
  Clock& clock = SystemClock::Get();
  OpenLoopWorkload w(*m.pool, *m.volume, Reads(1000, 9), clock);
  w.Start(clock.NowNs());
  DriveOptions d;
  d.until_ns = w.start_ns() + 300'000'000;
  ASSERT_TRUE(DriveUntil(*m.pool, w, clock, d).ok());
  w.Issue(clock.NowNs());
  w.SetPhase(1);
  d.until_ns = w.start_ns() + 600'000'000;
  ASSERT_TRUE(DriveUntil(*m.pool, w, clock, d).ok());
  DrainWorkload(*m.pool, w, clock);
  const uint64_t p0 = w.PhaseLatency(0).count(), p1 = w.PhaseLatency(1).count();
  EXPECT_EQ(p0 + p1, w.arrivals());
  EXPECT_EQ(w.PhaseCompleted(0) + w.PhaseCompleted(1), w.completed());
  // ~300 each (Poisson, 5 sigma = 87).
  EXPECT_NEAR(static_cast<double>(p0), 300, 90);
  EXPECT_NEAR(static_cast<double>(p1), 300, 90);
}

TEST(OpenLoopWorkloadTest, BadOptionsAreRefusedByName) {
  ForegroundOptions o = Reads(100, 1);
  EXPECT_TRUE(ValidateForeground(o).ok());
  auto refused = [](ForegroundOptions o, const std::string& words) {
    const Status s = ValidateForeground(o);
    EXPECT_TRUE(s.IsInvalidArgument()) << words;
    EXPECT_NE(s.message().find(words), std::string::npos) << s.ToString();
  };
  o.iops = 0;
  refused(o, "iops");
  o = Reads(100, 1);
  o.read_pct = -1;
  refused(o, "read_pct");
  o = Reads(100, 1);
  o.block_bytes = 100;
  refused(o, "block_size");
  o = Reads(100, 1);
  o.span_bytes = 1024;
  refused(o, "span");
}

// ---- The adaptive controller -----------------------------------------------

// A disk whose foreground p99 is 200 us while a backup reads at up to `knee`
// MB/s, and grows steeply beyond (queueing behind the backup's reads).
double SimulatedP99(double rate, double knee) {
  return rate <= knee ? 200 : 200 * (1 + 4 * (rate - knee) / knee);
}

// A controller as the comparator makes one for that disk: the target 1.15x
// its 200 us baseline, the ceiling PL1's headroom beside 3000 x 8 KiB IOPS.
Result<AdaptiveRateController> DiskController() {
  AdaptiveRateOptions o;
  o.target_p99_us = 230;
  o.max_mb_per_s = 146;
  return AdaptiveRateController::Make(o);
}

// One control interval of `n` latencies: `late` of them at `late_us`, the
// rest at `us`.
LatencyHistogram Interval(double us, uint64_t n = 500, uint64_t late = 0, double late_us = 0) {
  LatencyHistogram h;
  h.RecordN(static_cast<int64_t>(us * 1e3), n - late);
  if (late > 0) h.RecordN(static_cast<int64_t>(late_us * 1e3), late);
  return h;
}

TEST(AdaptiveRateTest, SettlesBelowTheKneeAndUsesMostOfIt) {
  for (double knee : {20.0, 100.0, 140.0}) {
    auto c = DiskController();
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    double sum = 0;
    int over = 0;
    constexpr int kIntervals = 400;
    for (int i = 0; i < kIntervals; ++i) {
      const double rate = c->rate_mb_per_s();
      const double p99 = SimulatedP99(rate, knee);
      if (i >= kIntervals / 2) {
        sum += rate;
        over += p99 > 240 ? 1 : 0;  // beyond 1.2x the baseline
      }
      c->Update(Interval(p99));
    }
    const double mean = sum / (kIntervals / 2);
    EXPECT_GE(mean, 0.7 * std::min(knee, 146.0)) << "knee " << knee;
    EXPECT_LE(mean, knee * 1.05) << "knee " << knee;
    EXPECT_LE(over, kIntervals / 2 / 4) << "knee " << knee << ": too many intervals over 1.2x";
    EXPECT_GT(c->decreases(), 0u);
  }
}

// A backup lasts a few dozen intervals: the average over the whole of it,
// from the first interval, is what the comparator's bar measures.
TEST(AdaptiveRateTest, ABackupOfAFewSecondsAveragesMostOfTheKnee) {
  for (double knee : {60.0, 100.0, 130.0}) {
    auto c = DiskController();
    ASSERT_TRUE(c.ok()) << c.status().ToString();
    double sum = 0;
    constexpr int kIntervals = 12;  // 3 s of 250 ms intervals
    for (int i = 0; i < kIntervals; ++i) {
      sum += c->rate_mb_per_s();
      c->Update(Interval(SimulatedP99(c->rate_mb_per_s(), knee)));
    }
    EXPECT_GE(sum / kIntervals, 0.7 * knee) << "knee " << knee;
  }
}

// A noisy machine: one interval in five has a stall in it whatever the rate
// (8 of its 500 requests 1 ms late: its own p99 is 5x the baseline). Those
// single intervals must not hold the rate far below the knee.
TEST(AdaptiveRateTest, SingleNoisyIntervalsDoNotHoldTheRateDown) {
  const double knee = 100;
  auto c = DiskController();
  ASSERT_TRUE(c.ok()) << c.status().ToString();
  double sum = 0;
  constexpr int kIntervals = 40;
  for (int i = 0; i < kIntervals; ++i) {
    sum += c->rate_mb_per_s();
    const double us = SimulatedP99(c->rate_mb_per_s(), knee);
    c->Update(i % 5 == 2 ? Interval(us, 500, 8, 1000) : Interval(us));
  }
  EXPECT_GE(sum / kIntervals, 0.7 * knee);
}

TEST(AdaptiveRateTest, FewSamplesChangeNothingAndBadOptionsAreRefused) {
  AdaptiveRateOptions o;
  o.target_p99_us = 100;
  o.max_mb_per_s = 100;
  auto c = AdaptiveRateController::Make(o);
  ASSERT_TRUE(c.ok());
  const double r = c->rate_mb_per_s();
  EXPECT_EQ(r, 25);  // max / 4
  EXPECT_EQ(c->Update(Interval(50, 10)), 25);  // too few samples: changes nothing
  EXPECT_EQ(c->Update(Interval(50, 100)), 50);  // slow start: doubles until the first decrease
  // A few late requests in one interval: over the 1% there, not in the window.
  EXPECT_EQ(c->Update(Interval(50, 100, 2, 1000)), 100);
  EXPECT_NEAR(c->window_p99_us(), 50, 1);
  EXPECT_EQ(c->Update(Interval(50, 100, 10, 1000)), 80);  // over the target in the window: decreases
  EXPECT_EQ(c->decreases(), 1u);
  EXPECT_EQ(c->Update(Interval(50, 100)), 90);  // then half the way back to 100
  EXPECT_EQ(c->Update(Interval(50, 100)), 95);
  EXPECT_EQ(c->Update(Interval(50, 100)), 97.5);
  int more = 0;  // steps of at least max / 200 reach it
  while (c->rate_mb_per_s() < 100 && more < 10) c->Update(Interval(50, 100)), ++more;
  EXPECT_LE(more, 4);
  EXPECT_EQ(c->rate_mb_per_s(), 100);  // at most max_mb_per_s
  // Beyond the rate of the last decrease: 5% a time.
  AdaptiveRateOptions roomy = o;
  roomy.max_mb_per_s = 1000;
  roomy.start_mb_per_s = 100;
  auto probing = AdaptiveRateController::Make(roomy);
  ASSERT_TRUE(probing.ok());
  EXPECT_EQ(probing->Update(Interval(1000, 100)), 80);
  while (probing->rate_mb_per_s() < 100) probing->Update(Interval(50, 100));
  const double at = probing->rate_mb_per_s();
  EXPECT_DOUBLE_EQ(probing->Update(Interval(50, 100)), at * 1.05);
  o.target_p99_us = 0;
  EXPECT_NE(AdaptiveRateController::Make(o).status().message().find("target_p99_us"), std::string::npos);
  o.target_p99_us = 100;
  o.decrease_factor = 1;
  EXPECT_NE(AdaptiveRateController::Make(o).status().message().find("decrease_factor"), std::string::npos);
  o.decrease_factor = 0.7;
  o.slow_start_factor = 0.5;
  EXPECT_NE(AdaptiveRateController::Make(o).status().message().find("slow_start_factor"), std::string::npos);
  o.slow_start_factor = 2;
  o.window_intervals = 0;
  EXPECT_NE(AdaptiveRateController::Make(o).status().message().find("window_intervals"), std::string::npos);
  o.window_intervals = 2;
  o.min_mb_per_s = 200;
  EXPECT_NE(AdaptiveRateController::Make(o).status().message().find("min_mb_per_s"), std::string::npos);
}

// ---- End to end ----------------------------------------------------------------

TEST(CompareCliTest, BadScenarioIsExit2AndWritesNoReport) {
  testing::ScratchDir dir;
  {
    std::ofstream f(dir.File("s.json"));
    f << R"({"foreground": {"iops": 100, "burst": 3}})";
  }
  auto r = cli::testing::RunCli({"compare", "--scenario", dir.File("s.json"), "--out", dir.File("out")});
  EXPECT_EQ(r.exit_code, 2) << r.err;
  EXPECT_NE(r.err.find("foreground.burst"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(dir.File("out")));
  auto missing = cli::testing::RunCli({"compare", "--scenario", dir.File("nope.json")});
  EXPECT_EQ(missing.exit_code, 3) << missing.err;  // not found
}

TEST(CompareCliTest, AReadOnlyWorkloadGivesALogBackupNothingToShip) {
  testing::ScratchDir dir;
  {
    std::ofstream f(dir.File("s.json"));
    f << R"({"written": ["4M"], "methods": ["log"], "log_frequencies": ["data", "5m"], "rpo_hours": 1,
             "rpo_failures": 1, "foreground": {"iops": 50, "read_pct": 100, "seconds_before": 1,
             "seconds_after": 1}})";
  }
  cli::testing::CliOptions slow;
  slow.timeout_s = 600;
  auto r = cli::testing::RunCli({"compare", "--scenario", dir.File("s.json"), "--out", dir.File("out"), "--json"},
                                slow);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto doc = nlohmann::json::parse(r.out);
  ASSERT_EQ(doc["backups"].size(), 1u);
  EXPECT_TRUE(doc["backups"][0]["nothing_to_ship"].get<bool>());
  EXPECT_EQ(doc["backups"][0]["bytes_read"], 0);
  // One simulated hour reaches no data backup, so no failure: the RPO claim
  // has no evidence and is not made (it once said "holds" over 0 failures).
  ASSERT_EQ(doc["rpo"].size(), 2u);
  EXPECT_EQ(doc["rpo"][1]["failures"], 0);
  for (const auto& c : doc["claims"]) {
    EXPECT_EQ(c["claim"].get<std::string>().find("Log backup every"), std::string::npos) << c["claim"];
  }
  EXPECT_EQ(doc["backups"][0]["p99_impact_pct"], 0);  // no request was due during it
}

TEST(CompareCliTest, ASecondRunIntoTheSameDirectoryIsRefused) {
  testing::ScratchDir dir;
  const std::string out = dir.File("busy");
  std::filesystem::create_directories(out);
  // What a first run holds while it runs.
  const int fd = ::open((out + "/.compare.lock").c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  ASSERT_GE(fd, 0);
  ASSERT_EQ(::flock(fd, LOCK_EX | LOCK_NB), 0);
  auto r = cli::testing::RunCli({"compare", "--quick", "--out", out});
  EXPECT_EQ(r.exit_code, 4) << r.err;  // busy
  EXPECT_NE(r.err.find("another snapdisk compare is writing to"), std::string::npos) << r.err;
  EXPECT_FALSE(std::filesystem::exists(out + "/scratch"));
  ::close(fd);
}

// A user's fio job as the foreground, over NBD through a `snapdisk serve`
// child: the backups' phases carry fio's latencies and the physics holds; a
// job that points elsewhere, or that fio itself refuses, writes no report.
TEST(CompareCliTest, AFioJobOverNbdIsTheForeground) {
  testing::ScratchDir dir;
  {
    std::ofstream f(dir.File("db.fio"));
    f << "; 8K random I/O at 800 IOPS\n[db]\nrw=randrw\nbs=8k\niodepth=2\nrate_iops=400,400\n";
  }
  {
    std::ofstream f(dir.File("s.json"));
    f << R"({"written": ["128M"], "methods": ["snapshot", "full", "log"], "log_frequencies": [],
             "workload": {"fio": "db.fio"}, "foreground": {"seconds_before": 1.5, "seconds_after": 1}})";
  }
  cli::testing::CliOptions slow;
  slow.timeout_s = 600;
  const std::string out = dir.File("report");
  auto r = cli::testing::RunCli({"compare", "--scenario", dir.File("s.json"), "--out", out, "--json"}, slow);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto doc = nlohmann::json::parse(r.out);
  EXPECT_EQ(doc["scenario"]["workload"]["fio"], dir.File("db.fio"));
  EXPECT_FALSE(std::filesystem::exists(out + "/scratch"));
  ASSERT_EQ(doc["backups"].size(), 3u);
  for (const auto& b : doc["backups"]) {
    for (const char* phase : {"baseline", "during", "after"}) {
      // fio runs all along: every phase, even a short backup's, has its intervals.
      EXPECT_GT(b[phase]["requests"].get<uint64_t>(), 0u) << b["method"] << " " << phase;
      EXPECT_GT(b[phase]["p99_us"].get<double>(), 0) << b["method"] << " " << phase;
    }
    EXPECT_FALSE(b["set_id"].get<std::string>().empty()) << b["method"];
    EXPECT_GT(b["seconds"].get<double>(), 0) << b["method"];
    EXPECT_GT(b["bytes_read"].get<uint64_t>(), 0u) << b["method"];
    EXPECT_GT(b["baseline"]["iops"].get<double>(), 400) << b["method"];  // fio's 800, give or take
  }
  EXPECT_EQ(doc["backups"][0]["bytes_read"], 128 * kMiB);  // the snapshot backup copies the data
  EXPECT_FALSE(doc["backups"][0]["through_qos"].get<bool>());
  EXPECT_TRUE(doc["backups"][1]["through_qos"].get<bool>());
  if (!testing::BuiltWithSanitizers()) {
    // The full reads through the QoS budget fio's requests need. fio, closed
    // loop, waits for its requests before it sends more: it shows that as
    // latency and as fewer IOPS (from 800 to 390-450 while the server's
    // thread read the full's data; 607 against the snapshot's 790 once its
    // workers read it, the QoS grants taken on that thread; ~140 in builds
    // whose backups committed at their start).
    EXPECT_LT(doc["backups"][1]["during"]["iops"].get<double>(),
              0.9 * doc["backups"][0]["during"]["iops"].get<double>());
    EXPECT_GT(doc["backups"][1]["during"]["p99_us"].get<double>(),
              2 * doc["backups"][0]["during"]["p99_us"].get<double>());
  }
  std::ifstream timeline(out + "/timeline.csv");
  std::string csv((std::istreambuf_iterator<char>(timeline)), std::istreambuf_iterator<char>());
  EXPECT_NE(csv.find("snapshot,0,before,"), std::string::npos) << csv;
  EXPECT_NE(csv.find(",during,"), std::string::npos) << csv;
  // fio's own report of each experiment is kept beside ours.
  std::ifstream fio_report(out + "/fio-full.txt");
  std::string fio_text((std::istreambuf_iterator<char>(fio_report)), std::istreambuf_iterator<char>());
  EXPECT_NE(fio_text.find("db: (groupid=0"), std::string::npos) << fio_text;

  // A job aimed elsewhere is refused before anything runs.
  {
    std::ofstream f(dir.File("db.fio"));
    f << "[db]\nrw=randread\nfilename=/dev/sda\n";
  }
  auto aimed = cli::testing::RunCli({"compare", "--scenario", dir.File("s.json"), "--out", dir.File("o2")});
  EXPECT_EQ(aimed.exit_code, 2) << aimed.err;
  EXPECT_NE(aimed.err.find("sets 'filename'"), std::string::npos) << aimed.err;
  EXPECT_FALSE(std::filesystem::exists(dir.File("o2")));
  // One fio refuses stops the run with fio's words.
  {
    std::ofstream f(dir.File("db.fio"));
    f << "[db]\nrw=sideways\n";
  }
  auto refused = cli::testing::RunCli({"compare", "--scenario", dir.File("s.json"), "--out", dir.File("o3")}, slow);
  EXPECT_NE(refused.exit_code, 0);
  EXPECT_NE(refused.err.find("fio stopped on its own"), std::string::npos) << refused.err;
  EXPECT_NE(refused.err.find("sideways"), std::string::npos) << refused.err;
  EXPECT_FALSE(std::filesystem::exists(dir.File("o3/report.json")));
}

TEST(CompareCliTest, QuickRunKeepsTheContractAndThePhysics) {
  testing::ScratchDir dir;
  cli::testing::CliOptions slow;
  slow.timeout_s = 900;
  const std::string out = dir.File("report");
  std::vector<std::string> args = {"compare", "--quick", "--out", out, "--json"};
  // Under sanitizers the engine runs several times slower: the same run on a
  // quarter of the data with 1 s phases keeps CI short; every check but the
  // timing ones is made all the same.
  uint64_t smaller = 64 * kMiB;
  if (testing::BuiltWithSanitizers()) {
    smaller = 16 * kMiB;
    std::ofstream f(dir.File("smaller.json"));
    f << R"({"written": ["16M", "64M"], "foreground": {"seconds_before": 1, "seconds_after": 1}})";
    args.insert(args.end(), {"--scenario", dir.File("smaller.json")});
  }
  auto r = cli::testing::RunCli(args, slow);
  ASSERT_EQ(r.exit_code, 0) << r.err;
  const auto doc = nlohmann::json::parse(r.out);
  // What --json printed is report.json.
  std::ifstream f(out + "/report.json");
  ASSERT_TRUE(f.good());
  EXPECT_EQ(nlohmann::json::parse(f), doc);
  EXPECT_FALSE(std::filesystem::exists(out + "/scratch"));

  // The contract.
  ASSERT_EQ(doc["backups"].size(), 8u);
  for (const auto& b : doc["backups"]) {
    for (const char* k : {"method", "seconds", "bytes_read", "bytes_stored", "p99_impact_pct", "iops_impact_pct"}) {
      EXPECT_TRUE(b.contains(k)) << k;
    }
    for (const char* phase : {"baseline", "during", "after"}) {
      for (const char* k : {"iops", "p50_us", "p99_us", "p999_us"}) EXPECT_TRUE(b[phase].contains(k)) << phase << k;
      EXPECT_GT(b[phase]["requests"].get<uint64_t>(), 0u) << b["method"] << " " << phase;
      EXPECT_GT(b[phase]["p99_us"].get<double>(), 0) << b["method"] << " " << phase;
    }
    EXPECT_GT(b["seconds"].get<double>(), 0);
    EXPECT_EQ(b["foreground_errors"], 0);
  }
  ASSERT_EQ(doc["restores"].size(), 4u * 2);  // 4 kinds x 2 sizes
  for (const auto& x : doc["restores"]) {
    for (const char* k : {"method", "target", "written_bytes", "usable_seconds", "complete_seconds",
                          "hydrating_read_p99_us"}) {
      EXPECT_TRUE(x.contains(k)) << k;
    }
    EXPECT_GT(x["complete_seconds"].get<double>(), 0);
    EXPECT_LE(x["usable_seconds"].get<double>(), x["complete_seconds"].get<double>() + 1e-9);
  }
  ASSERT_EQ(doc["rpo"].size(), 3u);
  for (const auto& x : doc["rpo"]) {
    for (const char* k : {"log_frequency", "failures", "max_loss_seconds", "mean_loss_seconds", "max_loss_bytes"}) {
      EXPECT_TRUE(x.contains(k)) << k;
    }
    EXPECT_EQ(x["failures"], 3);
  }
  ASSERT_FALSE(doc["claims"].empty());
  for (const auto& c : doc["claims"]) {
    EXPECT_TRUE(c["claim"].is_string());
    EXPECT_TRUE(c["holds"].is_boolean());
    EXPECT_FALSE(c["evidence"].get<std::string>().empty());
  }

  // The physics.
  auto backup = [&](const std::string& m) {
    for (const auto& b : doc["backups"]) {
      if (b["method"] == m) return b;
    }
    ADD_FAILURE() << "no " << m;
    return nlohmann::json();
  };
  // A full reads through the volume's QoS: the workload queues behind it. A
  // snapshot backup's copy does not. (Both p99s also hold the stall of the
  // commit of the backup's last step: see the report's assumptions.)
  // Latency physics needs an optimized build: under ASan the pool's thread
  // itself is the bottleneck (a snapshot backup's p50 reached 30 ms there).
  const bool timed = !testing::BuiltWithSanitizers();
  if (!timed) std::printf("[ note ] sanitized build: latency and RTO timing checks not made\n");
  // The queueing needs the full at full speed. Its workers run at the lowest
  // CPU priority (as in every comparator backup) and only a read they have a
  // buffer for takes QoS tokens: on a machine busy with other tests they
  // crawl, and so does the full (seen: p50 202 us during it, its reads too
  // slow to queue anything).
  const double full_share =
      backup("full")["read_mb_per_s"].get<double>() / backup("full")["headroom_mb_per_s"].get<double>();
  if (timed && full_share < 0.8) {
    std::printf("[ note ] the full read at %.2fx the headroom (other load): queueing check not made\n",
                full_share);
  }
  if (timed && full_share >= 0.8) {
    EXPECT_LT(2 * backup("snapshot")["during"]["p50_us"].get<double>(),
              backup("full")["during"]["p50_us"].get<double>());
  }
  EXPECT_FALSE(backup("snapshot")["through_qos"].get<bool>());
  EXPECT_TRUE(backup("full")["through_qos"].get<bool>());
  // A following snapshot backup and an incr copy the changes, not the disk.
  EXPECT_LT(backup("snapshot-next")["bytes_read"].get<uint64_t>(), backup("snapshot")["bytes_read"].get<uint64_t>());
  EXPECT_LT(backup("incr")["bytes_read"].get<uint64_t>(), backup("diff")["bytes_read"].get<uint64_t>());
  // The throttled full kept to its cap.
  EXPECT_LE(backup("full-throttled")["read_mb_per_s"].get<double>(), 40 * 1.15);
  // Instant restore: usable in about the same time whatever the size;
  // physical: the larger copy takes longer.
  double usable[2] = {0, 0}, copy[2] = {0, 0};
  for (const auto& x : doc["restores"]) {
    const int i = x["written_bytes"].get<uint64_t>() == smaller ? 0 : 1;
    if (x["method"] == "snapshot" && x["target"] == "new") usable[i] = x["usable_seconds"].get<double>();
    if (x["method"] == "physical" && x["target"] == "new") copy[i] = x["complete_seconds"].get<double>();
  }
  if (timed) {
    EXPECT_LE(usable[1], std::max(1.5 * usable[0], usable[0] + 0.05)) << usable[0] << " " << usable[1];
  }
  EXPECT_GT(copy[1], copy[0]);
  // RPO: every loss within its interval; 5 minutes loses less than 30.
  double max5 = 0, max30 = 0;
  for (const auto& x : doc["rpo"]) {
    if (x["log_frequency"] == "data") continue;
    EXPECT_LE(x["max_loss_seconds"].get<double>(), x["interval_seconds"].get<double>());
    (x["log_frequency"] == "5m" ? max5 : max30) = x["max_loss_seconds"].get<double>();
  }
  EXPECT_LT(max5, max30);

  // The other files.
  std::ifstream csv(out + "/timeline.csv");
  std::string header;
  std::getline(csv, header);
  EXPECT_EQ(header, "method,second,phase,iops,p50_us,p99_us,p999_us");
  std::ifstream html(out + "/report.html");
  std::stringstream page;
  page << html.rdbuf();
  EXPECT_NE(page.str().find("<svg"), std::string::npos);
  std::string text = page.str();
  for (size_t at; (at = text.find("http://www.w3.org/2000/svg")) != std::string::npos;) text.erase(at, 26);
  EXPECT_EQ(text.find("http"), std::string::npos) << "no network references";
}

}  // namespace
}  // namespace snapdisk
