// Checking one volume's data while it stays in use, in bounded steps — and
// the consistency check of a restored volume (`snapdisk restore open
// --check sync|async`, `snapdisk restore check`), whose result is recorded
// in the volume's restore state (restore/restore_state.h, "check").
//
// VolumeCheck reads every mapped block of the live volume (the engine
// verifies each block's checksum on read; engine/volume.h) and reports the
// volume offset of each block that fails, like Fsck::Scrub does for a whole
// pool. It runs as steps: a first pass maps the volume (Volume::MapExtents,
// one window per step) to learn the total, then each Step() submits reads of
// at most `slice_bytes` and returns without waiting for them; their
// completions run at the caller's Pool::Poll. So a step never waits for
// volume I/O, and clients of the volume (NBD, the library) are served
// between steps and alongside the reads.
//
// Clients may write, trim and write-zeroes the volume while it runs. The
// check reads the volume as it is when each read runs, never an older image,
// so a block a client replaced is checked in its new version (or not at all
// when the client got there first) and its old data needs no check. A read
// that fails is split into single blocks, and a block is reported only when
// it fails a second, later read too: a bad block stays bad until something
// writes it, so a problem is never reported because of a concurrent write or
// trim (nor for a transient device error). Read errors other than checksum
// mismatches (IOError) count as problems ("read error"), as in a scrub.
// Blocks written after the map pass are checked when their window is read;
// totals are estimates when clients write meanwhile.
//
// While it runs the check marks the volume in use (Volume::SetInUse): delete,
// rollback and restores onto it are Busy, so the volume stays what is being
// checked. Its reads count in the volume's I/O figures and go through its
// QoS limits, like a client's; `rate_mb_per_s` caps them further.
//
// Thread safety: everything runs on the pool's thread, except Cancel() and
// progress(), which any thread may call. The pool must outlive the job.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "disk/clock.h"
#include "disk/status.h"
#include "engine/pool.h"
#include "restore/restore_state.h"

namespace snapdisk {

struct VolumeCheckOptions {
  // Bytes of reads one Step() submits at most (>= one block).
  uint64_t slice_bytes = uint64_t{4} << 20;
  // Bytes per read request (>= one block) and reads in flight at once (>= 1).
  // Memory: max_reads_in_flight x read_bytes of buffers.
  uint64_t read_bytes = uint64_t{256} << 10;
  uint32_t max_reads_in_flight = 8;
  // The volume range mapped at once (>= one block): bounds a step's map walk
  // (O(mapped blocks in it)) and the extent list held (O(runs in it)).
  uint64_t map_window_bytes = uint64_t{64} << 20;
  // Read rate cap in 10^6 bytes/s; 0: as fast as the pool allows.
  double rate_mb_per_s = 0;
  // Problems kept with their offsets (the count goes on beyond).
  size_t max_problems_kept = 1000;
  // Times the rate cap and the figures; null: the system's monotonic clock.
  // Must outlive the job.
  Clock* clock = nullptr;
};

struct VolumeCheckProblem {
  uint64_t offset_bytes = 0;  // of the bad block, in the volume
  std::string detail;         // the read's error, e.g. "volume 'r': checksum mismatch at ..."
};

enum class VolumeCheckState : uint8_t { kRunning, kClean, kProblems, kCancelled, kFailed };

struct VolumeCheckProgress {
  std::string volume;
  VolumeCheckState state = VolumeCheckState::kRunning;
  bool mapping = true;         // still in the map pass (total_bytes not known yet)
  uint64_t total_bytes = 0;    // mapped bytes found by the map pass (an estimate)
  uint64_t checked_bytes = 0;  // bytes read back (good or bad)
  uint64_t problems = 0;
  double elapsed_s = 0;
  double rate_bytes_per_s = 0;  // checked_bytes over elapsed_s
};

class VolumeCheck {
 public:
  // Begins checking `volume` (no I/O yet). NotFound; InvalidArgument (bad
  // options); Busy when the volume is hydrating (its pending blocks are not
  // in the pool yet; check it once hydrated).
  static Result<std::unique_ptr<VolumeCheck>> Start(Pool& pool, std::string_view volume,
                                                    const VolumeCheckOptions& options = {});
  // Waits (polling the pool) for reads still in flight, then lets the volume go.
  ~VolumeCheck();
  VolumeCheck(const VolumeCheck&) = delete;
  VolumeCheck& operator=(const VolumeCheck&) = delete;

  // One bounded slice (see the file comment); true once finished. Never
  // waits for I/O: drive Pool::Poll between steps.
  bool Step();
  // Steps to the end, polling the pool in between; calls `progress` about
  // every 100 ms (false cancels).
  Status Run(const std::function<bool(const VolumeCheckProgress&)>& progress = {});
  // Between two steps (what Run does): polls the pool for a completion when
  // requests are in flight, else sleeps while the rate cap says wait.
  void WaitForWork();
  // Stops at the next Step (reads in flight finish first); any thread.
  void Cancel() { cancel_requested_.store(true); }

  // Once finished: OK when the check ran to its end (clean or not: see
  // problems()); Cancelled; the error that stopped it (the pool failed, the
  // volume went away).
  const Status& result() const { return result_; }
  VolumeCheckProgress progress() const;
  const std::vector<VolumeCheckProblem>& problems() const { return problems_; }
  uint64_t problem_count() const { return problem_count_.load(); }
  const std::string& volume() const { return volume_; }

 private:
  struct Piece {
    uint64_t offset_bytes = 0;
    uint64_t length_bytes = 0;
    int attempt = 0;  // 0: first read; 1: one block after a failed read; 2: its confirmation
  };
  struct Read;
  VolumeCheck(Pool& pool, std::string volume, uint64_t volume_id, Volume* handle,
              const VolumeCheckOptions& options);
  // The handle, unless the volume went away (then the error).
  Result<Volume*> Handle();
  Status MapNextWindow(bool counting);
  Status SubmitReads();
  void OnRead(Read& read, const Status& status);
  void Finish(VolumeCheckState state, Status status);

  Pool& pool_;
  const std::string volume_;
  const uint64_t volume_id_;
  Volume* handle_;
  const VolumeCheckOptions options_;
  Clock& clock_;
  const uint32_t block_bytes_;
  const int64_t started_ns_;
  bool counting_ = true;          // the map pass
  uint64_t cursor_bytes_ = 0;     // the next window starts here
  std::deque<Piece> queue_;       // data ranges of the mapped window, to read
  std::deque<Piece> retries_;     // single blocks to read again
  std::vector<std::unique_ptr<Read>> reads_;  // max_reads_in_flight slots
  std::vector<Read*> free_reads_;
  uint32_t in_flight_ = 0;
  int64_t next_read_ns_ = 0;      // the rate cap's next slot
  std::vector<VolumeCheckProblem> problems_;
  bool finished_ = false;
  bool cancelling_ = false;
  Status error_;                  // the first error that stops the check
  Status result_;
  std::atomic<bool> cancel_requested_{false};
  // For progress() from any thread.
  std::atomic<VolumeCheckState> state_{VolumeCheckState::kRunning};
  std::atomic<bool> mapping_{true};
  std::atomic<uint64_t> total_bytes_{0};
  std::atomic<uint64_t> checked_bytes_{0};
  std::atomic<uint64_t> problem_count_{0};
  std::atomic<int64_t> finished_ns_{0};
};

// ---- The check of a restored volume ----------------------------------------

// A VolumeCheck of a volume that has a restore state (open or restoring),
// whose result goes into that state (RestoreState::check) and is committed:
// "running" when it starts, then "clean", "problems", "cancelled" or
// "failed" when it ends. A crash or a killed process leaves "running"
// behind: RestoreCheckRunning then says no job runs it, and `restore status`
// shows it "interrupted"; a new check replaces it. The result is recorded
// only while the state is still the one the check began on (a restore step
// applied meanwhile clears it, and is refused anyway while the check holds
// the volume in use).
class RestoreCheckJob {
 public:
  // Rolls back an interrupted restore step first (RecoverRestoreStep), then
  // records the check "running" (mode `mode`) and commits. InvalidArgument
  // when the volume has no restore state (it was not restored: `snapdisk
  // pool scrub` checks any volume); Busy when a check of it already runs in
  // this process; VolumeCheck::Start's errors.
  static Result<std::unique_ptr<RestoreCheckJob>> Start(Pool& pool, std::string_view volume,
                                                        RestoreCheckMode mode,
                                                        const VolumeCheckOptions& options = {});
  // A job destroyed before it finished records nothing (it shows as
  // interrupted, as after a crash).
  ~RestoreCheckJob();
  RestoreCheckJob(const RestoreCheckJob&) = delete;
  RestoreCheckJob& operator=(const RestoreCheckJob&) = delete;

  // VolumeCheck::Step; the step that finishes records the result and commits
  // (a failure to record becomes result()).
  bool Step();
  Status Run(const std::function<bool(const VolumeCheckProgress&)>& progress = {});
  void Cancel() { check_->Cancel(); }

  // Once finished: OK when the check ran to its end (see record()).
  const Status& result() const { return result_; }
  // What is (or will be) recorded: state running until the job finished.
  const RestoreCheck& record() const { return record_; }
  VolumeCheckProgress progress() const { return check_->progress(); }
  const std::vector<VolumeCheckProblem>& problems() const { return check_->problems(); }
  const std::string& volume() const { return check_->volume(); }

 private:
  RestoreCheckJob(Pool& pool, std::unique_ptr<VolumeCheck> check, uint64_t volume_id,
                  RestoreCheck record);
  Status Record();

  Pool& pool_;
  std::unique_ptr<VolumeCheck> check_;
  const uint64_t volume_id_;
  RestoreCheck record_;
  Status result_;
  bool finished_ = false;
};

// True while a RestoreCheckJob of `volume` runs in this process on `pool`.
// A recorded "running" check for which this is false was interrupted.
bool RestoreCheckRunning(const Pool& pool, std::string_view volume);

// The check as `restore status` shows it: a recorded "running" check that no
// job of this process runs is kInterrupted.
RestoreCheck ShownRestoreCheck(const Pool& pool, std::string_view volume,
                               const RestoreCheck& recorded);

}  // namespace snapdisk
