#include "bench/comparator/open_loop_workload.h"

#include <poll.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstring>

#include "disk/bytes.h"
#include "disk/check.h"
#include "engine/aligned_buffer.h"

namespace snapdisk {

namespace {

constexpr int64_t kNsPerSecond = 1'000'000'000;
constexpr int64_t kSpinNs = 250'000;

size_t SecondOf(int64_t since_start_ns) {
  return static_cast<size_t>(std::max<int64_t>(0, since_start_ns) / kNsPerSecond);
}

}  // namespace

struct OpenLoopWorkload::Slot {
  VolumeRequest request;
  Arrival arrival;
  AlignedBuffer buffer;  // aligned: the pool may run on an O_DIRECT device
};

Status ValidateForeground(const ForegroundOptions& o) {
  if (!(o.iops > 0) || !std::isfinite(o.iops) || o.iops > 10'000'000) {
    return Status::InvalidArgument("foreground iops must be > 0 and at most 10000000 (got " +
                                   std::to_string(o.iops) + ")");
  }
  if (!(o.read_pct >= 0 && o.read_pct <= 100)) {
    return Status::InvalidArgument("foreground read_pct must be 0-100 (got " +
                                   std::to_string(o.read_pct) + ")");
  }
  if (o.block_bytes == 0 || o.block_bytes % 512 != 0 || o.block_bytes > (uint32_t{16} << 20)) {
    return Status::InvalidArgument("foreground block_size must be a multiple of 512 up to 16 MiB (got " +
                                   std::to_string(o.block_bytes) + ")");
  }
  if (o.span_bytes < o.block_bytes) {
    return Status::InvalidArgument("foreground span (" + HumanBytes(o.span_bytes) +
                                   ") is smaller than its block size");
  }
  if (o.max_outstanding == 0) return Status::InvalidArgument("foreground max_outstanding must be >= 1");
  return Status::OK();
}

OpenLoopWorkload::OpenLoopWorkload(Pool& pool, Volume& volume, const ForegroundOptions& options,
                                   Clock& clock)
    : pool_(pool), volume_(volume), options_(options), clock_(clock), rng_(options.seed) {}

OpenLoopWorkload::~OpenLoopWorkload() {
  // Callbacks point into the slots: never leave requests behind.
  while (in_flight_ > 0) pool_.Poll(1);
}

void OpenLoopWorkload::Start(int64_t now_ns) {
  start_ns_ = now_ns;
  next_ns_ = now_ns;
  started_ = true;
  ScheduleNext();
}

void OpenLoopWorkload::ScheduleNext() {
  // Exponential gap: -ln(1 - u) / rate, u in [0, 1).
  const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng_);
  next_ns_ += static_cast<int64_t>(-std::log1p(-u) / options_.iops * 1e9);
}

int64_t OpenLoopWorkload::Issue(int64_t now_ns) {
  if (!started_) return INT64_MAX;
  const uint64_t blocks = options_.span_bytes / options_.block_bytes;
  while (!stopped_ && next_ns_ <= now_ns) {
    if (next_ns_ >= stop_at_ns_) {
      stopped_ = true;
      break;
    }
    Arrival a;
    a.intended_ns = next_ns_;
    a.phase = phase_;
    a.read = std::uniform_real_distribution<double>(0.0, 100.0)(rng_) < options_.read_pct;
    a.offset_bytes = std::uniform_int_distribution<uint64_t>(0, blocks - 1)(rng_) * options_.block_bytes;
    queued_.push_back(a);
    ++arrivals_;
    ScheduleNext();
  }
  SubmitQueued();
  return stopped_ ? INT64_MAX : next_ns_;
}

void OpenLoopWorkload::SubmitQueued() {
  while (!queued_.empty()) {
    Slot* slot = nullptr;
    if (!free_slots_.empty()) {
      slot = free_slots_.back();
    } else if (slots_.size() < options_.max_outstanding) {
      slots_.push_back(std::make_unique<Slot>());
      slot = slots_.back().get();
      slot->buffer = AlignedBuffer(options_.block_bytes);
      free_slots_.push_back(slot);
    } else {
      return;
    }
    slot->arrival = queued_.front();
    VolumeRequest& r = slot->request;
    r = VolumeRequest{};
    r.op = slot->arrival.read ? VolumeOp::kRead : VolumeOp::kWrite;
    r.offset_bytes = slot->arrival.offset_bytes;
    r.length_bytes = options_.block_bytes;
    r.data = slot->buffer.data();
    if (!slot->arrival.read) {
      // Never zeros, different every time: the intended start in every 64 bytes.
      const uint64_t stamp = static_cast<uint64_t>(slot->arrival.intended_ns) | 1;
      for (size_t i = 0; i + sizeof stamp <= slot->buffer.size(); i += 64) {
        std::memcpy(slot->buffer.data() + i, &stamp, sizeof stamp);
      }
    }
    r.on_complete = [this, slot](VolumeRequest&, const Status& s) { OnComplete(*slot, s, true); };
    const Status s = volume_.Submit(r);
    if (s.IsBusy()) return;  // the pool's request limit: after the next Poll
    free_slots_.pop_back();
    queued_.pop_front();
    if (!s.ok()) {  // refused at once: counted as an error that took no time
      OnComplete(*slot, s, false);
      continue;
    }
    ++in_flight_;
  }
}

void OpenLoopWorkload::OnComplete(Slot& slot, const Status& status, bool was_in_flight) {
  const int64_t now = clock_.NowNs();
  if (was_in_flight) --in_flight_;
  ++completed_;
  const size_t second = SecondOf(slot.arrival.intended_ns - start_ns_);
  const size_t done_second = SecondOf(now - start_ns_);
  if (seconds_.size() <= std::max(second, done_second)) seconds_.resize(std::max(second, done_second) + 1);
  ++seconds_[done_second].completed;
  ++phase_completed_[phase_];
  SecondStats& st = seconds_[second];
  if (!status.ok()) {
    ++st.errors;
    if (first_error_.ok()) first_error_ = status;
  } else {
    (slot.arrival.read ? st.reads : st.writes) += 1;
    const int64_t latency = now - slot.arrival.intended_ns;
    st.latency.Record(latency);
    phase_latency_[slot.arrival.phase].Record(latency);
    recent_.Record(latency);
  }
  free_slots_.push_back(&slot);
}

LatencyHistogram OpenLoopWorkload::AllLatencies() const {
  LatencyHistogram h;
  for (const SecondStats& second : seconds_) h.Merge(second.latency);
  return h;
}

void OpenLoopWorkload::SetPhase(int phase) {
  SNAPDISK_CHECK(phase >= 0 && phase < kMaxPhases, "workload phase out of range");
  phase_ = phase;
}

LatencyHistogram OpenLoopWorkload::TakeRecent() {
  LatencyHistogram out;
  std::swap(out, recent_);
  return out;
}

Status DriveUntil(Pool& pool, OpenLoopWorkload& workload, Clock& clock, const DriveOptions& options) {
  // Wake-ups to the microsecond (the default slack is 50 us, a quarter of an
  // ESSD's latency): a late wake-up would count in every latency measured.
  (void)::prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
  bool background_done = !options.background;
  int64_t next_tick = 0;
  // The previous round's start and how long it meant to sleep: a round that
  // took longer than that was busy (or lost the CPU) for the difference.
  int64_t round_start = clock.NowNs();
  int64_t planned_sleep = 0;
  while (true) {
    const int64_t now = clock.NowNs();
    if (options.max_busy_gap_ns != nullptr) {
      *options.max_busy_gap_ns = std::max(*options.max_busy_gap_ns, now - round_start - planned_sleep);
    }
    round_start = now;
    planned_sleep = 0;
    const int64_t next_arrival = workload.Issue(now);
    pool.Poll(0);
    if (!background_done) background_done = options.background();
    if (options.tick && now >= next_tick) {
      next_tick = now + 10'000'000;
      if (!options.tick(now)) return Status::Cancelled("stopped");
    }
    if (now >= options.until_ns && background_done) return Status::OK();
    if (!pool.health().ok()) return pool.health();
    // Sleep until the next arrival, QoS timer or device completion; a
    // background step waits at most 200 us.
    int64_t wait_ns = std::min({next_arrival, options.until_ns, pool.NextTimerNs()}) - clock.NowNs();
    if (!background_done) wait_ns = std::min<int64_t>(wait_ns, 200'000);
    // The last 250 us are spun, not slept: a wake-up from ppoll takes ~100
    // us on a VM, which would count in every latency of an idle phase and
    // not of a busy one (whose loop rarely sleeps), biasing the comparison.
    wait_ns -= kSpinNs;
    if (wait_ns <= 0) continue;
    planned_sleep = clock.NowNs() - now + wait_ns;
    if (options.event_fd >= 0) {
      // The device's completions, and the pool's work off its thread (its
      // fd is reset by the Poll that takes the work).
      pollfd pfd[2] = {{options.event_fd, POLLIN, 0}, {pool.background_event_fd(), POLLIN, 0}};
      const timespec ts{static_cast<time_t>(wait_ns / 1'000'000'000), static_cast<long>(wait_ns % 1'000'000'000)};
      if (::ppoll(pfd, 2, &ts, nullptr) > 0 && (pfd[0].revents & POLLIN) != 0) {
        uint64_t value;
        (void)!::read(options.event_fd, &value, sizeof value);
      }
    } else {
      planned_sleep = clock.NowNs() - now + std::min<int64_t>(wait_ns, 50'000);
      clock.SleepUntilNs(clock.NowNs() + std::min<int64_t>(wait_ns, 50'000));
    }
  }
}

void DrainWorkload(Pool& pool, OpenLoopWorkload& workload, Clock& clock) {
  workload.Stop();
  while (!workload.drained()) {
    workload.Issue(clock.NowNs());
    pool.Poll(workload.in_flight() > 0 ? 1 : 0);
  }
}

}  // namespace snapdisk
