// The restore state of a volume being restored, and the rules that decide
// which backup set may be applied to it next (in the spirit of SQL Server's
// error 4305, "The log in this backup set begins at LSN ..., which is too
// recent to apply to the database").
//
// A restore target carries its state as the volume attribute
// "restore-state" (Pool::SetAttribute), JSON, committed with the data it
// describes:
//   {"format": "snapdisk-restore-state", "version": 1,
//    "state": "restoring",              // or "open"
//    "source_volume": "db", "source_volume_id": 12, "lineage": 12,
//    "lsn": 1000,                       // the last source LSN applied
//    "unix_ns": ...,                    // the source time of that point
//    "full": "F3",                      // the chain's full or snapshot set
//    "last_set": "L7", "last_data_set": "D5",
//    "volume_lsn": 9,                   // the target's own LSN after the last step
//    "log_paused": false,               // restore turned the target's log off
//    "pending": {"set": "L8", "undo_snapshot": "restore-undo-L8"},  // optional
//    "check": {"mode": "async", "state": "clean",   // optional: the last
//              "checked_bytes": 1048576, "problems": 0, "first_problem": "",
//              "error": "", "started_unix_ns": ..., "finished_unix_ns": ...}}
// "pending" is there while a step runs: the step took the engine snapshot
// `undo_snapshot` of the target first, and a step interrupted by a crash is
// rolled back to it (restore/restore_apply.h, RecoverRestoreStep). A state
// whose "full" is empty describes a target that had no chain before its
// pending first step.
// "check" is the last consistency check of the volume's data
// (restore/volume_check.h): before `open` (sync) or after it (async), or run
// again later. A state without "check" (written before checks were recorded)
// decodes with no check; builds that do not know "check" ignore it, so the
// version stays 1. A check still "running" in the attribute whose job does
// not run in this process was interrupted (a crash, a killed server):
// RestoreCheckRunning (restore/volume_check.h) tells.
//
// While the state is "restoring" the volume is write-fenced (Pool::
// kWriteFenceAttribute, set and removed with this attribute by
// restore/restore_apply.h): clients cannot write, trim or write-zeroes it
// until the restore opens; the restore's own steps write through the fence.
//
// Thread safety: pure functions; safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "disk/status.h"
#include "snapshot/backup_set.h"

namespace snapdisk {

inline constexpr char kRestoreStateAttribute[] = "restore-state";

enum class RestorePhase : uint8_t {
  kRestoring,  // more backups may be applied; not for use yet
  kOpen,       // finished: no further backups can be applied
};
// "restoring", "open".
const char* RestorePhaseName(RestorePhase phase);

// The last consistency check of a restored volume's data.
enum class RestoreCheckMode : uint8_t {
  kSync,   // before the volume opened (or run again by `restore check`)
  kAsync,  // after it opened, while clients could use it
};
enum class RestoreCheckState : uint8_t {
  kRunning,      // as recorded when it began (see RestoreCheckRunning)
  kClean,        // every mapped block read back verified
  kProblems,     // some blocks failed: `problems`, `first_problem`
  kInterrupted,  // never stored: how a "running" check no job runs is shown
  kCancelled,
  kFailed,       // the check itself could not go on: `error`
};
// "sync", "async"; "running", "clean", "problems", "interrupted",
// "cancelled", "failed".
const char* RestoreCheckModeName(RestoreCheckMode mode);
const char* RestoreCheckStateName(RestoreCheckState state);

struct RestoreCheck {
  RestoreCheckMode mode = RestoreCheckMode::kSync;
  RestoreCheckState state = RestoreCheckState::kRunning;
  uint64_t checked_bytes = 0;
  uint64_t problems = 0;       // bad blocks found
  std::string first_problem;   // e.g. "offset 20480: volume 'r': checksum mismatch at ..."
  std::string error;           // kFailed: why
  int64_t started_unix_ns = 0;
  int64_t finished_unix_ns = 0;  // 0 while running
};

// A set applied to a restored volume, with the LSNs it brought it through
// (a log segment applied in part: the part).
struct AppliedSet {
  std::string id;
  BackupType type = BackupType::kFull;
  uint64_t first_lsn = 0;
  uint64_t last_lsn = 0;
};

struct RestoreState {
  RestorePhase phase = RestorePhase::kRestoring;
  std::string source_volume;
  uint64_t source_volume_id = 0;
  uint64_t lineage = 0;
  uint64_t lsn = 0;      // the last source LSN applied
  int64_t unix_ns = 0;   // data set: its consistent time; log: the last applied record's
  std::string full;      // empty: no chain yet (only with a pending first step)
  std::string last_set;
  std::string last_data_set;
  uint64_t volume_lsn = 0;  // the target volume's own LSN when the last step finished
  bool log_paused = false;  // the target's write log is off until the restore opens
  std::string pending_set;  // a step in progress: its set and undo snapshot
  std::string undo_snapshot;
  std::optional<RestoreCheck> check;  // the last check of the data, if any
  // Every set applied since the chain's full or snapshot set, in order (the
  // seed's "view file details" of a migration): log segments that follow on
  // share one entry (id "L5..L9"), and at most 64 entries are kept (the
  // first, then the newest; `applied_omitted` counts those dropped between).
  // States written before this was recorded have none.
  std::vector<AppliedSet> applied;
  uint64_t applied_omitted = 0;
  bool instant = false;  // restored instantly (restore/lazy_restore.h)

  bool has_chain() const { return !full.empty(); }
  bool pending() const { return !pending_set.empty(); }
};

std::string EncodeRestoreState(const RestoreState& state);
// InvalidArgument naming `volume` for malformed JSON or fields.
Result<RestoreState> DecodeRestoreState(std::string_view json, std::string_view volume);

// Where an applied step of a log set may stop (ApplySet's options).
struct ApplyStop {
  std::optional<uint64_t> after_lsn;     // apply records with LSN <= this
  std::optional<int64_t> after_unix_ns;  // ... and time <= this
};

// Whether `set` may be applied now to `volume`, whose state is `state`
// (nullopt, or a state without a chain: the volume holds no restored
// backup). OK, or InvalidArgument saying why, e.g.
//   "backup F3 is a full backup; only differential, incremental or log
//    backups can be applied now"
//   "differential backup D5 cannot be applied to volume 'r': it holds no
//    restored backup; apply a full backup first"
//   "log backup L7 begins at LSN 1201, which is too recent to apply: the
//    volume is at LSN 1000; apply L6 (LSN 1001-1200) first"
//   "incremental backup I3 begins at LSN 1201, which is too recent to
//    apply: the volume is at LSN 1000; apply I2 (LSN 1001-1200) first"
//   "log backup L5 ends at LSN 900, which is too early to apply: the volume
//    is at LSN 1000"
//   "incremental backup I6 is based on I4, but the last backup applied to
//    volume 'r' is D5"
// and for an open volume, another source volume or lineage, a set already
// applied, a diff offered after other sets, a stop on a data set.
// `source_sets`: the source volume's sets in the store, to name the ones
// that cover the next LSN (may be empty: then the message says none does).
//
// The rules: a full or snapshot set only on a volume with no chain; a diff
// only directly onto its full (nothing applied after the full); an incr only
// directly onto its base (the last set applied); a log set that holds the
// next LSN (one that begins earlier is applied from the next LSN on). Diffs
// and incrs are exact only on their base's own image: they list the blocks
// whose mapping changed since the base, so a block that was a hole at both
// ends but written in between (by log records applied meanwhile) is in
// neither their extents nor their zero extents — SQL Server refuses the same
// (error 3136). A data set must not end before the volume's LSN; one ending
// at it (an empty incr) is accepted.
Status CheckApplicable(const std::optional<RestoreState>& state, std::string_view volume,
                       const BackupSet& set, const std::vector<BackupSet>& source_sets,
                       const ApplyStop& stop = {});

}  // namespace snapdisk
