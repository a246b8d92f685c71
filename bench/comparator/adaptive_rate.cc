#include "bench/comparator/adaptive_rate.h"

#include <algorithm>
#include <cmath>
#include <string>

namespace snapdisk {

Result<AdaptiveRateController> AdaptiveRateController::Make(const AdaptiveRateOptions& o) {
  auto bad = [](const std::string& field, double v) {
    return Status::InvalidArgument("adaptive rate: " + field + " out of range (got " +
                                   std::to_string(v) + ")");
  };
  if (!(o.target_p99_us > 0) || !std::isfinite(o.target_p99_us)) return bad("target_p99_us", o.target_p99_us);
  if (!(o.max_mb_per_s > 0) || !std::isfinite(o.max_mb_per_s)) return bad("max_mb_per_s", o.max_mb_per_s);
  if (!(o.min_mb_per_s > 0) || o.min_mb_per_s > o.max_mb_per_s) return bad("min_mb_per_s", o.min_mb_per_s);
  if (!(o.decrease_factor > 0 && o.decrease_factor < 1)) return bad("decrease_factor", o.decrease_factor);
  if (o.start_mb_per_s < 0 || o.start_mb_per_s > o.max_mb_per_s) return bad("start_mb_per_s", o.start_mb_per_s);
  if (o.window_intervals < 1) return bad("window_intervals", o.window_intervals);
  if (!(o.slow_start_factor >= 1) || !std::isfinite(o.slow_start_factor)) {
    return bad("slow_start_factor", o.slow_start_factor);
  }
  if (!(o.increase_fraction > 0) || !std::isfinite(o.increase_fraction)) {
    return bad("increase_fraction", o.increase_fraction);
  }
  return AdaptiveRateController(o);
}

AdaptiveRateController::AdaptiveRateController(const AdaptiveRateOptions& options)
    : options_(options) {
  if (options_.start_mb_per_s == 0) options_.start_mb_per_s = options_.max_mb_per_s / 4;
  rate_ = std::max(options_.min_mb_per_s, options_.start_mb_per_s);
}

double AdaptiveRateController::Update(const LatencyHistogram& interval) {
  window_.push_back(interval);
  while (window_.size() > options_.window_intervals) window_.pop_front();
  LatencyHistogram merged;
  for (const LatencyHistogram& h : window_) merged.Merge(h);
  if (merged.count() < options_.min_samples) return rate_;
  window_p99_us_ = static_cast<double>(merged.Percentile(99)) / 1e3;
  if (window_p99_us_ > options_.target_p99_us) {
    last_decrease_from_ = rate_;
    rate_ = std::max(options_.min_mb_per_s, rate_ * options_.decrease_factor);
    ++decreases_;
    // The window's older intervals were read at the old rate: judge the new
    // one on its own intervals.
    window_.clear();
  } else {
    const double min_step = options_.max_mb_per_s / 200;
    double step;
    if (decreases_ == 0) {
      step = rate_ * (options_.slow_start_factor - 1);
    } else if (rate_ < last_decrease_from_) {
      step = std::max((last_decrease_from_ - rate_) / 2, min_step);
    } else {
      step = std::max(rate_ * options_.increase_fraction, min_step);
    }
    rate_ = std::min(options_.max_mb_per_s, rate_ + step);
    ++increases_;
  }
  return rate_;
}

}  // namespace snapdisk
