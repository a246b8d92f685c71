#include "disk/io_stats.h"

#include <algorithm>
#include <cstdio>

namespace snapdisk {

const char* IoOpName(IoOp op) {
  switch (op) {
    case IoOp::kRead:
      return "read";
    case IoOp::kWrite:
      return "write";
    case IoOp::kFlush:
      return "flush";
    case IoOp::kDiscard:
      return "discard";
  }
  return "unknown";
}

void AtomicLatencyHistogram::Record(uint64_t latency_ns) {
  buckets_[Buckets::Of(static_cast<int64_t>(std::min<uint64_t>(latency_ns, Buckets::kMaxValue)))]
      .fetch_add(1, std::memory_order_relaxed);
  sum_ns_.fetch_add(latency_ns, std::memory_order_relaxed);
  uint64_t prev = max_ns_.load(std::memory_order_relaxed);
  while (latency_ns > prev &&
         !max_ns_.compare_exchange_weak(prev, latency_ns, std::memory_order_relaxed)) {
  }
}

uint64_t AtomicLatencyHistogram::count() const {
  uint64_t total = 0;
  for (const auto& b : buckets_) total += b.load(std::memory_order_relaxed);
  return total;
}

uint64_t AtomicLatencyHistogram::PercentileNs(double fraction) const {
  uint64_t total = count();
  if (total == 0) return 0;
  if (fraction < 0) fraction = 0;
  if (fraction > 1) fraction = 1;
  // The rank of the value we want, 1-based: ceil(fraction * total), at least 1.
  uint64_t rank = static_cast<uint64_t>(fraction * static_cast<double>(total));
  if (static_cast<double>(rank) < fraction * static_cast<double>(total)) ++rank;
  if (rank == 0) rank = 1;
  uint64_t seen = 0;
  for (uint32_t i = 0; i < Buckets::kCount; ++i) {
    seen += buckets_[i].load(std::memory_order_relaxed);
    if (seen >= rank) return static_cast<uint64_t>(Buckets::Highest(i));
  }
  return static_cast<uint64_t>(Buckets::kMaxValue);
}

void AtomicLatencyHistogram::Reset() {
  for (auto& b : buckets_) b.store(0, std::memory_order_relaxed);
  sum_ns_.store(0, std::memory_order_relaxed);
  max_ns_.store(0, std::memory_order_relaxed);
}

void IoStats::Record(IoOp op, uint64_t bytes, uint64_t latency_ns, bool ok) {
  PerOp& p = per_op_[static_cast<int>(op)];
  p.ops.fetch_add(1, std::memory_order_relaxed);
  if (ok) {
    p.bytes.fetch_add(bytes, std::memory_order_relaxed);
  } else {
    p.errors.fetch_add(1, std::memory_order_relaxed);
  }
  p.latency.Record(latency_ns);
}

IoStatsSnapshot IoStats::Snapshot() const {
  IoStatsSnapshot snap;
  for (int i = 0; i < kIoOpCount; ++i) {
    const PerOp& p = per_op_[i];
    OpStats& s = snap.by_op[i];
    s.ops = p.ops.load(std::memory_order_relaxed);
    s.bytes = p.bytes.load(std::memory_order_relaxed);
    s.errors = p.errors.load(std::memory_order_relaxed);
    uint64_t n = p.latency.count();
    s.latency_us_mean = n ? static_cast<double>(p.latency.sum_ns()) / 1000.0 / n : 0;
    s.latency_us_p50 = p.latency.PercentileNs(0.50) / 1000.0;
    s.latency_us_p99 = p.latency.PercentileNs(0.99) / 1000.0;
    s.latency_us_p999 = p.latency.PercentileNs(0.999) / 1000.0;
    s.latency_us_max = p.latency.max_ns() / 1000.0;
  }
  return snap;
}

void IoStats::Reset() {
  for (PerOp& p : per_op_) {
    p.ops.store(0, std::memory_order_relaxed);
    p.bytes.store(0, std::memory_order_relaxed);
    p.errors.store(0, std::memory_order_relaxed);
    p.latency.Reset();
  }
}

std::string IoStatsSnapshot::ToString() const {
  std::string out;
  char line[256];
  for (int i = 0; i < kIoOpCount; ++i) {
    const OpStats& s = by_op[i];
    if (s.ops == 0) continue;
    std::snprintf(line, sizeof line,
                  "%-7s ops=%llu bytes=%llu errors=%llu lat_us mean=%.1f p50=%.1f p99=%.1f "
                  "p99.9=%.1f max=%.1f\n",
                  IoOpName(static_cast<IoOp>(i)), static_cast<unsigned long long>(s.ops),
                  static_cast<unsigned long long>(s.bytes),
                  static_cast<unsigned long long>(s.errors), s.latency_us_mean, s.latency_us_p50,
                  s.latency_us_p99, s.latency_us_p999, s.latency_us_max);
    out += line;
  }
  return out;
}

}  // namespace snapdisk
