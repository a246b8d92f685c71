// The stepped jobs (backups) running in this process, so that another command
// can list and cancel them: `snapdisk backup jobs POOL` and `snapdisk backup
// cancel POOL JOB` are forwarded to the pool's server, which answers from its
// registry. The control server registers each job it takes over
// (ControlSession) and removes it when the job has finished.
//
// Thread safety: the pool's thread only (the server runs everything there).
#pragma once

#include <cstdint>
#include <functional>
#include <map>
#include <string>
#include <vector>

#include "tools/cli/command_context.h"

namespace snapdisk::cli {

struct RunningJob {
  uint64_t number = 0;       // 1, 2, ... in the order the process took them
  std::string id;            // the job's own id (a backup's set id), may be ""
  std::string command;       // the command line, e.g. "backup pool db --method full"
  int64_t started_unix_ns = 0;
  StepProgress progress;     // as of the List call
  bool cancel_requested = false;
};

class JobRegistry {
 public:
  static JobRegistry& Instance();

  // `progress` and `id` are polled by List; `cancel` is called at most once,
  // by Cancel. Returns the job's number.
  uint64_t Add(std::string command, std::function<std::string()> id,
               std::function<StepProgress()> progress, std::function<void()> cancel);
  void Remove(uint64_t number);
  std::vector<RunningJob> List() const;
  // Cancels the job whose number (as text) or id is `which`: NotFound
  // naming what is running when none matches.
  Status Cancel(const std::string& which);

 private:
  struct Entry {
    std::string command;
    int64_t started_unix_ns = 0;
    std::function<std::string()> id;
    std::function<StepProgress()> progress;
    std::function<void()> cancel;
    bool cancel_requested = false;
  };
  std::map<uint64_t, Entry> jobs_;
  uint64_t next_number_ = 1;
};

}  // namespace snapdisk::cli
