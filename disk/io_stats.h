// I/O statistics kept by every device and QoS limiter: per operation type,
// the count, bytes, errors and a latency histogram with p50/p99/p99.9.
//
// Recording is lock-free (relaxed atomics) so it can sit on the I/O path; a
// Snapshot() may be taken from any thread at any time, and Reset() zeroes the
// counters (a snapshot racing a reset may mix old and new counts, never tear a
// single counter).
#pragma once

#include <array>
#include <atomic>
#include <cstdint>
#include <string>

#include "disk/latency_histogram.h"

namespace snapdisk {

enum class IoOp : uint8_t { kRead = 0, kWrite = 1, kFlush = 2, kDiscard = 3 };
inline constexpr int kIoOpCount = 4;
// "read", "write", "flush", "discard".
const char* IoOpName(IoOp op);

// A latency histogram that threads record into without locks (relaxed
// atomics), in nanoseconds: LogLinearBuckets<5> (disk/latency_histogram.h),
// 32 buckets per power of two, so a reported percentile is within ~3% of the
// true value; 0 ns to ~18 minutes, larger values land in the last bucket.
class AtomicLatencyHistogram {
 public:
  using Buckets = LogLinearBuckets<5>;

  void Record(uint64_t latency_ns);
  // The latency at or below which `fraction` (0..1) of recorded values fall
  // (upper edge of the bucket); 0 when empty.
  uint64_t PercentileNs(double fraction) const;
  uint64_t count() const;
  uint64_t sum_ns() const { return sum_ns_.load(std::memory_order_relaxed); }
  uint64_t max_ns() const { return max_ns_.load(std::memory_order_relaxed); }
  void Reset();

 private:
  std::array<std::atomic<uint64_t>, Buckets::kCount> buckets_{};
  std::atomic<uint64_t> sum_ns_{0};
  std::atomic<uint64_t> max_ns_{0};
};

// One op type's figures at the moment of the snapshot.
struct OpStats {
  uint64_t ops = 0;
  uint64_t bytes = 0;
  uint64_t errors = 0;
  double latency_us_mean = 0;
  double latency_us_p50 = 0;
  double latency_us_p99 = 0;
  double latency_us_p999 = 0;
  double latency_us_max = 0;
};

struct IoStatsSnapshot {
  std::array<OpStats, kIoOpCount> by_op{};
  const OpStats& of(IoOp op) const { return by_op[static_cast<int>(op)]; }
  // One line per op type that saw traffic, for humans.
  std::string ToString() const;
};

class IoStats {
 public:
  // One finished request: `bytes` transferred (0 for flush), `latency_ns` from
  // submission to completion, `ok` whether it succeeded.
  void Record(IoOp op, uint64_t bytes, uint64_t latency_ns, bool ok);
  IoStatsSnapshot Snapshot() const;
  void Reset();

 private:
  struct PerOp {
    std::atomic<uint64_t> ops{0};
    std::atomic<uint64_t> bytes{0};
    std::atomic<uint64_t> errors{0};
    AtomicLatencyHistogram latency;
  };
  std::array<PerOp, kIoOpCount> per_op_;
};

}  // namespace snapdisk
