// EssdProfile: the performance Alibaba Cloud publishes for an ESSD cloud disk
// of a given performance level (PL0..PL3) and capacity, plus "unlimited".
//
// Formulas (Alibaba Cloud, "ESSDs" product page), with C = capacity in GiB:
//
//   level  capacity (GiB)   IOPS                      throughput (MB/s)
//   PL0    40..32768        min{1800 + 12*C, 10000}   min{100 + 0.25*C, 180}
//   PL1    20..32768        min{1800 + 50*C, 50000}   min{120 + 0.5*C, 350}
//   PL2    461..32768       min{1800 + 50*C, 100000}  min{120 + 0.5*C, 750}
//   PL3    1261..32768      min{1800 + 50*C, 1000000} min{120 + 0.5*C, 4000}
//
// Units and conventions (decided here; every layer uses these):
//  - "MB/s" is 10^6 bytes per second (Alibaba's tables use decimal MB, like
//    fio's "MB/s"; it is also the conservative reading: 2^20 would allow 4.9%
//    more). throughput_bytes_per_s holds the figure in bytes, exactly.
//  - A capacity that is not a whole number of GiB: the range check uses the
//    exact byte count (PL1 accepts 20 GiB, rejects 20 GiB - 4 KiB and
//    32768 GiB + 4 KiB); the formulas use the capacity floored to whole GiB
//    (100.7 GiB gets the figures of 100 GiB), since ESSDs are sold in GiB.
//  - Latency: Alibaba publishes only the average 4 KiB random *write* latency:
//    0.2 ms for PL1..PL3, "0.3-0.5 ms" for PL0. The model is a constant per
//    request: 0.2 ms for PL1..PL3, 0.4 ms (the middle of the range) for PL0.
//    A constant keeps simulations deterministic; jitter, if wanted, belongs in
//    a fault/noise layer. Reads use the same figure: Alibaba gives no read
//    number, and measured ESSD reads are in the same range as writes.
//  - IOPS and throughput are totals over reads and writes together.
//  - unlimited: no IOPS limit, no throughput limit, no latency (0 in all the
//    numeric fields); any capacity is accepted.
//
// Thread safety: values; the free functions are pure.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

#include "disk/status.h"

namespace snapdisk {

inline constexpr uint64_t kBytesPerGiB = uint64_t{1} << 30;
inline constexpr uint64_t kBytesPerMB = 1'000'000;  // the "MB" of "MB/s", see above

enum class EssdLevel : uint8_t { kPL0 = 0, kPL1 = 1, kPL2 = 2, kPL3 = 3, kUnlimited = 4 };

// "PL0", "PL1", "PL2", "PL3", "unlimited" (stable: used in CLI flags and --json).
const char* EssdLevelName(EssdLevel level);

// Inverse of EssdLevelName, case-insensitive ("pl1", "PL1", "Unlimited").
// InvalidArgument naming the text and the accepted names otherwise.
Result<EssdLevel> ParseEssdLevel(std::string_view text);

// Capacities a level can be created with, in whole GiB, inclusive.
// unlimited: {0, UINT64_MAX / kBytesPerGiB}.
struct EssdCapacityRange {
  uint64_t min_gib = 0;
  uint64_t max_gib = 0;
};
EssdCapacityRange EssdCapacityRangeGib(EssdLevel level);

// The figures of one disk. QosLimiter enforces the numeric fields only, so a
// hand-built profile (tests do this) works as well as one from For().
struct EssdProfile {
  EssdLevel level = EssdLevel::kUnlimited;
  uint64_t capacity_bytes = 0;
  // Requests per second, reads and writes together; 0 means no limit.
  uint64_t iops_max = 0;
  // Bytes per second, reads and writes together; 0 means no limit.
  uint64_t throughput_bytes_per_s = 0;
  // Time from issue to completion of one request when it is not throttled.
  int64_t write_latency_ns = 0;
  int64_t read_latency_ns = 0;

  // The profile of an ESSD of `level` and `capacity_bytes`. InvalidArgument
  // when the capacity is outside the level's range, with a message such as
  // "PL2 needs a capacity of 461–32768 GiB; 100 GiB is outside it", or when
  // `level` is not one of the enumerators.
  static Result<EssdProfile> For(EssdLevel level, uint64_t capacity_bytes);
  // No limits, no latency.
  static EssdProfile Unlimited(uint64_t capacity_bytes = 0);

  // The capacity the formulas used: floored to whole GiB.
  uint64_t capacity_gib() const { return capacity_bytes / kBytesPerGiB; }
  // For humans, e.g. "ESSD PL1, 100 GiB: 6800 IOPS, 170 MB/s, 0.2 ms latency".
  std::string Describe() const;
};

// "100 GiB", or "100.5 GiB (107911053312 bytes)" when not a whole GiB.
std::string FormatCapacityGib(uint64_t capacity_bytes);

}  // namespace snapdisk
