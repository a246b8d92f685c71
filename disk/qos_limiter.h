// QosLimiter: enforces an EssdProfile (IOPS, throughput, latency) on any
// stream of requests. It never sleeps and never reads a clock: the caller
// passes the current time and gets back when the request may start and when
// it may complete, and does the waiting itself. ThrottledDevice uses it in
// front of a BlockDevice; the volume layer can use it on its own I/O path.
//
// Model. Two token buckets, both refilled continuously and both drawn by every
// request, in the GCRA ("virtual scheduling") form:
//  - IOPS: one token per request, `iops_max` tokens per second. Alibaba counts
//    IOPS per request whatever its size (no splitting of large I/Os into
//    several IOPS); large I/Os are held back by the throughput bucket instead.
//  - throughput: one token per byte, `throughput_bytes_per_s` per second.
// A request starts at the earliest time >= now at which both buckets conform
// and completes `latency` later (the profile's read or write latency), so the
// latency is a floor that holds even when nothing is throttled. A zero rate
// disables that bucket; the unlimited profile therefore starts and completes
// every request at `now`.
//
// Costs per op type:
//   read, write: 1 IOPS token + length bytes; read or write latency.
//   discard:     1 IOPS token, no bytes (a trim moves no data); write latency.
//   flush:       no tokens; write latency only (ESSD acknowledges a write once
//                it is replicated, so a flush is a round trip, not more I/O).
//
// Burst: each bucket tolerates `burst_ns` (default 10 ms) of its rate ahead of
// schedule: an idle 6800-IOPS limiter admits 69 requests at once, then paces
// one per 147 us. Over a 5 s run that adds at most 0.2% to the measured rate,
// while absorbing scheduler wake-up jitter (a late caller finds the tokens it
// missed, up to 10 ms worth) so that real-time runs still reach the limit. A
// single request larger than the byte burst is admitted when the bucket
// conforms and puts it in debt (the long-run rate stays exact).
//
// Accounting is exact: bucket times are kept in whole nanoseconds plus a
// remainder in units of 1/rate ns, so a 6800-IOPS limiter drifts by nothing,
// however long it runs.
//
// Stats: stats() records every reservation at Reserve() time (so a request is
// counted before it completes) with its *modelled* latency, complete_ns -
// now_ns: the throttling delay the limiter imposed plus the profile latency.
// It does not see how long the device below really took (ThrottledDevice's
// own stats() do). counters() tells how many requests were delayed and for
// how long in total.
//
// Thread safety: all methods may be called from any thread concurrently;
// Reserve and the profile are guarded by a mutex (a few dozen ns of work per
// call), stats are lock-free.
#pragma once

#include <cstdint>
#include <mutex>

#include "disk/essd_profile.h"
#include "disk/io_stats.h"

namespace snapdisk {

// The outcome of one reservation; times on the caller's clock.
struct QosGrant {
  // Earliest time the request may be issued to the device (>= now_ns).
  int64_t start_ns = 0;
  // Earliest time its completion may be reported: start_ns + latency.
  int64_t complete_ns = 0;
};

// How much throttling the limiter did since construction or ResetStats().
struct QosCounters {
  uint64_t requests = 0;
  // Requests whose start_ns was later than their now_ns.
  uint64_t throttled_requests = 0;
  // Sum over requests of start_ns - now_ns: the time spent waiting for tokens.
  uint64_t throttled_ns = 0;
  // Delayed requests by the bucket that set their start time (both may count
  // one request when the two conform at the same instant).
  uint64_t iops_bound_requests = 0;
  uint64_t bytes_bound_requests = 0;
};

class QosLimiter {
 public:
  static constexpr int64_t kDefaultBurstNs = 10'000'000;  // 10 ms

  // `burst_ns` >= 0 (checked): see "Burst" above; 0 paces strictly.
  explicit QosLimiter(const EssdProfile& profile, int64_t burst_ns = kDefaultBurstNs);
  QosLimiter(const QosLimiter&) = delete;
  QosLimiter& operator=(const QosLimiter&) = delete;

  // Takes the tokens of one request of `op` and `length_bytes` arriving at
  // `now_ns` and returns when it may start and complete. Always succeeds: a
  // request is never refused, only delayed. Successive grants draw from the
  // same buckets, so a caller must issue each request no earlier than its
  // start_ns and report it no earlier than its complete_ns; a reservation that
  // is then not used is simply lost bandwidth.
  QosGrant Reserve(IoOp op, uint64_t length_bytes, int64_t now_ns);

  // Replaces the profile (e.g. the disk changed level or was resized). The
  // buckets restart full; requests already granted keep their times.
  void SetProfile(const EssdProfile& profile);
  EssdProfile profile() const;
  int64_t burst_ns() const { return burst_ns_; }

  // Figures of the reservations (see "Stats" above).
  IoStats& stats() { return stats_; }
  QosCounters counters() const;
  // Zeroes stats() and counters(); the buckets are untouched.
  void ResetStats();

 private:
  // A GCRA bucket: `tat` (theoretical arrival time) is when the bucket would
  // be back to full credit; it conforms at time t when tat - burst <= t.
  // tat = tat_ns + tat_rem_units / rate ns.
  struct Bucket {
    uint64_t rate_per_s = 0;  // 0: disabled
    int64_t tat_ns = 0;
    uint64_t tat_rem_units = 0;
    // Earliest time the bucket conforms (tat rounded up, minus the burst).
    int64_t ConformNs(int64_t burst_ns) const;
    // Moves tat up to start_ns if it is earlier (compared rounded up, so the
    // fraction survives a start at ConformNs()) and adds `cost` tokens' time.
    void Take(int64_t start_ns, uint64_t cost);
  };
  void ResetBucketsLocked();

  const int64_t burst_ns_;
  mutable std::mutex mu_;
  EssdProfile profile_;   // guarded by mu_
  Bucket iops_;           // guarded by mu_
  Bucket bytes_;          // guarded by mu_
  QosCounters counters_;  // guarded by mu_
  IoStats stats_;
};

}  // namespace snapdisk
