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

double AdaptiveRateController::Update(double p99_us, uint64_t samples) {
  if (samples < options_.min_samples) return rate_;
  if (p99_us > options_.target_p99_us) {
    rate_ = std::max(options_.min_mb_per_s, rate_ * options_.decrease_factor);
    ++decreases_;
  } else {
    const double step = std::max(rate_ * options_.increase_fraction, options_.max_mb_per_s / 200);
    rate_ = std::min(options_.max_mb_per_s, rate_ + step);
    ++increases_;
  }
  return rate_;
}

}  // namespace snapdisk
