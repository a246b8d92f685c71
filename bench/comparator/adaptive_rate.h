// AdaptiveRateController: the read-rate cap of a physical backup as a closed
// loop on the foreground's p99 latency (the comparator's full-adaptive: the
// seed's "schedule physical backups off-peak" turned into a knob, the way
// Veeam throttles backup I/O on datastore latency).
//
// Multiplicative both ways, once per control interval, on that interval's
// foreground p99:
//  - above the target: rate *= decrease_factor (at least min_mb_per_s);
//  - at or below: rate *= 1 + increase_fraction, by at least max / 200 (at
//    most max_mb_per_s).
// Steps in proportion to the rate keep the probing above the knee to about
// one interval in ln(1/decrease) / ln(1 + increase) (~1 in 5 by default)
// whatever the knee's size, where a fixed step overshoots a small knee on
// every other interval.
//  - an interval with fewer than min_samples latencies changes nothing (a
//    p99 of a handful of samples is noise).
// It settles where the p99 crosses the target, probing upward a step per
// interval and backing off fast when the workload suffers.
//
// Thread safety: a value; one caller.
#pragma once

#include <cstdint>

#include "disk/status.h"

namespace snapdisk {

struct AdaptiveRateOptions {
  double target_p99_us = 0;      // > 0
  double max_mb_per_s = 0;       // > 0: the ceiling (e.g. the profile's headroom)
  double min_mb_per_s = 1;       // > 0, <= max
  double start_mb_per_s = 0;       // 0: max / 4
  double increase_fraction = 0.05;  // > 0
  double decrease_factor = 0.8;     // (0, 1)
  uint64_t min_samples = 20;
};

class AdaptiveRateController {
 public:
  // InvalidArgument naming the field for bad options.
  static Result<AdaptiveRateController> Make(const AdaptiveRateOptions& options);

  double rate_mb_per_s() const { return rate_; }
  // One control interval: its p99 (us) over `samples` latencies. Returns the
  // new rate.
  double Update(double p99_us, uint64_t samples);
  uint64_t decreases() const { return decreases_; }
  uint64_t increases() const { return increases_; }

 private:
  explicit AdaptiveRateController(const AdaptiveRateOptions& options);
  AdaptiveRateOptions options_;
  double rate_ = 0;
  uint64_t decreases_ = 0;
  uint64_t increases_ = 0;
};

}  // namespace snapdisk
