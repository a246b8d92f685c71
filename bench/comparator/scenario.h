// Scenario: what one comparator run measures (`snapdisk compare --scenario
// FILE`). A JSON object; every key is optional and the defaults are the
// built-in run (at most 5 minutes on a 2-core machine; Quick(): at most 60 s).
//
//   profile          "PL0".."PL3" or "unlimited"          the volumes' ESSD profile
//   volume_size      size ("100G") or bytes               nominal size: sets the QoS
//   written          [size, ...] ascending                data written; the backup
//                                                         experiments use the first,
//                                                         the RTO sweep every one
//   foreground       {iops, read_pct, block_size,         the open-loop workload
//                     seconds_before, seconds_after}
//   methods          ["snapshot", "snapshot-next", "full", "diff", "incr", "log",
//                     "full-throttled", "full-adaptive"]  backups to compare
//   rate             MB/s (10^6 bytes/s) > 0              full-throttled's cap
//   p99_target       microseconds, or 0                   full-adaptive's target for
//                                                         the foreground p99 (0: 1.15x
//                                                         the p99 before the backup)
//   log_frequencies  ["5m", "30m", "data"]                the RPO experiment's runs
//   rpo_hours        simulated hours per RPO run (> 0)
//   rpo_failures     disk failures per RPO run (1-100)
//   seed             unsigned integer                     workload, data, failures
//   store            "memory" or "directory"              where the backup experiments'
//                                                         sets go (default memory: kept
//                                                         out of the host's file system,
//                                                         like the in-memory pool;
//                                                         directory with workload.fio)
//   workload         {"fio": "job.fio"}                   the backup experiments' foreground:
//                                                         this fio job over NBD instead of
//                                                         the built-in workload (fio_workload.h);
//                                                         without `methods`, full-adaptive is
//                                                         left out, and listing it is refused
//
// ParseScenario refuses an unknown key, a value of the wrong type or out of
// range with InvalidArgument naming the key (e.g. "foreground.iops") and the
// value; nothing else is checked later, so a parsed scenario runs.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "disk/essd_profile.h"
#include "disk/status.h"

namespace snapdisk {

// The backups compared, in report order.
enum class CompareMethod : uint8_t {
  kSnapshot,       // the first snapshot backup of the volume (copies everything)
  kSnapshotNext,   // a following one (incremental forever: copies the changes)
  kFull,           // physical full, as fast as the volume's QoS allows
  kDiff,           // physical differential (changes since the full)
  kIncr,           // physical incremental (changes since the last backup)
  kLog,            // log backup (the writes since the last backup)
  kFullThrottled,  // physical full capped at `rate`
  kFullAdaptive,   // physical full paced by the foreground's p99
};
const char* CompareMethodName(CompareMethod method);
Result<CompareMethod> ParseCompareMethod(std::string_view name);
std::vector<CompareMethod> AllCompareMethods();

struct ForegroundSpec {
  double iops = 3000;
  double read_pct = 50;
  uint32_t block_bytes = 8192;
  double seconds_before = 4;
  double seconds_after = 4;
};

// Where the backup experiments put their sets: a MemoryWormStore (the store's
// work is the worker threads' CPU only: OSS is other machines) or a directory
// store in the run's scratch folder (fsync per object: the host's kernel
// work, journal commits and writeback, shares the cores with the disk's
// engine and shows in the foreground's latency).
enum class BackupStoreChoice : uint8_t { kMemory, kDirectory };
const char* BackupStoreChoiceName(BackupStoreChoice c);

// RPO log frequencies: every 5 or 30 minutes, or only with data backups.
enum class LogFrequencyChoice : uint8_t { k5m, k30m, kData };
const char* LogFrequencyChoiceName(LogFrequencyChoice f);

struct Scenario {
  EssdLevel profile = EssdLevel::kPL1;
  uint64_t volume_size_bytes = uint64_t{100} << 30;
  std::vector<uint64_t> written = {uint64_t{256} << 20, uint64_t{1} << 30, uint64_t{2} << 30};
  ForegroundSpec foreground;
  std::vector<CompareMethod> methods = AllCompareMethods();
  double rate_mb_per_s = 40;
  double p99_target_us = 0;
  std::vector<LogFrequencyChoice> log_frequencies = {LogFrequencyChoice::k5m,
                                                      LogFrequencyChoice::k30m,
                                                      LogFrequencyChoice::kData};
  double rpo_hours = 72;
  uint32_t rpo_failures = 4;
  uint64_t seed = 1;
  BackupStoreChoice backup_store = BackupStoreChoice::kMemory;
  // workload.fio: a fio job file run over NBD as the backups' foreground
  // (empty: the built-in open-loop workload). The path as the file gives it;
  // `snapdisk compare` resolves it against the scenario file's folder.
  std::string fio_job;

  // The --quick run: smaller sizes, shorter phases, fewer simulated hours.
  static Scenario Quick();
};

// Parses a scenario file's text over `base` (the defaults, or Quick()):
// keys present replace base's values. InvalidArgument naming the key and
// the value for anything wrong (see the file comment).
Result<Scenario> ParseScenario(std::string_view json_text, const Scenario& base = Scenario());

}  // namespace snapdisk
