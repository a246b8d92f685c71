// Restoring backup sets into volumes: copy restores that run a whole plan
// (RestoreToNewVolume, RestoreOnto) and the stepwise flow of a restore that
// stays open for more backups (ApplySet ... OpenRestoredVolume), as in SQL
// Server's RESTORE ... WITH NORECOVERY, then WITH RECOVERY.
//
// What a step writes:
//  - a full or snapshot set: its extents, and zeros everywhere else (the
//    whole volume is trimmed first, so nothing of what the volume held
//    before survives);
//  - a differential or incremental set: its zero extents (trimmed), then its
//    extents;
//  - a log segment: its records (write, trim, write-zeroes) in LSN order,
//    from the volume's LSN + 1 up to the stop (LSN and/or time) if any.
// Every chunk is read with ReadChunk, so every byte is verified against its
// content hash before it is written.
//
// The restore state (restore/restore_state.h) says where the volume is; each
// step is checked against it (CheckApplicable) before any block is written,
// and every step is atomic: it first takes an engine snapshot of the volume
// (O(1)) and commits; on any failure — a damaged chunk (Corruption naming the
// set and the chunk), a store or device error, cancellation — the volume is
// rolled back to that snapshot, so it reads exactly as before the step, and
// its state is unchanged. If the pool itself fails (a device error while
// changing metadata) the rollback happens at the next RecoverRestoreStep —
// every function here calls it first — once the pool is reopened: the last
// commit holds the undo snapshot and the pending step. (A step that had to
// grow the volume leaves it grown: volumes never shrink. The new part reads
// zeros.) Each finished step commits.
//
// Copy restores: the volume can serve its first read only when the whole
// chain is applied, so RestoreResult::first_read_ns equals complete_ns.
//
// The write fence: while its state is restoring (ApplySet, or a copy
// restore with open = false, or any step in progress) the volume carries the
// engine's write fence (Pool::kWriteFenceAttribute), set and removed in the
// same commit as the state. Clients' writes, trims and write-zeroes are then
// refused with PermissionDenied "volume 'r': write at offset O length L
// refused: the volume is being restored (apply the next backup with
// `snapdisk restore apply`, or make it live with `snapdisk restore open`)",
// whoever opens the pool (the CLI, the NBD server, the plain library), and
// after any reopen or crash. The restore's own handle is exempt
// (Volume::SetWriteFenceExempt) while a call runs. OpenRestoredVolume (and
// a copy restore that opens) lifts the fence; so does a first step rolled
// back (the volume goes back to having no state). So `import-diff` onto a
// restoring volume is refused too (its first write is; it rolls back to its
// undo snapshot): it would break the chain (ApplySet refuses a volume whose
// own LSN moved). Apply the chain, open, then import.
//
// A restore writes through the volume like any client, so a target's write
// log records the writes (an existing volume's backups then stay correct).
// A volume made by RestoreToNewVolume has its log turned off until the
// restore opens, which saves the space the log would pin.
//
// Thread safety: as the Pool (one thread at a time); chunk reads run on the
// restore's own worker threads. Pool and store must outlive the call.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "disk/clock.h"
#include "disk/essd_profile.h"
#include "disk/status.h"
#include "engine/pool.h"
#include "engine/worm_store.h"
#include "restore/restore_plan.h"
#include "restore/restore_state.h"

namespace snapdisk {

struct RestoreProgress {
  size_t step = 0;  // 1-based, of `steps`
  size_t steps = 0;
  std::string set_id;
  // Bytes of set data (extents, record streams) processed, of the total the
  // call applies (RestorePlan::data_bytes()).
  uint64_t done_bytes = 0;
  uint64_t total_bytes = 0;
  uint64_t read_bytes = 0;     // stored chunk bytes fetched from the store so far
  uint64_t written_bytes = 0;  // bytes written to the volume so far
};

struct RestoreOptions {
  // RestoreToNewVolume: the new volume's ESSD profile.
  EssdLevel profile = EssdLevel::kUnlimited;
  // RestoreToNewVolume / RestoreOnto: open the volume when the chain is
  // applied (no more backups can be applied), or leave it restoring for
  // ApplySet. ApplySet never opens (see OpenRestoredVolume).
  bool open = true;
  // RestoreOnto, and ApplySet's first step onto a volume holding no restored
  // backup: replace the volume even when it is not the backup's source (its
  // name differs and its restore state names no such source) or the restore
  // would grow it (SQL Server's WITH REPLACE). Without it such a restore is
  // refused with InvalidArgument naming the set, its source volume, the
  // target and both sizes, before anything changes. A blank volume (never
  // written, not a clone) is never refused: it holds nothing to lose.
  bool replace = false;
  // ApplySet of a log backup: where to stop.
  ApplyStop stop;
  // Chunk objects fetched and decoded at once (threads) and ahead of the
  // writer (memory: `chunks_ahead` decoded chunks). >= 1.
  uint32_t fetch_threads = 2;
  uint32_t chunks_ahead = 4;
  // Writes in flight: staging buffers (>= 2) of write_buffer_bytes (a
  // multiple of 4096), and requests (>= 1).
  uint32_t write_buffers = 8;
  uint64_t write_buffer_bytes = uint64_t{1} << 20;
  uint32_t max_writes_in_flight = 64;
  // Times the RTO figures; null: the system's monotonic clock. Must outlive
  // the call.
  Clock* clock = nullptr;
  // Called after every chunk (and about every MiB of log records) and at the
  // end of each step; return false to cancel: the step in progress is rolled
  // back and the call returns Cancelled.
  std::function<bool(const RestoreProgress&)> progress;
};

struct RestoreResult {
  std::string volume;                // the target
  std::vector<std::string> applied;  // set ids, in order
  RestoreState state;                // the volume's restore state afterwards
  // RTO figures, from the call on (clock: RestoreOptions::clock).
  int64_t first_read_ns = 0;  // until the volume could serve its first read (0: not open)
  int64_t complete_ns = 0;    // until the call finished (everything applied and committed)
  uint64_t read_bytes = 0;    // stored bytes of the chunk objects fetched from the store
  uint64_t chunks_read = 0;
  uint64_t written_bytes = 0;  // data bytes written to the volume
  uint64_t zeroed_bytes = 0;   // bytes trimmed or zeroed
};

// Creates `new_volume` (the plan's size, options.profile) and applies the
// plan. AlreadyExists when the volume exists; InvalidArgument for a bad
// profile for the size or bad options. On failure in the first step the new
// volume is deleted; in a later one it is kept, restoring, as it was before
// that step (the message says so), so ApplySet can go on from there.
Result<RestoreResult> RestoreToNewVolume(Pool& pool, WormStore& store, const RestorePlan& plan,
                                         std::string_view new_volume,
                                         const RestoreOptions& options = {});
// PlanRestore, then the above.
Result<RestoreResult> RestoreToNewVolume(Pool& pool, WormStore& store, const RestoreTarget& target,
                                         std::string_view new_volume,
                                         const RestoreOptions& options = {});

// Replaces the contents of an existing volume with the plan's (any restore
// state it had is replaced too; the volume is grown when it is smaller than
// the source, and a larger one reads zeros past the source's size). Another
// volume than the source, or a restore that grows it, needs
// options.replace (InvalidArgument otherwise). Busy,
// before anything changes, when the volume is in use (Volume::SetInUse) or
// has I/O in flight. NotFound when it does not exist. On failure the volume
// is as it was before the failed step.
Result<RestoreResult> RestoreOnto(Pool& pool, WormStore& store, const RestorePlan& plan,
                                  std::string_view volume, const RestoreOptions& options = {});
Result<RestoreResult> RestoreOnto(Pool& pool, WormStore& store, const RestoreTarget& target,
                                  std::string_view volume, const RestoreOptions& options = {});

// Applies one set to `volume` (the stepwise flow): refused with
// InvalidArgument, before any block is written, by the rules of
// CheckApplicable — and when the volume was written to since its last
// restore step (its own LSN moved). A log set stops at options.stop. Busy as
// RestoreOnto. Leaves the volume restoring.
Result<RestoreResult> ApplySet(Pool& pool, WormStore& store, std::string_view id,
                               std::string_view volume, const RestoreOptions& options = {});

// Ends a restore: the state becomes "open" (no more backups can be applied),
// the write fence goes and a write log the restore turned off is turned back
// on. The last check (RestoreState::check) is kept. No check runs here:
// restore/volume_check.h checks before (sync) or after (async).
// InvalidArgument when the volume is not being restored or is already open.
Status OpenRestoredVolume(Pool& pool, std::string_view volume);

// The volume's restore state; nullopt when it has none. InvalidArgument for
// a damaged state.
Result<std::optional<RestoreState>> GetRestoreState(Pool& pool, std::string_view volume);

// OK unless `volume` is being restored (its restore state is "restoring"):
// then PermissionDenied "volume 'r' is being restored: it cannot be ACTION
// until it is opened (`snapdisk restore open POOL r`, after the last
// `restore apply`)". For what the seed forbids on such a volume besides
// writes (the write fence): export, backup, clone, snapshot, NBD serving.
// `action`: e.g. "exported", "snapshotted". A damaged state is its error.
Status CheckNotRestoring(Pool& pool, std::string_view volume, std::string_view action);

// Rolls back a step that a crash or a pool failure interrupted (the state's
// pending step: back to its undo snapshot, which is then deleted) and
// commits. OK when nothing was pending.
Status RecoverRestoreStep(Pool& pool, std::string_view volume);

}  // namespace snapdisk
