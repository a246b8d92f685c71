// A Clock that moves a fixed step every time it is read: code that reads the
// clock once per piece of work sees time pass as if each piece took that
// long (the backup steps' time budget, kBackupStepBudgetNs).
#pragma once

#include <atomic>
#include <cstdint>

#include "disk/clock.h"

namespace snapdisk::testing {

class TickingClock final : public Clock {
 public:
  explicit TickingClock(int64_t step_ns) : step_ns_(step_ns) {}
  int64_t NowNs() const override { return now_.fetch_add(step_ns_) + step_ns_; }
  void SleepUntilNs(int64_t deadline_ns) override {
    int64_t now = now_.load();
    while (now < deadline_ns && !now_.compare_exchange_weak(now, deadline_ns)) {
    }
  }

 private:
  const int64_t step_ns_;
  mutable std::atomic<int64_t> now_{0};
};

}  // namespace snapdisk::testing
