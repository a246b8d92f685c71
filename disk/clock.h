// Clock: the monotonic time source for QoS pacing, latency and fault timing.
//
// Everything that waits or measures takes a Clock& so that tests can replace
// real time with a ManualClock and run minutes of simulated I/O in
// milliseconds. Times are nanoseconds on an arbitrary monotonic origin.
//
// Thread safety: SystemClock is safe from any thread. ManualClock is safe from
// any thread; SleepUntilNs on it advances the clock instead of sleeping.
#pragma once

#include <atomic>
#include <cstdint>
#include <string>

namespace snapdisk {

class Clock {
 public:
  virtual ~Clock() = default;
  virtual int64_t NowNs() const = 0;
  // Returns once NowNs() >= deadline_ns (at once if already past).
  virtual void SleepUntilNs(int64_t deadline_ns) = 0;
};

// CLOCK_MONOTONIC and real sleeps.
class SystemClock final : public Clock {
 public:
  int64_t NowNs() const override;
  void SleepUntilNs(int64_t deadline_ns) override;
  // The process-wide instance.
  static SystemClock& Get();
};

// A clock that moves only when told to (or when something sleeps on it).
class ManualClock final : public Clock {
 public:
  explicit ManualClock(int64_t start_ns = 0) : now_ns_(start_ns) {}
  int64_t NowNs() const override { return now_ns_.load(std::memory_order_acquire); }
  void SleepUntilNs(int64_t deadline_ns) override;
  void AdvanceNs(int64_t delta_ns) { now_ns_.fetch_add(delta_ns, std::memory_order_acq_rel); }

 private:
  std::atomic<int64_t> now_ns_;
};

// A time that never comes: a retain-until of kForeverUnixNs never expires
// (long-term retention, the seed's -1).
inline constexpr int64_t kForeverUnixNs = INT64_MAX;

// "2026-11-21T08:40:00Z" (with nanoseconds when not whole seconds) for a
// time in ns since the Unix epoch: how messages show wall-clock times;
// "forever" for kForeverUnixNs.
std::string FormatRfc3339(int64_t unix_ns);

}  // namespace snapdisk
