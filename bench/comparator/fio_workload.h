// The comparator's second foreground: a user's fio job run over NBD against
// the experiment's volume (`"workload": {"fio": "job.fio"}`), its latencies
// read from fio's own histogram log.
//
// How: the pool (a file) is served by a child `snapdisk serve` on a Unix
// socket; fio runs as a child with the user's job behind a [global] section
// that points every job at the volume (MakeFioJob); the backup runs through
// the server (`snapdisk backup ... --json`, forwarded to it over the pool's
// control socket, RunServedBackup), so it shares the server's event loop with
// fio's requests as any backup of a served pool does. fio writes a
// completion-latency histogram per job, direction and interval with
// Unix-epoch timestamps (write_hist_log, log_hist_msec, log_unix_epoch);
// ReadFioHistLogs turns them into our histograms, each tagged with the
// interval's end, so the comparator assigns them to before / during / after
// by the backup's own start and end times (from its manifest).
//
// What fio measures is fio's, not the built-in workload's: clat, from
// when fio submits a request to its completion. fio issues at its own pace
// (rate_iops, or as fast as iodepth allows), so a stalled disk delays fio's
// next submissions: a stall shows partly as fewer IOPS, and the time a
// request waited to be issued is not in the figures (unlike the open-loop
// workload's). The report says so.
//
// Costs: two child processes per experiment; the server's start (~0.1 s)
// and fio's (~0.3 s) come before the `before` phase.
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "bench/comparator/child_process.h"
#include "disk/latency_histogram.h"
#include "disk/status.h"

namespace snapdisk {

struct FioTarget {
  std::string uri;          // nbd+unix:///VOL?socket=PATH
  uint64_t size_bytes = 0;  // the span fio works over unless the job sets size
  std::string log_prefix;   // write_hist_log's prefix
  uint32_t interval_ms = 250;
};

// The job text fio runs: a [global] section for `target`, then the user's
// job. InvalidArgument, naming the line, for an option the comparator sets
// (ioengine, filename, uri, runtime, time_based, the histogram log...) or
// one that would end, delay or serialize a job on its own (number_ios,
// io_size, loops, startdelay, stonewall...), an include (it could set one
// unseen), or a line that is not an option or a section; for a job without
// a section of its own.
Result<std::string> MakeFioJob(std::string_view user_job, const FioTarget& target);

// fio 3.x's latency histogram: 1856 bins, 64 per power of two beyond the
// first 128 (FIO_IO_U_PLAT_BITS 6); bin `index`'s middle value, ns.
inline constexpr uint32_t kFioHistBins = 1856;
int64_t FioBinValueNs(uint32_t index);

// One line of a hist log: one job's one direction over one interval.
struct FioInterval {
  int64_t end_unix_ms = 0;
  LatencyHistogram latency;
};
// Parses a hist log's text ("msec, direction, block size, 1856 counts" per
// line) into `out`. Corruption naming `name` and the line otherwise.
Status ParseFioHistLog(std::string_view text, const std::string& name,
                       std::vector<FioInterval>& out);

struct FioForegroundOptions {
  std::string snapdisk_binary;  // the `snapdisk` that serves the pool
  std::string fio_binary = "fio";
  std::string pool_path;  // a pool file nobody has open
  std::string volume;
  std::string job_text;   // the user's job file's text
  uint64_t size_bytes = 0;
  std::string work_dir;   // logs of the server and fio, and fio's hist logs
  uint32_t interval_ms = 250;
};

// The server and fio, running. Destroying it kills both.
class FioForeground {
 public:
  // Starts the server and waits (up to 30 s) until it serves, then starts
  // fio. Errors name what failed with the tail of its stderr.
  static Result<std::unique_ptr<FioForeground>> Start(const FioForegroundOptions& options);
  // OK while fio and the server run; else what ended and how.
  Status Check();
  // Stops fio (SIGINT: it completes what is in flight and writes its logs)
  // and then the server (SIGTERM: it commits the pool and exits 0), and
  // returns fio's intervals. An error when either failed to stop cleanly.
  Result<std::vector<FioInterval>> Stop();
  // fio's output so far (after Stop: its whole report).
  std::string FioOutput() const;
  // `snapdisk` and the pool, for commands forwarded to the server.
  const FioForegroundOptions& options() const { return options_; }
  ~FioForeground();

 private:
  explicit FioForeground(FioForegroundOptions options) : options_(std::move(options)) {}
  std::string Tail(const std::string& path) const;

  FioForegroundOptions options_;
  std::string socket_dir_;  // a short directory in /tmp for the NBD socket
  ChildProcess server_;
  ChildProcess fio_;
};

// What a backup run through the server reports (its manifest's fields).
struct ServedBackup {
  std::string id;
  int64_t started_unix_ns = 0;
  int64_t finished_unix_ns = 0;
  uint64_t data_bytes = 0;
  uint64_t stored_bytes = 0;
};
// Runs `snapdisk backup POOL VOLUME --store STORE --method METHOD [--rate R]
// --json` while `foreground` serves the pool (the command is forwarded to
// the server) and waits for it, calling `keep_going` every 20 ms (false:
// the command gets SIGINT, which cancels the job, and Cancelled). The
// command's error (its stderr) otherwise; NotFound "...: nothing to ship"
// (exit code 3 with that text) for a log backup with nothing new.
Result<ServedBackup> RunServedBackup(const FioForeground& foreground, const std::string& store,
                                     std::string_view method, double rate_mb_per_s,
                                     const std::function<bool()>& keep_going);

}  // namespace snapdisk
