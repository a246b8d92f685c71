// Restore planning: which backup sets, in which order and which part of each,
// bring a volume back to a target — a backup set, a point in time or an LSN.
//
// A plan is built from the manifests alone (snapshot/backup_set.h); no chunk
// is read. It is a value: it can be printed (the `--plan` dry run), checked,
// and handed to restore/restore_apply.h to run.
//
// The chain (the minimal one):
//  - a snapshot set: that set alone (each snapshot manifest is a complete
//    image);
//  - a full: alone; a differential: its full, then it; an incremental: its
//    full, the differential its chain goes through (the latest at or before
//    it, if any), then the incrementals after that up to it — the sets its
//    `base` links name, each checked to follow on (same volume and lineage,
//    a diff's base a full, LSNs contiguous);
//  - a point in time T / an LSN N: the latest data backup (snapshot, full,
//    diff or incr) of the lineage whose consistent point is at or before T
//    (consistent_unix_ns <= T) / whose last_lsn <= N, with its chain as
//    above, then the log segments of the lineage from that backup's
//    last_lsn + 1 up to the segment holding T / N. Log records are applied
//    up to and including the last one at or before T (time_unix_ns <= T) /
//    with LSN <= N. A log set as the target means its last record's LSN.
//
// Lineages: LSNs count a lineage's writes, and a rollback of the source
// starts a new lineage, so a plan never crosses one. A point-in-time target
// without a lineage takes the lineage of the latest data backup at or before
// T; an LSN target without one takes the lineage of the volume's newest set.
//
// Coverage. A point in time is covered when the backups prove what the
// volume held then: a data backup consistent at T exactly, or one before T
// and then every log record up to the first record after T (or a data backup
// at or after T whose LSN shows that nothing was written in between). Errors,
// with nothing read but manifests:
//  - NotFound: no sets of the volume (or lineage); the target lies before the
//    first backup ("point in time ... is before the first backup of volume
//    'db' lineage 12 (F1, consistent at ...)"); or after the last shipped log
//    record ("... is after the last shipped log record of volume 'db' lineage
//    12 (LSN 2600 at ..., in L9)"); a backup id that is not in the store.
//  - Corruption "log gap: ..." naming the missing LSNs and the sets on both
//    sides, when the log segments that would carry the volume to the target
//    skip LSNs; "backup chain of I6 is broken: ..." when a data set's base is
//    missing or does not fit.
//  - InvalidArgument: a malformed target (no volume name, a bad id).
//
// Thread safety: pure functions of their inputs (PlanRestore reads the
// store's manifests, which any thread may do).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "disk/status.h"
#include "engine/worm_store.h"
#include "snapshot/backup_set.h"

namespace snapdisk {

struct RestoreTarget {
  enum class Kind : uint8_t { kBackup, kPointInTime, kLsn };
  Kind kind = Kind::kBackup;
  std::string backup_id;  // kBackup: e.g. "D5"
  // kPointInTime and kLsn: the source volume's name (as in the sets).
  std::string volume;
  // kPointInTime and kLsn: the lineage to restore; empty: see the file
  // comment.
  std::optional<uint64_t> lineage;
  int64_t unix_ns = 0;  // kPointInTime: ns since the Unix epoch
  uint64_t lsn = 0;     // kLsn

  static RestoreTarget Backup(std::string_view id);
  static RestoreTarget PointInTime(std::string_view volume, int64_t unix_ns,
                                   std::optional<uint64_t> lineage = {});
  static RestoreTarget Lsn(std::string_view volume, uint64_t lsn,
                           std::optional<uint64_t> lineage = {});
  // "backup D5", "point in time 2026-05-28T10:00:00Z of volume 'db'",
  // "LSN 1200 of volume 'db'" (with " lineage N" when given).
  std::string ToString() const;
};

// One set to apply, and which part of it.
struct RestoreStep {
  BackupSet set;  // the whole manifest
  // The LSNs the step brings the volume through: a data set's own range
  // (first_lsn..last_lsn); for a log segment, from the chain's position
  // (which may lie inside the segment) through the target LSN or the
  // segment's end.
  uint64_t from_lsn = 0;
  uint64_t through_lsn = 0;
  // Log segments of a point-in-time plan: records after this time are not
  // applied (the step may then end before through_lsn).
  std::optional<int64_t> stop_after_unix_ns;
  // Stored bytes of the distinct chunk objects the step fetches (for a log
  // step that stops early: at most this).
  uint64_t read_bytes = 0;
  // The bytes it carries: data sets, the sum of their extents; log segments,
  // the record stream's length.
  uint64_t data_bytes = 0;
};

struct RestorePlan {
  RestoreTarget target;
  // The source: name, volume id and lineage as recorded in the sets.
  std::string volume;
  uint64_t volume_id = 0;
  uint64_t lineage = 0;
  // The size a restored volume gets: the largest size among the steps (a
  // source grown during the chain grows the restore with it).
  uint64_t volume_size_bytes = 0;
  uint32_t block_bytes = 0;        // the source pool's block size
  std::vector<RestoreStep> steps;  // in the order to apply; steps[0] is a full or snapshot set
  // What the plan restores to. end_lsn: the LSN the volume is at afterwards
  // (for a point-in-time plan whose last step stops inside a segment: at
  // most this). end_unix_ns: the point in time the result shows (T for a
  // point-in-time target; else the consistent time or the last record's; 0
  // when an LSN plan stops inside a segment, whose record times the
  // manifests do not hold).
  uint64_t end_lsn = 0;
  int64_t end_unix_ns = 0;
  bool end_lsn_exact = true;  // false when a time stop inside a segment decides it

  uint64_t read_bytes() const;
  uint64_t data_bytes() const;
  // Human-readable, one line per step with set id, type, LSN range, times
  // and bytes; ends with totals. For the `--plan` dry run.
  std::string ToString() const;
};

// The newest point `volume` can be brought back to from `sets` (every set of
// the store, any order): an LSN target at the highest LSN that any set of
// the volume's newest lineage (that of its highest sequence) reaches, data
// set or log segment. What a disk failure leaves: restoring it loses only
// what was never shipped. NotFound when no set is of the volume. Planning it
// may still fail (a gap in the log chain: the message names it).
Result<RestoreTarget> LatestTarget(const std::vector<BackupSet>& sets, std::string_view volume);

// Plans from the manifests in `store` (ListBackupSets of the volume).
Result<RestorePlan> PlanRestore(WormStore& store, const RestoreTarget& target);

// The same over sets already read: every set of the source volume the store
// holds, in any order (sets of other volumes are ignored). For a kBackup
// target the set must be among them.
Result<RestorePlan> PlanRestoreFromSets(const std::vector<BackupSet>& sets,
                                        const RestoreTarget& target);

// "full backup F3", "differential backup D5", "incremental backup I6",
// "log backup L7", "snapshot backup S2": how messages name a set.
std::string DescribeBackupSet(const BackupSet& set);

}  // namespace snapdisk
