// Log-linear histograms of latencies (HdrHistogram's layout).
//
// LogLinearBuckets<B>: values below 2^(B+1) have a bucket each (exact);
// above, every power of two [2^m, 2^(m+1)) is split into 2^B equal buckets,
// so a bucket is at most 1/2^B of its values wide; values up to 2^kMaxPower
// - 1. The I/O statistics (disk/io_stats.h) count in it with B = 5 (lock
// free, ~3%); LatencyHistogram with B = 7.
//
// LatencyHistogram: the comparator's only way to percentiles: per-interval
// histograms are recorded, merged, and percentiles read from them, never
// from averages. Layout LogLinearBuckets<7>: a bucket is at most 1/128 of
// its values wide. A percentile is the midpoint of the bucket that
// holds its rank (clamped to the smallest and largest value recorded): at
// most 0.4% from the value a sorted list of every sample gives at that rank.
// Values above kMaxValueNs (~18 minutes) count as kMaxValueNs; negative ones
// as 0.
//
// Memory: the counts of every bucket, 33 KiB (Compact() for keeping many).
// Record is O(1) (a count-leading-zeros); Percentile and Merge O(buckets).
// Thread safety: a value; one writer, or external locking.
#pragma once

#include <bit>
#include <cstdint>
#include <utility>
#include <vector>

namespace snapdisk {

template <int kSubBucketBits>
struct LogLinearBuckets {
  static constexpr int kMaxPower = 40;
  static constexpr int64_t kMaxValue = (int64_t{1} << kMaxPower) - 1;
  static constexpr uint32_t kLinear = uint32_t{2} << kSubBucketBits;
  static constexpr uint32_t kPerPower = uint32_t{1} << kSubBucketBits;
  static constexpr int kFirstPower = kSubBucketBits + 1;
  static constexpr uint32_t kCount =
      kLinear + static_cast<uint32_t>(kMaxPower - kFirstPower) * kPerPower;

  // The bucket of a value (clamped to 0..kMaxValue).
  static uint32_t Of(int64_t value) {
    const uint64_t v = static_cast<uint64_t>(value < 0 ? 0 : value > kMaxValue ? kMaxValue : value);
    if (v < kLinear) return static_cast<uint32_t>(v);
    const int power = 63 - std::countl_zero(v);          // >= kFirstPower
    const uint64_t top = v >> (power - kSubBucketBits);  // [kPerPower, 2 * kPerPower)
    return kLinear + static_cast<uint32_t>(power - kFirstPower) * kPerPower +
           static_cast<uint32_t>(top - kPerPower);
  }
  // The values a bucket holds: [Lowest, Highest].
  static int64_t Lowest(uint32_t bucket) {
    if (bucket < kLinear) return bucket;
    const uint32_t k = bucket - kLinear;
    const int power = kFirstPower + static_cast<int>(k / kPerPower);
    return static_cast<int64_t>(uint64_t{kPerPower + k % kPerPower} << (power - kSubBucketBits));
  }
  static int64_t Highest(uint32_t bucket) {
    if (bucket < kLinear) return bucket;
    const int power = kFirstPower + static_cast<int>((bucket - kLinear) / kPerPower);
    return Lowest(bucket) + (int64_t{1} << (power - kSubBucketBits)) - 1;
  }
};

class LatencyHistogram {
 public:
  using Buckets = LogLinearBuckets<7>;  // 128 buckets per power of two
  static constexpr int64_t kMaxValueNs = Buckets::kMaxValue;

  LatencyHistogram();

  void Record(int64_t value_ns) { RecordN(value_ns, 1); }
  void RecordN(int64_t value_ns, uint64_t count);
  // Adds every sample of `other`.
  void Merge(const LatencyHistogram& other);
  void Reset();

  uint64_t count() const { return count_; }
  // 0 when empty.
  int64_t min_ns() const { return count_ == 0 ? 0 : min_ns_; }
  int64_t max_ns() const { return max_ns_; }
  double mean_ns() const;
  // The value at or below which `percent` (0-100] of the samples lie: the
  // sample of rank ceil(percent / 100 * count) (at least 1) in sorted order,
  // within the bucket's width. 0 when empty.
  int64_t Percentile(double percent) const;

  // The non-empty buckets as (index, count): what a per-second histogram
  // keeps once its second is over. FromCompact makes the histogram again.
  std::vector<std::pair<uint32_t, uint64_t>> Compact() const;
  static LatencyHistogram FromCompact(const std::vector<std::pair<uint32_t, uint64_t>>& buckets);

 private:
  std::vector<uint64_t> counts_;
  uint64_t count_ = 0;
  int64_t min_ns_ = 0;
  int64_t max_ns_ = 0;
  // The sum of the samples' bucket midpoints, for mean_ns (a double: no
  // overflow).
  double sum_ns_ = 0;
};

}  // namespace snapdisk
