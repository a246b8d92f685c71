// LocalExecutor: how the `snapdisk` process runs a pool command (see
// command_context.h). RunOnPool first offers the whole command line to the
// pool's server (control.h); when none listens, it opens the pool itself with
// PoolFile (Busy, naming the pid, when another process holds it), runs the
// job, and closes the pool, which commits. A job that runs as steps (a
// backup: CommandContext::RunSteps) runs to its end inside RunOnPool,
// stepped with Pool::Poll waits in between, its progress on the terminal;
// Ctrl-C cancels it.
//
// Before PoolFile::Open it checks that the path is a regular file with a
// snapdisk superblock magic where a superblock can be, so that pointing the
// CLI at some other file reports Corruption without leaving a "FILE.lock"
// beside it.
//
// Thread safety: one thread.
#pragma once

#include <string>
#include <vector>

#include "tools/cli/command_context.h"
#include "tools/cli/progress.h"

namespace snapdisk::cli {

class LocalExecutor : public Executor {
 public:
  // `argv`: the command line after the program name (sent to a server as is).
  explicit LocalExecutor(std::vector<std::string> argv) : argv_(std::move(argv)) {}

  int RunOnPool(const std::string& pool_path, const JobOptions& options,
                const PoolJob& job) override;
  int RunWithoutPool(const std::string& pool_path, const JobOptions& options,
                     const PoolJob& job) override;

  Output& output() { return out_; }

 private:
  std::vector<std::string> argv_;
  LocalOutput out_;
};

// OK when `path` looks like a pool file (a regular file with the superblock
// magic in slot A or in slot B for some block size); NotFound when it does
// not exist; InvalidArgument when it is not a regular file; Corruption
// otherwise. Reads at most a few bytes at six offsets.
Status CheckLooksLikePool(const std::string& path);

}  // namespace snapdisk::cli
