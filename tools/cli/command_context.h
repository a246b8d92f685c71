// The command layer: each pool command is written once, as a job that runs
// against a `Pool&` and writes everything it reports to an `Output`, and an
// `Executor` decides where the job runs:
//
//   - LocalExecutor (local_executor.h, the `snapdisk` process): hands the
//     whole command line to the pool's server when one is listening on the
//     control socket (control.h) and relays its reply; otherwise opens the
//     pool with PoolFile, runs the job, closes (commits) the pool.
//   - The control server (control.cc): runs the job against the pool the
//     server already holds, capturing what it prints into the reply.
//
// So `snapshot create` is the same code whether it runs in the CLI process
// or inside `snapdisk serve`; only the Output and the Pool differ.
//
// Thread safety: a context and an executor belong to one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <string>
#include <string_view>

#include "disk/status.h"
#include "engine/pool.h"

namespace snapdisk::cli {

enum class ProgressUnit : uint8_t { kBytes, kBlocks };

// Where a command's output goes. Stdout/Stderr take whole lines (ending in
// '\n'). Progress reports long work: `done` of `total` (total 0: unknown);
// ProgressEnd says the work is over (clears a progress bar). Cancelled() is
// true once the user asked to stop (Ctrl-C locally; the client hanging up on
// the server); long jobs poll it and undo what they started. Locally, the
// first call arms the SIGINT/SIGTERM handler, so commands that never poll it
// die on Ctrl-C as usual.
class Output {
 public:
  virtual ~Output() = default;
  virtual void Stdout(std::string_view text) = 0;
  virtual void Stderr(std::string_view text) = 0;
  virtual void Progress(std::string_view label, uint64_t done, uint64_t total,
                        ProgressUnit unit) = 0;
  virtual void ProgressEnd() = 0;
  virtual bool Cancelled() { return false; }
};

// What a job gets. `pool` is null only for jobs run without a pool (pool
// create) and while an executor reports that a pool could not be opened.
class CommandContext {
 public:
  CommandContext(Output& out, std::string pool_path, bool json)
      : out_(out), pool_path_(std::move(pool_path)), json_(json) {}

  Pool& pool() const {
    SNAPDISK_CHECK(pool_ != nullptr, "command context without a pool");
    return *pool_;
  }
  void set_pool(Pool* pool) { pool_ = pool; }
  Output& out() const { return out_; }
  // The pool's path as given on the command line (for messages).
  const std::string& pool_path() const { return pool_path_; }
  bool json() const { return json_; }

  // Relative paths name files in the caller's working directory (the server
  // runs elsewhere); "-" means the caller's stdin or stdout.
  void set_cwd(std::string cwd) { cwd_ = std::move(cwd); }
  std::string ResolvePath(const std::string& path) const;
  // The caller's stdin and stdout (the server gets them over the socket);
  // -1 when not available.
  int stdin_fd() const { return stdin_fd_; }
  int stdout_fd() const { return stdout_fd_; }
  void set_std_fds(int in, int out) {
    stdin_fd_ = in;
    stdout_fd_ = out;
  }

  // Reports a failure: one line "snapdisk: MESSAGE" on stderr (and, with
  // --json, {"error": {...}} on stdout); returns the exit code for it.
  int Fail(const Status& status) const;
  // Prints `text` (a line or lines) to stdout.
  void Print(std::string_view text) const { out_.Stdout(text); }
  // Prints a JSON document on stdout (pretty, two-space indent).
  void PrintJson(const nlohmann::ordered_json& doc) const;
  // One line on stderr (a note that is not an error).
  void Note(std::string_view text) const;

 private:
  Output& out_;
  Pool* pool_ = nullptr;
  std::string pool_path_;
  bool json_ = false;
  std::string cwd_;
  int stdin_fd_ = 0;
  int stdout_fd_ = 1;
};

// The one-line error message for `status`, as shown after "snapdisk: ":
// the engine's message, with " in pool PATH" after "volume|snapshot '...'
// does not exist" so the user knows where it looked, newlines flattened.
std::string ErrorMessage(const Status& status, const std::string& pool_path);
// {"error": {"code": "NotFound", "message": "...", "exit_code": 3}}.
nlohmann::ordered_json ErrorJson(const Status& status, const std::string& message);

struct JobOptions {
  bool json = false;
  // The job reads the caller's stdin / writes the caller's stdout ("-").
  bool uses_stdin = false;
  bool uses_stdout = false;
};

// A command's body: runs against ctx.pool(), reports through ctx, returns the
// exit code (exit_codes.h). A job that changes the pool commits before it
// reports success.
using PoolJob = std::function<int(CommandContext& ctx)>;

class Executor {
 public:
  virtual ~Executor() = default;
  // Runs `job` on the pool at `pool_path`; returns its exit code, or the exit
  // code of the failure to reach the pool (reported through the context).
  virtual int RunOnPool(const std::string& pool_path, const JobOptions& options,
                        const PoolJob& job) = 0;
  // Runs a job that makes its own pool (pool create): in this process only;
  // a server refuses it. The context has no pool.
  virtual int RunWithoutPool(const std::string& pool_path, const JobOptions& options,
                             const PoolJob& job) = 0;
};

}  // namespace snapdisk::cli
