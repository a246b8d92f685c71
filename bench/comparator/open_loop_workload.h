// OpenLoopWorkload: the comparator's foreground workload — requests arrive on
// a schedule, not when the previous one finished, and each latency counts from
// the request's intended start (no coordinated omission: a stalled disk, or a
// driver that did not get to submit on time, shows as latency, never as fewer
// samples).
//
// Schedule: Poisson arrivals at `iops` (exponential gaps from the seed), each
// a read with probability read_pct / 100, else a write, of block_bytes at a
// uniformly random block_bytes-aligned offset in [0, span_bytes). The same
// seed gives the same schedule. Arrivals that find no free request slot
// (max_outstanding) or a full pool (Busy) wait in a queue and are submitted
// as slots free up; their latency still counts from the intended start.
// Written data is a pattern that is never zeros (zeros would be holes).
//
// Measurement: every completion records (completion time - intended start)
// into the histogram of the second its request was due in (seconds since
// Start), together with per-second counts of reads, writes and errors; and
// into the histogram of the phase (SetPhase) current when it was due, with
// per-phase completion counts (by the phase current at completion) — phases
// can be shorter than a second (a log backup takes milliseconds).
// Percentiles come from merged histograms only (disk/latency_histogram.h).
//
// Driving: single-threaded, on the pool's thread. Issue(now) submits what is
// due and returns when the next arrival is due; the caller polls the pool
// (completions run the callbacks that record). DriveUntil is the loop the
// comparator uses: issue, poll, run a background step (a backup job), and
// sleep on the device's completion eventfd until the next arrival.
//
// Cost: O(1) per request; memory: max_outstanding buffers of block_bytes and
// a 33 KiB histogram per second run.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "disk/clock.h"
#include "disk/latency_histogram.h"
#include "disk/status.h"
#include "engine/pool.h"
#include "engine/volume.h"

namespace snapdisk {

struct ForegroundOptions {
  double iops = 3000;             // mean arrivals per second (> 0)
  double read_pct = 50;           // 0-100
  uint32_t block_bytes = 8192;    // a multiple of 512
  uint64_t span_bytes = 0;        // offsets in [0, span); >= block_bytes
  uint64_t seed = 1;
  uint32_t max_outstanding = 4096;  // request slots (buffers)
};

// Checks the options: InvalidArgument naming the field.
Status ValidateForeground(const ForegroundOptions& options);

// What one second of the workload saw: the requests due in it (counts and
// latencies), and how many requests completed in it (whenever due).
struct SecondStats {
  uint64_t reads = 0;
  uint64_t writes = 0;
  uint64_t errors = 0;
  LatencyHistogram latency;  // ns from intended start to completion
  uint64_t completed = 0;    // completions in this second
};

class OpenLoopWorkload {
 public:
  OpenLoopWorkload(Pool& pool, Volume& volume, const ForegroundOptions& options, Clock& clock);
  ~OpenLoopWorkload();
  OpenLoopWorkload(const OpenLoopWorkload&) = delete;
  OpenLoopWorkload& operator=(const OpenLoopWorkload&) = delete;

  // Starts the schedule at `now_ns` (second 0 begins there).
  void Start(int64_t now_ns);
  // Submits every arrival due at or before `now_ns`; returns when the next
  // one is due (INT64_MAX once stopped).
  int64_t Issue(int64_t now_ns);
  // No more arrivals after this; those queued are still submitted.
  void Stop() { stopped_ = true; }
  // No arrivals due at or after `ns` (a run of a fixed length: the same
  // seed then gives the same arrivals, however late the driver stops).
  void StopAt(int64_t ns) { stop_at_ns_ = ns; }
  // Stopped, nothing queued, nothing in flight.
  bool drained() const { return stopped_ && queued_.empty() && in_flight_ == 0; }

  int64_t start_ns() const { return start_ns_; }
  uint64_t arrivals() const { return arrivals_; }
  uint64_t completed() const { return completed_; }
  uint32_t in_flight() const { return in_flight_; }
  // The first request error, for the report (requests go on after one).
  const Status& first_error() const { return first_error_; }
  // Per second since Start; a second whose requests are not all complete
  // may still change.
  const std::vector<SecondStats>& seconds() const { return seconds_; }
  // Every latency recorded so far, merged.
  LatencyHistogram AllLatencies() const;
  // Phases: 0 from Start; SetPhase(p) (p < kMaxPhases) makes arrivals from
  // now on count in p. Call Issue(now) first so that arrivals due before the
  // change are made in the old phase.
  static constexpr int kMaxPhases = 4;
  void SetPhase(int phase);
  // Latencies of the requests due in `phase`, and requests completed in it.
  const LatencyHistogram& PhaseLatency(int phase) const { return phase_latency_[phase]; }
  uint64_t PhaseCompleted(int phase) const { return phase_completed_[phase]; }
  // Latencies of requests completed since the last call (for a controller
  // that reacts to the workload as it runs).
  LatencyHistogram TakeRecent();

 private:
  struct Arrival {
    int64_t intended_ns = 0;
    int phase = 0;
    bool read = true;
    uint64_t offset_bytes = 0;
  };
  struct Slot;

  void ScheduleNext();
  // Submits queued arrivals while slots and the pool take them.
  void SubmitQueued();
  void OnComplete(Slot& slot, const Status& status, bool was_in_flight);

  Pool& pool_;
  Volume& volume_;
  const ForegroundOptions options_;
  Clock& clock_;
  std::mt19937_64 rng_;
  int64_t start_ns_ = 0;
  int64_t next_ns_ = INT64_MAX;  // the next arrival's intended start
  int64_t stop_at_ns_ = INT64_MAX;
  bool started_ = false;
  bool stopped_ = false;
  std::deque<Arrival> queued_;  // due, not yet submitted
  std::vector<std::unique_ptr<Slot>> slots_;
  std::vector<Slot*> free_slots_;
  uint32_t in_flight_ = 0;
  uint64_t arrivals_ = 0;
  uint64_t completed_ = 0;
  Status first_error_;
  std::vector<SecondStats> seconds_;
  LatencyHistogram recent_;
  int phase_ = 0;
  LatencyHistogram phase_latency_[kMaxPhases];
  uint64_t phase_completed_[kMaxPhases] = {};
};

// The loop: until `until_ns` has passed and `background` (when set) says it
// is done, issues the workload's arrivals, polls the pool, and calls
// `background` (a bounded step of other work on the pool's thread: it returns
// true once finished, and is not called again). Between rounds it sleeps on
// `event_fd` (the device's completion eventfd; -1: short sleeps) and the
// pool's background_event_fd until the
// next arrival, at most 200 us while requests are in flight (the pool's QoS
// timers have no fd). `tick` (when set) runs about every 10 ms (progress,
// controllers); returning false stops the loop early with Cancelled.
struct DriveOptions {
  int64_t until_ns = 0;
  // When set: raised to the longest time between two rounds of the loop
  // that was not spent waiting (background steps, polls, the scheduler
  // taking the CPU away) — what held every request due meanwhile.
  int64_t* max_busy_gap_ns = nullptr;
  std::function<bool()> background;
  std::function<bool(int64_t now_ns)> tick;
  int event_fd = -1;
};
Status DriveUntil(Pool& pool, OpenLoopWorkload& workload, Clock& clock, const DriveOptions& options);

// Stops the workload and polls until its requests are done.
void DrainWorkload(Pool& pool, OpenLoopWorkload& workload, Clock& clock);

}  // namespace snapdisk
