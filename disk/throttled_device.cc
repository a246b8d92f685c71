#include "disk/throttled_device.h"

#include <algorithm>
#include <cstdio>
#include <limits>
#include <random>

#include "disk/check.h"

namespace snapdisk {
namespace {
constexpr int64_t kNever = std::numeric_limits<int64_t>::max();
}  // namespace

ThrottledDevice::ThrottledDevice(BlockDevice& inner, const EssdProfile& profile, Clock& clock)
    : inner_(inner),
      clock_(clock),
      owned_limiter_(std::make_unique<QosLimiter>(profile)),
      limiter_(owned_limiter_.get()),
      queue_depth_(inner.queue_depth()) {
  Init();
}

ThrottledDevice::ThrottledDevice(BlockDevice& inner, QosLimiter& limiter, Clock& clock)
    : inner_(inner), clock_(clock), limiter_(&limiter), queue_depth_(inner.queue_depth()) {
  Init();
}

void ThrottledDevice::Init() {
  SNAPDISK_CHECK(queue_depth_ > 0, "ThrottledDevice: inner device has queue depth 0");
  slots_.resize(queue_depth_);
  free_.reserve(queue_depth_);
  waiting_.reserve(queue_depth_);
  ready_.reserve(queue_depth_);
  for (uint32_t i = queue_depth_; i-- > 0;) {
    free_.push_back(i);  // slot 0 is taken first
    // [this, i] fits std::function's small buffer: no allocation.
    slots_[i].inner.on_complete = [this, i](IoRequest&, const Status& status) {
      OnInnerComplete(i, status);
    };
  }
}

ThrottledDevice::~ThrottledDevice() {
  // The inner device holds pointers to our slots until it has called back.
  while (inner_outstanding_ > 0) inner_.Poll(1);
}

std::string ThrottledDevice::name() const {
  return "throttled (" + limiter_->profile().Describe() + ") over " + inner_.name();
}

bool ThrottledDevice::StartsLater(uint32_t a, uint32_t b) const {
  const Slot& x = slots_[a];
  const Slot& y = slots_[b];
  return x.start_ns != y.start_ns ? x.start_ns > y.start_ns : x.seq > y.seq;
}

bool ThrottledDevice::CompletesLater(uint32_t a, uint32_t b) const {
  const Slot& x = slots_[a];
  const Slot& y = slots_[b];
  return x.complete_ns != y.complete_ns ? x.complete_ns > y.complete_ns : x.seq > y.seq;
}

void ThrottledDevice::PushWaiting(uint32_t index) {
  slots_[index].state = SlotState::kWaiting;
  waiting_.push_back(index);
  std::push_heap(waiting_.begin(), waiting_.end(),
                 [this](uint32_t a, uint32_t b) { return StartsLater(a, b); });
}

void ThrottledDevice::PushReady(uint32_t index) {
  slots_[index].state = SlotState::kReady;
  ready_.push_back(index);
  std::push_heap(ready_.begin(), ready_.end(),
                 [this](uint32_t a, uint32_t b) { return CompletesLater(a, b); });
}

Status ThrottledDevice::Submit(IoRequest& request) {
  SNAPDISK_RETURN_IF_ERROR(ValidateRequest(request));
  if (free_.empty()) {
    return Status::Busy(name() + ": queue full (" + std::to_string(queue_depth_) + " requests)");
  }
  const uint32_t index = free_.back();
  free_.pop_back();
  Slot& slot = slots_[index];
  slot.user = &request;
  slot.inner.op = request.op;
  slot.inner.offset_bytes = request.offset_bytes;
  slot.inner.length_bytes = request.length_bytes;
  slot.inner.data = request.data;
  slot.seq = next_seq_++;
  slot.status = Status::OK();
  const int64_t now_ns = clock_.NowNs();
  slot.submit_ns = now_ns;
  const QosGrant grant =
      limiter_->Reserve(request.op, request.op == IoOp::kFlush ? 0 : request.length_bytes, now_ns);
  slot.start_ns = grant.start_ns;
  slot.complete_ns = grant.complete_ns;
  ++in_flight_;
  if (grant.start_ns > now_ns || !Issue(index)) PushWaiting(index);
  return Status::OK();
}

bool ThrottledDevice::Issue(uint32_t index) {
  Slot& slot = slots_[index];
  Status status = inner_.Submit(slot.inner);
  if (status.ok()) {
    slot.state = SlotState::kIssued;
    ++inner_outstanding_;
    return true;
  }
  if (status.IsBusy()) {
    inner_busy_ = true;
    return false;
  }
  slot.status = std::move(status);  // e.g. a dead inner device: report it when due
  PushReady(index);
  return true;
}

void ThrottledDevice::IssueDue(int64_t now_ns) {
  inner_busy_ = false;
  const auto later = [this](uint32_t a, uint32_t b) { return StartsLater(a, b); };
  while (!waiting_.empty() && slots_[waiting_.front()].start_ns <= now_ns) {
    std::pop_heap(waiting_.begin(), waiting_.end(), later);
    const uint32_t index = waiting_.back();
    waiting_.pop_back();
    if (!Issue(index)) {
      PushWaiting(index);  // inner queue full: retry on a later pass
      break;
    }
  }
}

void ThrottledDevice::OnInnerComplete(uint32_t index, const Status& status) {
  Slot& slot = slots_[index];
  SNAPDISK_CHECK(slot.state == SlotState::kIssued, "ThrottledDevice: unexpected inner completion");
  slot.status = status;
  --inner_outstanding_;
  PushReady(index);
}

uint32_t ThrottledDevice::DeliverDue(int64_t now_ns) {
  const auto later = [this](uint32_t a, uint32_t b) { return CompletesLater(a, b); };
  // Only what was ready on entry: a callback that resubmits and fails at once
  // must not keep this loop going forever.
  size_t budget = ready_.size();
  uint32_t ran = 0;
  while (budget-- > 0 && !ready_.empty() && slots_[ready_.front()].complete_ns <= now_ns) {
    std::pop_heap(ready_.begin(), ready_.end(), later);
    const uint32_t index = ready_.back();
    ready_.pop_back();
    Slot& slot = slots_[index];
    IoRequest& request = *slot.user;
    Status status = std::move(slot.status);
    stats_.Record(request.op, request.op == IoOp::kFlush ? 0 : request.length_bytes,
                  static_cast<uint64_t>(now_ns - slot.submit_ns), status.ok());
    // Free the slot before the callback, which may resubmit into it.
    slot.state = SlotState::kFree;
    slot.user = nullptr;
    slot.status = Status::OK();
    free_.push_back(index);
    --in_flight_;
    request.on_complete(request, status);
    ++ran;
  }
  return ran;
}

uint32_t ThrottledDevice::Poll(uint32_t min_completions) {
  SNAPDISK_CHECK(!polling_, "Poll called from inside a completion callback");
  polling_ = true;
  const uint32_t target = std::min(min_completions, in_flight_);
  uint32_t ran = 0;
  for (;;) {
    IssueDue(clock_.NowNs());
    if (inner_outstanding_ > 0) inner_.Poll(0);
    ran += DeliverDue(clock_.NowNs());
    if (ran >= target) break;

    // Wait for the next thing that can happen: a start or completion time on
    // the clock, or the inner device finishing something.
    const int64_t now_ns = clock_.NowNs();
    int64_t next_ns = kNever;
    if (!waiting_.empty() && !inner_busy_) next_ns = slots_[waiting_.front()].start_ns;
    if (!ready_.empty()) next_ns = std::min(next_ns, slots_[ready_.front()].complete_ns);
    if (next_ns <= now_ns) continue;
    const bool inner_pending = inner_outstanding_ > 0 || inner_busy_;
    if (!inner_pending) {
      SNAPDISK_CHECK(next_ns != kNever, "ThrottledDevice: waiting with nothing in flight");
      clock_.SleepUntilNs(next_ns);
    } else if (next_ns == kNever) {
      inner_.Poll(1);
    } else {
      clock_.SleepUntilNs(std::min(next_ns, now_ns + kInnerPollIntervalNs));
    }
  }
  polling_ = false;
  return ran;
}

// ---- MeasureThroughput -------------------------------------------------------

std::string QosMeasurement::ToString() const {
  char line[320];
  std::snprintf(line, sizeof line,
                "%s %llu B QD%u for %.3f s: %llu ops, %.1f IOPS, %.2f MB/s; latency us "
                "mean=%.1f p50=%.1f p99=%.1f p99.9=%.1f max=%.1f",
                IoOpName(op), static_cast<unsigned long long>(io_bytes), queue_depth,
                static_cast<double>(elapsed_ns) / 1e9, static_cast<unsigned long long>(ops), iops,
                bytes_per_s / 1e6, latency_us_mean, latency_us_p50, latency_us_p99, latency_us_p999,
                latency_us_max);
  return line;
}

Result<QosMeasurement> MeasureThroughput(BlockDevice& device, IoOp op, uint64_t io_bytes,
                                         uint32_t queue_depth, int64_t duration_ns, uint64_t seed,
                                         Clock& clock) {
  const std::string what = std::string("measure ") + IoOpName(op) + " on " + device.name();
  if (op == IoOp::kFlush) io_bytes = 0;
  if (op != IoOp::kFlush && (io_bytes == 0 || !IsAligned(io_bytes, device.sector_size_bytes()) ||
                             io_bytes > device.size_bytes())) {
    return Status::InvalidArgument(
        what + ": I/O size " + std::to_string(io_bytes) + " is not a positive multiple of the " +
        std::to_string(device.sector_size_bytes()) + "-byte sector no larger than the device");
  }
  if (queue_depth == 0 || queue_depth > device.queue_depth()) {
    return Status::InvalidArgument(what + ": queue depth " + std::to_string(queue_depth) +
                                   " is outside 1.." + std::to_string(device.queue_depth()));
  }
  if (duration_ns <= 0) return Status::InvalidArgument(what + ": duration must be positive");

  std::mt19937_64 rng(seed);
  const uint64_t blocks = op == IoOp::kFlush ? 1 : device.size_bytes() / io_bytes;
  std::vector<std::byte> buffers(static_cast<size_t>(io_bytes) * queue_depth);
  if (op == IoOp::kWrite) {
    for (size_t i = 0; i < buffers.size(); i += 8) {
      uint64_t v = rng();
      for (size_t b = 0; b < 8 && i + b < buffers.size(); ++b) {
        buffers[i + b] = static_cast<std::byte>(v >> (8 * b));
      }
    }
  }

  std::vector<IoRequest> requests(queue_depth);
  std::vector<uint32_t> idle;
  idle.reserve(queue_depth);
  Status first_error;
  uint64_t ops = 0;
  uint64_t bytes = 0;
  uint32_t outstanding = 0;
  int64_t last_complete_ns = 0;
  for (uint32_t i = 0; i < queue_depth; ++i) {
    IoRequest& r = requests[i];
    r.op = op;
    r.length_bytes = io_bytes;
    r.data = (op == IoOp::kRead || op == IoOp::kWrite) ? buffers.data() + i * io_bytes : nullptr;
    r.user_tag = i;
    r.on_complete = [&](IoRequest& done, const Status& status) {
      --outstanding;
      last_complete_ns = clock.NowNs();
      if (status.ok()) {
        ++ops;
        bytes += done.length_bytes;
      } else if (first_error.ok()) {
        first_error = status;
      }
      idle.push_back(static_cast<uint32_t>(done.user_tag));
    };
    idle.push_back(queue_depth - 1 - i);
  }

  device.stats().Reset();
  const int64_t start_ns = clock.NowNs();
  const int64_t deadline_ns = start_ns + duration_ns;
  last_complete_ns = start_ns;
  for (;;) {
    if (first_error.ok() && clock.NowNs() < deadline_ns) {
      while (!idle.empty()) {
        IoRequest& r = requests[idle.back()];
        r.offset_bytes = op == IoOp::kFlush ? 0 : (rng() % blocks) * io_bytes;
        Status status = device.Submit(r);
        if (status.IsBusy()) {                         // someone else's requests fill the queue
          if (outstanding == 0) first_error = status;  // and none of ours will free it
          break;
        }
        if (!status.ok()) {
          first_error = status;
          break;
        }
        idle.pop_back();
        ++outstanding;
      }
    }
    if (outstanding == 0) break;
    device.Poll(1);
  }
  if (!first_error.ok()) return first_error.WithContext(what);

  QosMeasurement m;
  m.op = op;
  m.io_bytes = io_bytes;
  m.queue_depth = queue_depth;
  m.elapsed_ns = last_complete_ns - start_ns;
  m.ops = ops;
  m.bytes = bytes;
  if (m.elapsed_ns > 0) {
    const double seconds = static_cast<double>(m.elapsed_ns) / 1e9;
    m.iops = static_cast<double>(ops) / seconds;
    m.bytes_per_s = static_cast<double>(bytes) / seconds;
  }
  const OpStats s = device.stats().Snapshot().of(op);
  m.latency_us_mean = s.latency_us_mean;
  m.latency_us_p50 = s.latency_us_p50;
  m.latency_us_p99 = s.latency_us_p99;
  m.latency_us_p999 = s.latency_us_p999;
  m.latency_us_max = s.latency_us_max;
  return m;
}

}  // namespace snapdisk
