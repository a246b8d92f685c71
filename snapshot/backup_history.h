// The task history of a volume's backups: every backup job that ended —
// done, failed or cancelled, run by hand or by a policy — with its times,
// bytes and result, kept with the volume (a volume attribute,
// "backup-history"), so it survives restarts (`snapdisk backup history`, the
// seed's task list: "set Task type to Manual backup to view the backup
// progress").
//
// BackupJob records its own end (snapshot/backup.h). A backup refused before
// it started (bad input, a busy or restoring volume, nothing to ship) is no
// task and changes nothing, the history included.
//
// Bounded: the newest kBackupHistoryLimit tasks of a volume are kept, as
// many as fit 60 KiB (older ones are dropped; ~250 bytes each, an error's
// message cut at 512). Deleting the volume deletes its history.
//
// Thread safety: as the Pool (its thread only).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "disk/status.h"
#include "engine/pool.h"

namespace snapdisk {

inline constexpr char kBackupHistoryAttribute[] = "backup-history";
inline constexpr size_t kBackupHistoryLimit = 200;

struct BackupTask {
  std::string volume;
  std::string trigger = "manual";  // "manual" or "policy"
  // The set's type (BackupTypeName: "snapshot", "full", "diff", "incr",
  // "log") when it made one, else the method asked (BackupMethodName, e.g.
  // "auto").
  std::string method;
  std::string set_id;              // empty when no set was made
  int64_t started_unix_ns = 0;
  int64_t finished_unix_ns = 0;
  uint64_t data_bytes = 0;    // of the set (0 without one)
  uint64_t stored_bytes = 0;  // new bytes in the store
  std::string result;         // "done", "failed", "cancelled", "nothing to ship"
  std::string error;          // the failure's message, else empty
};

// Appends `task` to its volume's history (dropping the oldest past the
// limit). Durable at the pool's next commit. NotFound when the volume is
// gone; InvalidArgument for a task without a volume.
Status RecordBackupTask(Pool& pool, const BackupTask& task);

// The history of `volume`, or of every volume when empty, oldest first (by
// finish time). A damaged history is Corruption naming the volume.
Result<std::vector<BackupTask>> BackupHistory(Pool& pool, std::string_view volume = {});

}  // namespace snapdisk
