// ThrottledDevice: a BlockDevice that makes any inner device perform like an
// ESSD of a given profile, by putting a QosLimiter in front of it.
//
// A submitted request reserves its tokens at once (QosLimiter::Reserve at the
// clock's now), is handed to the inner device when its start time has come
// (at Submit already, when it is not throttled), and its callback runs from a
// Poll() no earlier than its completion time (start + profile latency) and no
// earlier than the inner device finished it. So the profile's latency is a
// floor; a slow inner device adds to it. The unlimited profile adds nothing:
// requests go straight to the inner device and complete as soon as it does.
//
// Data and errors pass through unchanged; the callback gets the inner
// device's status. An inner Submit that fails (e.g. IOError from a dead
// device) completes the request with that status at its completion time; an
// inner Busy (an inner device shared with someone else) is retried.
//
// Geometry: size, sector size and queue depth are the inner device's. The
// profile's capacity is not checked against the inner size: the profile says
// how the disk performs, the inner device holds the bytes (a small
// MemoryDevice can stand in for a 100 GiB PL1 disk).
//
// Poll(n) blocks on the clock: it sleeps until the next request is due to be
// issued or completed, and while the inner device has requests outstanding it
// polls that device (blocking in it when nothing else is due, otherwise every
// kInnerPollIntervalNs). Poll(0) never blocks. With a ManualClock, "sleeping"
// advances the clock, so tests simulate seconds of I/O instantly.
//
// stats() are this device's own: submit-to-callback time on the clock, which
// includes throttling, the profile latency and the inner device's time.
// limiter().stats() are the modelled figures (see QosLimiter).
//
// Memory: every request slot is allocated at construction (queue_depth of
// them); Submit and Poll allocate nothing, except for the message of an error.
//
// Ownership: `inner`, `clock` and a borrowed `limiter` must outlive the
// device. Destroying the device with requests in flight drops them without
// callbacks (those already handed to the inner device are waited for first,
// so the inner device never calls into a destroyed object).
//
// Thread safety: as BlockDevice (one driving thread at a time); stats() and
// the limiter may be read from any thread. The inner device must not be
// driven by another thread meanwhile. No reads beside the driving thread
// (ReadConcurrent is Unsupported): they would bypass the throttle.
#pragma once

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "disk/block_device.h"
#include "disk/clock.h"
#include "disk/essd_profile.h"
#include "disk/qos_limiter.h"

namespace snapdisk {

class ThrottledDevice final : public BlockDevice {
 public:
  // How often Poll re-polls a busy inner device while waiting for a due time.
  static constexpr int64_t kInnerPollIntervalNs = 20'000;

  // With a limiter of its own for `profile`.
  ThrottledDevice(BlockDevice& inner, const EssdProfile& profile,
                  Clock& clock = SystemClock::Get());
  // With a borrowed limiter, e.g. one shared by several devices that model
  // one disk, or one the volume layer also draws from.
  ThrottledDevice(BlockDevice& inner, QosLimiter& limiter, Clock& clock = SystemClock::Get());
  ~ThrottledDevice() override;

  uint64_t size_bytes() const override { return inner_.size_bytes(); }
  uint32_t sector_size_bytes() const override { return inner_.sector_size_bytes(); }
  uint32_t queue_depth() const override { return queue_depth_; }
  uint32_t in_flight() const override { return in_flight_; }
  // "throttled (<profile description>) over <inner name>".
  std::string name() const override;
  Status Submit(IoRequest& request) override;
  uint32_t Poll(uint32_t min_completions) override;
  IoStats& stats() override { return stats_; }

  QosLimiter& limiter() { return *limiter_; }
  BlockDevice& inner() { return inner_; }

 private:
  enum class SlotState : uint8_t { kFree, kWaiting, kIssued, kReady };
  struct Slot {
    SlotState state = SlotState::kFree;
    IoRequest* user = nullptr;
    IoRequest inner;   // on_complete set once, at construction
    uint64_t seq = 0;  // submission order: breaks ties between equal times
    int64_t submit_ns = 0;
    int64_t start_ns = 0;
    int64_t complete_ns = 0;
    Status status;
  };

  void Init();
  // Hands slot `index` to the inner device; false if the inner device is Busy.
  bool Issue(uint32_t index);
  void IssueDue(int64_t now_ns);
  // Runs the callbacks of ready slots whose time has come; returns how many.
  uint32_t DeliverDue(int64_t now_ns);
  void OnInnerComplete(uint32_t index, const Status& status);
  // Min-heaps of slot indexes, by start_ns (waiting_) and complete_ns (ready_).
  bool StartsLater(uint32_t a, uint32_t b) const;
  bool CompletesLater(uint32_t a, uint32_t b) const;
  void PushWaiting(uint32_t index);
  void PushReady(uint32_t index);

  BlockDevice& inner_;
  Clock& clock_;
  std::unique_ptr<QosLimiter> owned_limiter_;
  QosLimiter* limiter_;
  const uint32_t queue_depth_;
  std::vector<Slot> slots_;
  std::vector<uint32_t> free_;     // capacity queue_depth_
  std::vector<uint32_t> waiting_;  // heap, capacity queue_depth_
  std::vector<uint32_t> ready_;    // heap, capacity queue_depth_
  uint64_t next_seq_ = 0;
  uint32_t in_flight_ = 0;          // accepted, callback not run
  uint32_t inner_outstanding_ = 0;  // handed to inner, its callback not run
  bool inner_busy_ = false;         // the last issue attempt got Busy
  bool polling_ = false;            // callbacks must not call Poll
  IoStats stats_;
};

// The result of MeasureThroughput.
struct QosMeasurement {
  IoOp op = IoOp::kRead;
  uint64_t io_bytes = 0;
  uint32_t queue_depth = 0;
  // From the first submission to the last completion (the run drains).
  int64_t elapsed_ns = 0;
  uint64_t ops = 0;
  uint64_t bytes = 0;
  double iops = 0;
  double bytes_per_s = 0;
  // Submit-to-callback latency of `op`, from the device's stats().
  double latency_us_mean = 0;
  double latency_us_p50 = 0;
  double latency_us_p99 = 0;
  double latency_us_p999 = 0;
  double latency_us_max = 0;
  // One line for humans: "write 4096 B QD32: 6800 IOPS, 27.9 MB/s, lat us ...".
  std::string ToString() const;
};

// Drives `device` with a closed loop of `op` requests of `io_bytes` each,
// `queue_depth` in flight, at random offsets aligned to `io_bytes` (uniform
// over the whole device, from a generator seeded with `seed`; write data is a
// seeded pattern), submitting for `duration_ns` of `clock` time and then
// waiting for the requests in flight. Returns the achieved rates and the
// latency percentiles. Resets device.stats() first; they hold the run's
// figures afterwards. For kFlush, io_bytes is ignored.
//
// InvalidArgument when io_bytes is 0, not a multiple of the sector size or
// larger than the device, when queue_depth is 0 or above the device's, or when
// duration_ns <= 0. The first failed request's status if any request fails
// (after draining). `clock` must be the one the device's time runs on (with
// a ManualClock, only a device that sleeps on it, like ThrottledDevice,
// makes time pass). Allocates queue_depth * io_bytes of buffers.
Result<QosMeasurement> MeasureThroughput(BlockDevice& device, IoOp op, uint64_t io_bytes,
                                         uint32_t queue_depth, int64_t duration_ns, uint64_t seed,
                                         Clock& clock = SystemClock::Get());

}  // namespace snapdisk
