#include "disk/qos_limiter.h"

#include <algorithm>
#include <limits>

#include "disk/check.h"

namespace snapdisk {
namespace {

constexpr uint64_t kNsPerSecond = 1'000'000'000;
// "Long ago": a bucket whose tat is here has full credit. Far enough from
// INT64_MIN that subtracting a burst cannot overflow.
constexpr int64_t kLongAgoNs = std::numeric_limits<int64_t>::min() / 4;

}  // namespace

int64_t QosLimiter::Bucket::ConformNs(int64_t burst_ns) const {
  return tat_ns + (tat_rem_units > 0 ? 1 : 0) - burst_ns;
}

void QosLimiter::Bucket::Take(int64_t start_ns, uint64_t cost) {
  // Idle long enough to be back at full credit: restart the schedule at the
  // start time. Compared with tat rounded up, so that a request started at
  // ConformNs() (which rounds up) keeps the exact fractional schedule instead
  // of losing up to 1 ns per request.
  if (tat_ns + (tat_rem_units > 0 ? 1 : 0) < start_ns) {
    tat_ns = start_ns;
    tat_rem_units = 0;
  }
  // cost tokens last cost * 1e9 / rate ns; keep the remainder in 1/rate ns.
  unsigned __int128 units = static_cast<unsigned __int128>(cost) * kNsPerSecond + tat_rem_units;
  tat_ns += static_cast<int64_t>(units / rate_per_s);
  tat_rem_units = static_cast<uint64_t>(units % rate_per_s);
}

QosLimiter::QosLimiter(const EssdProfile& profile, int64_t burst_ns)
    : burst_ns_(burst_ns), profile_(profile) {
  SNAPDISK_CHECK(burst_ns >= 0, "QosLimiter: negative burst");
  SNAPDISK_CHECK(profile.write_latency_ns >= 0 && profile.read_latency_ns >= 0,
                 "QosLimiter: negative latency in profile");
  ResetBucketsLocked();
}

void QosLimiter::ResetBucketsLocked() {
  iops_ = Bucket{.rate_per_s = profile_.iops_max, .tat_ns = kLongAgoNs, .tat_rem_units = 0};
  bytes_ = Bucket{
      .rate_per_s = profile_.throughput_bytes_per_s, .tat_ns = kLongAgoNs, .tat_rem_units = 0};
}

void QosLimiter::SetProfile(const EssdProfile& profile) {
  SNAPDISK_CHECK(profile.write_latency_ns >= 0 && profile.read_latency_ns >= 0,
                 "QosLimiter: negative latency in profile");
  std::lock_guard<std::mutex> lock(mu_);
  profile_ = profile;
  ResetBucketsLocked();
}

EssdProfile QosLimiter::profile() const {
  std::lock_guard<std::mutex> lock(mu_);
  return profile_;
}

QosGrant QosLimiter::Reserve(IoOp op, uint64_t length_bytes, int64_t now_ns) {
  const bool moves_data = op == IoOp::kRead || op == IoOp::kWrite;
  QosGrant grant;
  {
    std::lock_guard<std::mutex> lock(mu_);
    const bool use_iops = op != IoOp::kFlush && iops_.rate_per_s != 0;
    const bool use_bytes = moves_data && length_bytes != 0 && bytes_.rate_per_s != 0;
    const int64_t iops_conform_ns = use_iops ? iops_.ConformNs(burst_ns_) : kLongAgoNs;
    const int64_t bytes_conform_ns = use_bytes ? bytes_.ConformNs(burst_ns_) : kLongAgoNs;
    const int64_t start_ns = std::max({now_ns, iops_conform_ns, bytes_conform_ns});
    if (use_iops) iops_.Take(start_ns, 1);
    if (use_bytes) bytes_.Take(start_ns, length_bytes);

    const int64_t latency_ns =
        op == IoOp::kRead ? profile_.read_latency_ns : profile_.write_latency_ns;
    grant.start_ns = start_ns;
    grant.complete_ns = start_ns + latency_ns;

    ++counters_.requests;
    if (start_ns > now_ns) {
      ++counters_.throttled_requests;
      counters_.throttled_ns += static_cast<uint64_t>(start_ns - now_ns);
      if (start_ns == iops_conform_ns) ++counters_.iops_bound_requests;
      if (start_ns == bytes_conform_ns) ++counters_.bytes_bound_requests;
    }
  }
  stats_.Record(op, op == IoOp::kFlush ? 0 : length_bytes,
                static_cast<uint64_t>(grant.complete_ns - now_ns), true);
  return grant;
}

QosCounters QosLimiter::counters() const {
  std::lock_guard<std::mutex> lock(mu_);
  return counters_;
}

void QosLimiter::ResetStats() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    counters_ = QosCounters{};
  }
  stats_.Reset();
}

}  // namespace snapdisk
