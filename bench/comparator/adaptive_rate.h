// AdaptiveRateController: the read-rate cap of a physical backup as a closed
// loop on the foreground's p99 latency (the comparator's full-adaptive: the
// seed's "schedule physical backups off-peak" turned into a knob, the way
// Veeam throttles backup I/O on datastore latency).
//
// Once per control interval the caller hands over that interval's foreground
// latencies; the controller judges the p99 of the last `window_intervals`
// intervals merged (a sliding window), and moves multiplicatively both ways:
//  - p99 above the target: rate *= decrease_factor (at least min_mb_per_s);
//  - at or below: below the rate of the last decrease, half the way back to
//    it (BIC-TCP's binary search: a decrease that a stall caused, not the
//    rate, is undone in three intervals, where 5% steps took five to regain
//    20%); at or above it, rate *= 1 + increase_fraction, by at least
//    max / 200 (probing for a higher knee); at most max_mb_per_s. Until the
//    first decrease, rate *= slow_start_factor instead (TCP's slow start: a
//    backup of a few seconds lasts a few dozen intervals, and creeping up 5% a
//    time from max / 4 spent most of them far below the knee: 49 MB/s of 145
//    on average in a 5.5 s backup);
//  - fewer than min_samples latencies in the window: nothing changes (a p99
//    of a handful of samples is noise).
// Why a window: a rate above the knee raises the p99 of every interval, while
// a noisy machine's stall (about one a second here) puts a few late requests
// into one. Judged alone, a 250 ms interval's p99 is its ~8th worst request,
// and each such stall cost 20% of the rate, more than 5% steps regain: one
// run sat at 30 MB/s below a knee of over 100. Over two intervals merged a
// stall's few requests stay under the 1%.
// Steps in proportion to the rate keep the probing scaled to the knee,
// whatever its size, where a fixed step overshoots a small knee on every
// other interval.
//
// Thread safety: a value; one caller.
#pragma once

#include <cstdint>
#include <deque>

#include "disk/latency_histogram.h"
#include "disk/status.h"

namespace snapdisk {

struct AdaptiveRateOptions {
  double target_p99_us = 0;         // > 0
  double max_mb_per_s = 0;          // > 0: the ceiling (e.g. the profile's headroom)
  double min_mb_per_s = 1;          // > 0, <= max
  double start_mb_per_s = 0;        // 0: max / 4
  double increase_fraction = 0.05;  // > 0
  double decrease_factor = 0.8;     // (0, 1)
  double slow_start_factor = 2;     // >= 1 (1: no slow start)
  uint32_t window_intervals = 2;    // >= 1
  uint64_t min_samples = 20;
};

class AdaptiveRateController {
 public:
  // InvalidArgument naming the field for bad options.
  static Result<AdaptiveRateController> Make(const AdaptiveRateOptions& options);

  double rate_mb_per_s() const { return rate_; }
  // One control interval's foreground latencies. Returns the new rate.
  double Update(const LatencyHistogram& interval);
  // The p99 (us) the last Update judged (0 before any).
  double window_p99_us() const { return window_p99_us_; }
  uint64_t decreases() const { return decreases_; }
  uint64_t increases() const { return increases_; }

 private:
  explicit AdaptiveRateController(const AdaptiveRateOptions& options);
  AdaptiveRateOptions options_;
  double rate_ = 0;
  double window_p99_us_ = 0;
  double last_decrease_from_ = 0;  // the rate the last decrease left (0: none yet)
  std::deque<LatencyHistogram> window_;  // the last window_intervals intervals
  uint64_t decreases_ = 0;
  uint64_t increases_ = 0;
};

}  // namespace snapdisk
