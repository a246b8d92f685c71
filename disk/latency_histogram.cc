#include "disk/latency_histogram.h"

#include <algorithm>
#include <cmath>

namespace snapdisk {

LatencyHistogram::LatencyHistogram() : counts_(Buckets::kCount, 0) {}

void LatencyHistogram::RecordN(int64_t value_ns, uint64_t count) {
  if (count == 0) return;
  const int64_t v = std::clamp<int64_t>(value_ns, 0, kMaxValueNs);
  counts_[Buckets::Of(v)] += count;
  if (count_ == 0 || v < min_ns_) min_ns_ = v;
  max_ns_ = std::max(max_ns_, v);
  count_ += count;
  sum_ns_ += static_cast<double>(v) * static_cast<double>(count);
}

void LatencyHistogram::Merge(const LatencyHistogram& other) {
  if (other.count_ == 0) return;
  for (size_t i = 0; i < counts_.size(); ++i) counts_[i] += other.counts_[i];
  min_ns_ = count_ == 0 ? other.min_ns_ : std::min(min_ns_, other.min_ns_);
  max_ns_ = std::max(max_ns_, other.max_ns_);
  count_ += other.count_;
  sum_ns_ += other.sum_ns_;
}

void LatencyHistogram::Reset() { *this = LatencyHistogram(); }

double LatencyHistogram::mean_ns() const {
  return count_ == 0 ? 0 : sum_ns_ / static_cast<double>(count_);
}

int64_t LatencyHistogram::Percentile(double percent) const {
  if (count_ == 0) return 0;
  const double wanted =
      std::ceil(std::clamp(percent, 0.0, 100.0) / 100.0 * static_cast<double>(count_));
  const uint64_t rank = std::max<uint64_t>(1, static_cast<uint64_t>(wanted));
  // The extremes are known exactly.
  if (rank >= count_) return max_ns_;
  if (rank == 1) return min_ns_;
  uint64_t seen = 0;
  for (uint32_t b = 0; b < counts_.size(); ++b) {
    seen += counts_[b];
    if (seen < rank) continue;
    const int64_t mid = Buckets::Lowest(b) + (Buckets::Highest(b) - Buckets::Lowest(b)) / 2;
    return std::clamp(mid, min_ns_, max_ns_);
  }
  return max_ns_;
}

std::vector<std::pair<uint32_t, uint64_t>> LatencyHistogram::Compact() const {
  std::vector<std::pair<uint32_t, uint64_t>> out;
  for (uint32_t b = 0; b < counts_.size(); ++b) {
    if (counts_[b] != 0) out.emplace_back(b, counts_[b]);
  }
  return out;
}

LatencyHistogram LatencyHistogram::FromCompact(
    const std::vector<std::pair<uint32_t, uint64_t>>& buckets) {
  LatencyHistogram h;
  for (const auto& [bucket, count] : buckets) {
    if (bucket >= h.counts_.size() || count == 0) continue;
    // The exact values are gone: each sample counts as its bucket's
    // midpoint (min, max and mean within a bucket's width).
    const int64_t mid =
        Buckets::Lowest(bucket) + (Buckets::Highest(bucket) - Buckets::Lowest(bucket)) / 2;
    h.RecordN(mid, count);
  }
  return h;
}

}  // namespace snapdisk
