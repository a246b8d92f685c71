// HydrationFetcher: reads of a hydrating volume's source off the pool's
// thread (engine-internal; the contract users see is in engine/pool.h,
// "Hydration").
//
// A read of a pending block needs the source's bytes, and a source may take
// milliseconds (a chunk fetched from a store and decoded). Done on the pool's
// thread, that holds every other request of the pool, including reads of
// blocks already filled. Instead the pool hands the fetch to this helper: one
// background thread asks the source what comes with the block
// (HydrationSource::FetchedWith) and reads those ranges; the pool parks the
// read, keeps serving everything else, and when the result is taken
// (TakeDone, on the pool's thread) fills the ranges into the volume and
// starts the parked reads again.
//
// The background thread calls the source while the pool's thread may call it
// too (HydrateStep, partial writes): only sources that say they are
// thread-safe (HydrationSource::background_fetch) come here. A fetch reads at
// most kMaxFetchBytes; what a source names beyond that is left to the fill.
//
// Cost: one thread, started at the first fetch; memory: the bytes of the
// fetches not yet taken. event_fd() becomes readable when a result is ready
// (for a caller's epoll; the pool's blocking Poll waits with WaitDone).
// Thread safety: Start, TakeDone, WaitDone, in_flight and the destructor on
// the pool's thread; the destructor waits for the fetch under way.
#pragma once

#include <condition_variable>
#include <cstdint>
#include <deque>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#include "disk/status.h"
#include "engine/aligned_buffer.h"
#include "engine/hydration.h"

namespace snapdisk {

class HydrationFetcher {
 public:
  static constexpr uint64_t kMaxFetchBytes = uint64_t{32} << 20;

  struct Task {
    uint64_t id = 0;  // the caller's, returned with the result
    uint64_t volume_id = 0;
    uint64_t volume_bytes = 0;  // reads stop at the volume's end
    uint32_t block_bytes = 0;
    // The pending blocks a read needs: [vbn, end_vbn). The fetch brings the
    // source's fetch units that hold `vbn` (HydrationSource::FetchedWith),
    // or these blocks when no unit holds it.
    uint64_t vbn = 0;
    uint64_t end_vbn = 0;
    std::shared_ptr<HydrationSource> source;
  };
  // A run of whole blocks and the source's bytes for them (the part of a
  // last block beyond the volume's end is zeros).
  struct Run {
    uint64_t first_vbn = 0;
    uint64_t blocks = 0;
    AlignedBuffer data;
  };
  struct Result {
    uint64_t id = 0;
    uint64_t volume_id = 0;
    Status status;          // an error: the source failed (the runs are empty)
    std::vector<Run> runs;  // include `vbn` when the status is OK
  };

  HydrationFetcher();
  ~HydrationFetcher();
  HydrationFetcher(const HydrationFetcher&) = delete;
  HydrationFetcher& operator=(const HydrationFetcher&) = delete;

  void Start(Task task);
  // Results ready now, in the order their tasks started.
  std::vector<Result> TakeDone();
  // Blocks until a result is ready (returns at once if one is, or if no task
  // is in flight).
  void WaitDone();
  // Tasks started whose results were not taken yet.
  size_t in_flight() const { return in_flight_; }
  int event_fd() const { return event_fd_; }

 private:
  void Loop();
  Result Fetch(const Task& task);

  int event_fd_ = -1;
  size_t in_flight_ = 0;  // the pool's thread only
  std::mutex mutex_;  // guards what follows
  std::condition_variable wake_;
  std::deque<Task> tasks_;
  std::vector<Result> done_;
  bool stop_ = false;
  std::thread thread_;  // started at the first Start
  // The background thread's: runs fetched lately (volume id, first, end). A
  // task for a block in one of them fetches nothing — the earlier result,
  // taken first, filled it (or its read finds out synchronously).
  struct Fetched {
    uint64_t volume_id, first_vbn, end_vbn;
  };
  std::deque<Fetched> recent_;
};

}  // namespace snapdisk
