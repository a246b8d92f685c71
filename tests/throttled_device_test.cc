#include "disk/throttled_device.h"

#include <gtest/gtest.h>

#include <deque>
#include <memory>
#include <vector>

#include "disk/memory_device.h"
#include "support/test_env.h"

namespace snapdisk {
namespace {

using testing::PatternBytes;

constexpr uint64_t kGiB = kBytesPerGiB;
constexpr uint64_t kMiB = uint64_t{1} << 20;
constexpr int64_t kUs = 1'000;
constexpr int64_t kMs = 1'000'000;
constexpr int64_t kSecond = 1'000'000'000;

std::unique_ptr<MemoryDevice> NewMemory(uint64_t size = 64 * kMiB, uint32_t queue_depth = 256) {
  auto dev = MemoryDevice::Create(size, 4096, queue_depth);
  EXPECT_TRUE(dev.ok()) << dev.status().ToString();
  return std::move(dev).value();
}

EssdProfile Essd(EssdLevel level, uint64_t gib) {
  auto p = EssdProfile::For(level, gib * kGiB);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return p.ok() ? p.value() : EssdProfile{};
}

EssdProfile Custom(uint64_t iops, uint64_t bytes_per_s, int64_t latency_ns) {
  EssdProfile p;
  p.iops_max = iops;
  p.throughput_bytes_per_s = bytes_per_s;
  p.write_latency_ns = latency_ns;
  p.read_latency_ns = latency_ns;
  return p;
}

// A device whose requests take `latency_ns` of `clock` time and whose Poll
// blocks by sleeping on the clock; optionally fails Submit or completes every
// request with an error. Holds no data.
class SlowDevice final : public BlockDevice {
 public:
  SlowDevice(Clock& clock, int64_t latency_ns, uint32_t queue_depth = 64)
      : clock_(clock), latency_ns_(latency_ns), queue_depth_(queue_depth) {}
  uint64_t size_bytes() const override { return 64 * kMiB; }
  uint32_t sector_size_bytes() const override { return 4096; }
  uint32_t queue_depth() const override { return queue_depth_; }
  uint32_t in_flight() const override { return static_cast<uint32_t>(pending_.size()); }
  std::string name() const override { return "slow device"; }
  Status Submit(IoRequest& request) override {
    SNAPDISK_RETURN_IF_ERROR(ValidateRequest(request));
    if (!submit_error_.ok()) return submit_error_;
    if (pending_.size() >= queue_depth_) return Status::Busy("slow device: full");
    pending_.push_back({&request, clock_.NowNs() + latency_ns_});
    return Status::OK();
  }
  uint32_t Poll(uint32_t min_completions) override {
    const uint32_t target = std::min<uint32_t>(min_completions, in_flight());
    uint32_t ran = 0;
    for (;;) {
      while (!pending_.empty() && pending_.front().due_ns <= clock_.NowNs()) {
        IoRequest* r = pending_.front().request;
        pending_.pop_front();
        stats_.Record(r->op, r->length_bytes, latency_ns_, completion_status_.ok());
        r->on_complete(*r, completion_status_);
        ++ran;
      }
      if (ran >= target) return ran;
      clock_.SleepUntilNs(pending_.front().due_ns);
    }
  }
  IoStats& stats() override { return stats_; }

  Status submit_error_;
  Status completion_status_;

 private:
  struct Pending {
    IoRequest* request;
    int64_t due_ns;
  };
  Clock& clock_;
  const int64_t latency_ns_;
  const uint32_t queue_depth_;
  std::deque<Pending> pending_;
  IoStats stats_;
};

TEST(ThrottledDeviceTest, DataPassesThroughIntact) {
  ManualClock clock;
  auto memory = NewMemory();
  ThrottledDevice dev(*memory, Essd(EssdLevel::kPL1, 100), clock);
  EXPECT_EQ(dev.size_bytes(), memory->size_bytes());
  EXPECT_EQ(dev.sector_size_bytes(), 4096u);
  EXPECT_EQ(dev.queue_depth(), memory->queue_depth());

  auto a = PatternBytes(1, 64 * 1024);
  auto b = PatternBytes(2, 4096);
  ASSERT_TRUE(dev.Write(0, a).ok());
  ASSERT_TRUE(dev.Write(60 * kMiB, b).ok());
  ASSERT_TRUE(dev.Flush().ok());
  std::vector<std::byte> back(a.size());
  ASSERT_TRUE(dev.Read(0, back).ok());
  EXPECT_EQ(back, a);
  // The inner device really holds the data.
  std::vector<std::byte> direct(b.size());
  ASSERT_TRUE(memory->Read(60 * kMiB, direct).ok());
  EXPECT_EQ(direct, b);
  ASSERT_TRUE(dev.Discard(0, 8192).ok());
  ASSERT_TRUE(dev.Read(0, back).ok());
  for (size_t i = 0; i < 8192; ++i) ASSERT_EQ(back[i], std::byte{0});
  EXPECT_TRUE(std::equal(back.begin() + 8192, back.end(), a.begin() + 8192));
  // Bad requests are rejected like the inner device would, with no callback.
  EXPECT_TRUE(dev.Read(1, back).IsInvalidArgument());
  EXPECT_TRUE(dev.Read(64 * kMiB, back).IsInvalidArgument());
  EXPECT_EQ(dev.in_flight(), 0u);

  auto snap = dev.stats().Snapshot();
  EXPECT_EQ(snap.of(IoOp::kWrite).ops, 2u);
  EXPECT_EQ(snap.of(IoOp::kWrite).bytes, a.size() + b.size());
  EXPECT_EQ(snap.of(IoOp::kRead).ops, 2u);
  EXPECT_EQ(snap.of(IoOp::kFlush).ops, 1u);
  EXPECT_EQ(snap.of(IoOp::kDiscard).ops, 1u);
  EXPECT_NE(dev.name().find("ESSD PL1, 100 GiB"), std::string::npos) << dev.name();
  EXPECT_NE(dev.name().find("memory device"), std::string::npos) << dev.name();
}

TEST(ThrottledDeviceTest, CallbackNotBeforeLatency) {
  ManualClock clock(1'000'000);
  auto memory = NewMemory();
  ThrottledDevice dev(*memory, Essd(EssdLevel::kPL1, 100), clock);
  auto data = PatternBytes(3, 4096);
  int64_t completed_at = -1;
  IoRequest r{.op = IoOp::kWrite, .offset_bytes = 0, .length_bytes = 4096, .data = data.data()};
  r.on_complete = [&](IoRequest&, const Status& s) {
    EXPECT_TRUE(s.ok());
    completed_at = clock.NowNs();
  };
  ASSERT_TRUE(dev.Submit(r).ok());
  EXPECT_EQ(dev.in_flight(), 1u);
  EXPECT_EQ(dev.Poll(0), 0u);
  clock.AdvanceNs(200 * kUs - 1);
  EXPECT_EQ(dev.Poll(0), 0u);
  EXPECT_EQ(completed_at, -1);
  clock.AdvanceNs(1);
  EXPECT_EQ(dev.Poll(0), 1u);
  EXPECT_EQ(completed_at, 1'000'000 + 200 * kUs);
  EXPECT_EQ(dev.in_flight(), 0u);
  EXPECT_EQ(dev.stats().Snapshot().of(IoOp::kWrite).latency_us_max, 200.0);

  // Poll(1) sleeps on the clock to exactly the completion time.
  ASSERT_TRUE(dev.Submit(r).ok());
  const int64_t submitted_at = clock.NowNs();
  EXPECT_EQ(dev.Poll(1), 1u);
  EXPECT_EQ(completed_at, submitted_at + 200 * kUs);
  EXPECT_EQ(clock.NowNs(), submitted_at + 200 * kUs);
}

TEST(ThrottledDeviceTest, ThrottledRequestsReachInnerOnlyWhenAdmitted) {
  // 1000 IOPS, no burst, 0.1 ms latency: request k may start at k ms.
  ManualClock clock;
  auto memory = NewMemory();
  QosLimiter limiter(Custom(1000, 0, 100 * kUs), /*burst_ns=*/0);
  ThrottledDevice dev(*memory, limiter, clock);
  constexpr int kRequests = 20;
  std::vector<std::vector<std::byte>> data;
  std::vector<IoRequest> reqs(kRequests);
  std::vector<int64_t> done_at(kRequests, -1);
  for (int k = 0; k < kRequests; ++k) {
    data.push_back(PatternBytes(100 + k, 4096));
    reqs[k] = IoRequest{.op = IoOp::kWrite,
                        .offset_bytes = uint64_t(k) * 4096,
                        .length_bytes = 4096,
                        .data = data[k].data()};
    reqs[k].on_complete = [&, k](IoRequest&, const Status& s) {
      EXPECT_TRUE(s.ok());
      done_at[k] = clock.NowNs();
    };
    ASSERT_TRUE(dev.Submit(reqs[k]).ok());
  }
  // Only the first went to the inner device; the others wait for tokens.
  std::vector<std::byte> back(4096);
  ASSERT_TRUE(memory->Read(0, back).ok());
  EXPECT_EQ(back, data[0]);
  ASSERT_TRUE(memory->Read(4096, back).ok());
  EXPECT_EQ(back, std::vector<std::byte>(4096));

  EXPECT_EQ(dev.Poll(5), 5u);
  EXPECT_EQ(clock.NowNs(), 4 * kMs + 100 * kUs);
  // Request 5 was issued at 5 ms, not before.
  ASSERT_TRUE(memory->Read(5 * 4096, back).ok());
  EXPECT_EQ(back, std::vector<std::byte>(4096));
  uint32_t ran = 5;
  while (dev.in_flight() > 0) ran += dev.Poll(1);
  EXPECT_EQ(ran, uint32_t{kRequests});
  for (int k = 0; k < kRequests; ++k) {
    EXPECT_EQ(done_at[k], k * kMs + 100 * kUs) << k;
    ASSERT_TRUE(memory->Read(uint64_t(k) * 4096, back).ok());
    EXPECT_EQ(back, data[k]) << k;
  }
  EXPECT_EQ(limiter.counters().throttled_requests, uint64_t{kRequests - 1});
}

TEST(ThrottledDeviceTest, PollZeroNeverBlocks) {
  ManualClock clock;
  auto memory = NewMemory();
  QosLimiter limiter(Custom(10, 0, 400 * kUs), 0);  // 100 ms apart
  ThrottledDevice dev(*memory, limiter, clock);
  std::vector<std::byte> buf(4096);
  std::vector<IoRequest> reqs(4);
  int done = 0;
  for (auto& r : reqs) {
    r = IoRequest{.op = IoOp::kRead, .offset_bytes = 0, .length_bytes = 4096, .data = buf.data()};
    r.on_complete = [&](IoRequest&, const Status&) { ++done; };
    ASSERT_TRUE(dev.Submit(r).ok());
  }
  for (int i = 0; i < 100; ++i) EXPECT_EQ(dev.Poll(0), 0u);
  EXPECT_EQ(clock.NowNs(), 0);  // a blocking Poll would have slept (advanced) the clock
  EXPECT_EQ(done, 0);
  clock.AdvanceNs(100 * kMs + 400 * kUs);
  EXPECT_EQ(dev.Poll(0), 2u);  // requests 0 (done at 0.4 ms) and 1 (100.4 ms)
  EXPECT_EQ(clock.NowNs(), 100 * kMs + 400 * kUs);
  EXPECT_EQ(dev.Poll(100), 2u);  // at most in_flight() are waited for
  EXPECT_EQ(done, 4);
  EXPECT_EQ(dev.Poll(1), 0u);  // nothing in flight: returns at once
}

TEST(ThrottledDeviceTest, BusyWhenFull) {
  ManualClock clock;
  auto memory = NewMemory(64 * kMiB, /*queue_depth=*/32);
  ThrottledDevice dev(*memory, Essd(EssdLevel::kPL0, 40), clock);
  ASSERT_EQ(dev.queue_depth(), 32u);
  std::vector<std::byte> buf(4096);
  std::vector<IoRequest> reqs(33);
  int done = 0;
  for (int i = 0; i < 33; ++i) {
    reqs[i] = IoRequest{.op = IoOp::kRead,
                        .offset_bytes = uint64_t(i) * 4096,
                        .length_bytes = 4096,
                        .data = buf.data()};
    reqs[i].on_complete = [&](IoRequest&, const Status&) { ++done; };
  }
  for (int i = 0; i < 32; ++i) ASSERT_TRUE(dev.Submit(reqs[i]).ok()) << i;
  EXPECT_EQ(dev.in_flight(), 32u);
  Status busy = dev.Submit(reqs[32]);
  EXPECT_TRUE(busy.IsBusy()) << busy.ToString();
  EXPECT_NE(busy.message().find("queue full"), std::string::npos);
  EXPECT_EQ(dev.Poll(32), 32u);
  EXPECT_EQ(done, 32);
  // The rejected request never got a callback; now there is room for it.
  ASSERT_TRUE(dev.Submit(reqs[32]).ok());
  EXPECT_EQ(dev.Poll(1), 1u);
  EXPECT_EQ(done, 33);
}

TEST(ThrottledDeviceTest, UnlimitedAddsNothing) {
  ManualClock clock(5 * kSecond);
  auto memory = NewMemory();
  ThrottledDevice dev(*memory, EssdProfile::Unlimited(), clock);
  auto data = PatternBytes(4, 256 * 1024);
  std::vector<IoRequest> reqs(200);
  int done = 0;
  for (int i = 0; i < 200; ++i) {
    reqs[i] = IoRequest{.op = IoOp::kWrite,
                        .offset_bytes = uint64_t(i) * 256 * 1024,
                        .length_bytes = data.size(),
                        .data = data.data()};
    reqs[i].on_complete = [&](IoRequest&, const Status& s) { done += s.ok(); };
    ASSERT_TRUE(dev.Submit(reqs[i]).ok());
  }
  EXPECT_EQ(dev.Poll(0), 200u);  // all complete at once, no time passes
  EXPECT_EQ(done, 200);
  EXPECT_EQ(clock.NowNs(), 5 * kSecond);
  OpStats w = dev.stats().Snapshot().of(IoOp::kWrite);
  EXPECT_EQ(w.ops, 200u);
  EXPECT_EQ(w.latency_us_max, 0.0);
  EXPECT_EQ(dev.limiter().counters().throttled_requests, 0u);
}

TEST(ThrottledDeviceTest, CallbackMayResubmit) {
  ManualClock clock;
  auto memory = NewMemory();
  ThrottledDevice dev(*memory, Essd(EssdLevel::kPL1, 1000), clock);  // 50000 IOPS
  std::vector<std::byte> buf(4096);
  IoRequest r{.op = IoOp::kRead, .offset_bytes = 0, .length_bytes = 4096, .data = buf.data()};
  int remaining = 1000;
  r.on_complete = [&](IoRequest& self, const Status& s) {
    ASSERT_TRUE(s.ok());
    if (--remaining > 0) {
      ASSERT_TRUE(dev.Submit(self).ok());
    }
  };
  ASSERT_TRUE(dev.Submit(r).ok());
  while (dev.in_flight() > 0) dev.Poll(1);
  EXPECT_EQ(remaining, 0);
  // QD1: latency-bound at one request per 0.2 ms.
  EXPECT_EQ(clock.NowNs(), 1000 * 200 * kUs);
}

TEST(ThrottledDeviceTest, SlowInnerDeviceAddsToLatency) {
  // The inner device takes 1 ms; the profile says 0.2 ms: callbacks come at
  // 1 ms, and Poll waits for the inner device (blocking in its Poll).
  ManualClock clock;
  SlowDevice slow(clock, 1 * kMs);
  ThrottledDevice dev(slow, Essd(EssdLevel::kPL1, 100), clock);
  IoRequest r{.op = IoOp::kFlush};
  int64_t done_at = -1;
  r.on_complete = [&](IoRequest&, const Status& s) {
    EXPECT_TRUE(s.ok());
    done_at = clock.NowNs();
  };
  ASSERT_TRUE(dev.Submit(r).ok());
  EXPECT_EQ(dev.Poll(0), 0u);
  EXPECT_EQ(dev.Poll(1), 1u);
  EXPECT_EQ(done_at, 1 * kMs);

  // Inner faster than the profile: the profile's 0.4 ms wins. A is done in
  // the inner device and due at +400 us while B is still in the inner device
  // (done there at +380 us): Poll polls the inner device in short sleeps and
  // still delivers A exactly on time.
  SlowDevice fast(clock, 30 * kUs);
  ThrottledDevice dev2(fast, Essd(EssdLevel::kPL0, 40), clock);
  IoRequest a{.op = IoOp::kFlush}, b{.op = IoOp::kFlush};
  int64_t a_at = -1, b_at = -1;
  a.on_complete = [&](IoRequest&, const Status&) { a_at = clock.NowNs(); };
  b.on_complete = [&](IoRequest&, const Status&) { b_at = clock.NowNs(); };
  const int64_t t0 = clock.NowNs();
  ASSERT_TRUE(dev2.Submit(a).ok());
  clock.AdvanceNs(50 * kUs);
  EXPECT_EQ(dev2.Poll(0), 0u);  // A leaves the inner device
  clock.AdvanceNs(300 * kUs);
  ASSERT_TRUE(dev2.Submit(b).ok());  // at +350 us, in the inner device until +380 us
  EXPECT_EQ(dev2.Poll(1), 1u);
  EXPECT_EQ(a_at, t0 + 400 * kUs);
  EXPECT_EQ(b_at, -1);
  EXPECT_EQ(dev2.Poll(1), 1u);
  EXPECT_EQ(b_at, t0 + 750 * kUs);
}

TEST(ThrottledDeviceTest, InnerErrorsPassThrough) {
  ManualClock clock;
  SlowDevice slow(clock, 10 * kUs);
  ThrottledDevice dev(slow, Essd(EssdLevel::kPL1, 100), clock);
  // An error the inner device reports in its callback.
  slow.completion_status_ = Status::IOError("slow device: medium error");
  std::vector<std::byte> buf(4096);
  Status s = dev.Read(0, buf);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_EQ(s.message(), "slow device: medium error");
  EXPECT_EQ(dev.stats().Snapshot().of(IoOp::kRead).errors, 1u);
  // An error from the inner Submit: delivered through the callback, on time.
  slow.completion_status_ = Status::OK();
  slow.submit_error_ = Status::IOError("slow device: dead");
  const int64_t t0 = clock.NowNs();
  s = dev.Write(0, buf);
  EXPECT_TRUE(s.IsIOError()) << s.ToString();
  EXPECT_EQ(clock.NowNs(), t0 + 200 * kUs);
  EXPECT_EQ(dev.in_flight(), 0u);
}

TEST(ThrottledDeviceTest, InnerBusyIsRetried) {
  // An inner device with a smaller queue than ours (shared, say): the excess
  // waits in the throttled device until the inner one has room.
  ManualClock clock;
  SlowDevice slow(clock, 1 * kMs, /*queue_depth=*/4);
  QosLimiter limiter(EssdProfile::Unlimited());
  ThrottledDevice dev(slow, limiter, clock);
  ASSERT_EQ(dev.queue_depth(), 4u);
  // Take two inner slots behind the throttled device's back.
  IoRequest other1{.op = IoOp::kFlush}, other2{.op = IoOp::kFlush};
  int others = 0;
  other1.on_complete = other2.on_complete = [&](IoRequest&, const Status&) { ++others; };
  ASSERT_TRUE(slow.Submit(other1).ok());
  ASSERT_TRUE(slow.Submit(other2).ok());
  std::vector<IoRequest> reqs(4, IoRequest{.op = IoOp::kFlush});
  int done = 0;
  for (auto& q : reqs) {
    q.on_complete = [&](IoRequest&, const Status& st) { done += st.ok(); };
    ASSERT_TRUE(dev.Submit(q).ok());
  }
  EXPECT_EQ(dev.Poll(4), 4u);
  EXPECT_EQ(done, 4);
  EXPECT_EQ(others, 2);
  EXPECT_EQ(clock.NowNs(), 2 * kMs);  // two waves of the 1 ms inner device
}

TEST(ThrottledDeviceTest, DestroyWithRequestsInFlight) {
  ManualClock clock;
  SlowDevice slow(clock, 1 * kMs);
  // Discards: one IOPS token each, so only the first reaches the inner device.
  std::vector<IoRequest> reqs(
      16, IoRequest{.op = IoOp::kDiscard, .offset_bytes = 0, .length_bytes = 4096});
  int done = 0;
  {
    QosLimiter limiter(Custom(1000, 0, 0), 0);
    ThrottledDevice dev(slow, limiter, clock);
    for (auto& q : reqs) {
      q.on_complete = [&](IoRequest&, const Status&) { ++done; };
      ASSERT_TRUE(dev.Submit(q).ok());
    }
    EXPECT_EQ(slow.in_flight(), 1u);
  }  // the request in the inner device is waited for, without a callback
  EXPECT_EQ(slow.in_flight(), 0u);
  EXPECT_EQ(clock.NowNs(), 1 * kMs);
  EXPECT_EQ(done, 0);
}

// ---- Accuracy: simulated 5-second runs through the whole device -------------

TEST(ThrottledDeviceAccuracyTest, Pl1At100GiBMeasures6800Iops) {
  ManualClock clock;
  auto memory = NewMemory(256 * kMiB);
  ThrottledDevice dev(*memory, Essd(EssdLevel::kPL1, 100), clock);
  auto m = MeasureThroughput(dev, IoOp::kWrite, 4096, 32, 5 * kSecond, 7, clock);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  std::printf("%s\n", m->ToString().c_str());
  EXPECT_NEAR(m->iops, 6800, 340);
  EXPECT_NEAR(m->iops, 6800, 68);  // within 1% in fact
  EXPECT_EQ(m->ops, dev.stats().Snapshot().of(IoOp::kWrite).ops);
  EXPECT_EQ(m->bytes, m->ops * 4096);
  // Saturated closed loop: latency is queueing, 32 / 6800 IOPS = 4.7 ms.
  EXPECT_NEAR(m->latency_us_p50, 32.0 / 6800 * 1e6, 0.05 * 32.0 / 6800 * 1e6);
  EXPECT_GE(m->elapsed_ns, 5 * kSecond);
}

TEST(ThrottledDeviceAccuracyTest, IopsForSeveralProfiles) {
  // Lower-rate profiles keep this under a second with sanitizers; the
  // limiter's own tests cover the high-IOPS ones (PL1 2000 GiB, PL2, PL3).
  for (auto [level, gib] : {std::pair{EssdLevel::kPL0, 40}, std::pair{EssdLevel::kPL0, 1000},
                            std::pair{EssdLevel::kPL1, 20}, std::pair{EssdLevel::kPL2, 461}}) {
    ManualClock clock;
    SlowDevice null_device(clock, 0, 256);  // instant, holds no data: keeps the test fast
    const EssdProfile profile = Essd(level, gib);
    ThrottledDevice dev(null_device, profile, clock);
    auto m = MeasureThroughput(dev, IoOp::kWrite, 4096, 32, 5 * kSecond, 11, clock);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    std::printf("%-48s %s\n", profile.Describe().c_str(), m->ToString().c_str());
    EXPECT_NEAR(m->iops, profile.iops_max, 0.05 * profile.iops_max) << profile.Describe();
  }
}

TEST(ThrottledDeviceAccuracyTest, Throughput1MiBForSeveralProfiles) {
  for (auto [level, gib] : {std::pair{EssdLevel::kPL0, 40}, std::pair{EssdLevel::kPL1, 100},
                            std::pair{EssdLevel::kPL2, 1260}, std::pair{EssdLevel::kPL3, 8000}}) {
    ManualClock clock;
    SlowDevice null_device(clock, 0, 256);
    const EssdProfile profile = Essd(level, gib);
    ThrottledDevice dev(null_device, profile, clock);
    auto m = MeasureThroughput(dev, IoOp::kRead, kMiB, 32, 5 * kSecond, 13, clock);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    std::printf("%-48s %s\n", profile.Describe().c_str(), m->ToString().c_str());
    const double limit = static_cast<double>(profile.throughput_bytes_per_s);
    EXPECT_NEAR(m->bytes_per_s, limit, 0.05 * limit) << profile.Describe();
  }
  // And writes once through a MemoryDevice, for PL1 100 GiB (170 MB/s).
  ManualClock clock;
  auto memory = NewMemory(256 * kMiB);
  ThrottledDevice dev(*memory, Essd(EssdLevel::kPL1, 100), clock);
  auto m = MeasureThroughput(dev, IoOp::kWrite, kMiB, 32, 5 * kSecond, 17, clock);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_NEAR(m->bytes_per_s, 170e6, 0.05 * 170e6);
}

TEST(MeasureThroughputTest, RejectsBadArguments) {
  auto memory = NewMemory(1 * kMiB, 32);
  EXPECT_TRUE(MeasureThroughput(*memory, IoOp::kRead, 0, 1, kMs, 1).status().IsInvalidArgument());
  EXPECT_TRUE(
      MeasureThroughput(*memory, IoOp::kRead, 1000, 1, kMs, 1).status().IsInvalidArgument());
  EXPECT_TRUE(
      MeasureThroughput(*memory, IoOp::kRead, 2 * kMiB, 1, kMs, 1).status().IsInvalidArgument());
  EXPECT_TRUE(
      MeasureThroughput(*memory, IoOp::kRead, 4096, 0, kMs, 1).status().IsInvalidArgument());
  EXPECT_TRUE(
      MeasureThroughput(*memory, IoOp::kRead, 4096, 33, kMs, 1).status().IsInvalidArgument());
  EXPECT_TRUE(MeasureThroughput(*memory, IoOp::kRead, 4096, 1, 0, 1).status().IsInvalidArgument());
}

TEST(MeasureThroughputTest, ReportsFailures) {
  ManualClock clock;
  SlowDevice slow(clock, 10 * kUs);
  slow.completion_status_ = Status::IOError("slow device: medium error");
  auto m = MeasureThroughput(slow, IoOp::kWrite, 4096, 4, kMs, 1, clock);
  EXPECT_TRUE(m.status().IsIOError()) << m.status().ToString();
  EXPECT_EQ(slow.in_flight(), 0u);  // drained before returning
}

TEST(MeasureThroughputTest, FlushAndDiscard) {
  ManualClock clock;
  auto memory = NewMemory();
  ThrottledDevice dev(*memory, Essd(EssdLevel::kPL1, 100), clock);
  // Flush takes no tokens: QD4 at 0.2 ms each is 20000 per second.
  auto f = MeasureThroughput(dev, IoOp::kFlush, 4096, 4, kSecond, 1, clock);
  ASSERT_TRUE(f.ok()) << f.status().ToString();
  EXPECT_EQ(f->ops, 20000u);
  EXPECT_EQ(f->bytes, 0u);
  // Discard takes an IOPS token each.
  auto d = MeasureThroughput(dev, IoOp::kDiscard, kMiB, 32, kSecond, 1, clock);
  ASSERT_TRUE(d.ok()) << d.status().ToString();
  EXPECT_NEAR(d->iops, 6800, 340);
}

}  // namespace
}  // namespace snapdisk
