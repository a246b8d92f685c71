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
// Long jobs (backups) run as steps: the job's body starts the work and hands
// a SteppedJob to CommandContext::RunSteps. In the CLI process RunSteps
// loops (step, wait for the pool's I/O) and then calls the job's `finish`;
// inside the server it returns kExitPending at once, and the server's event
// loop steps the job between NBD requests and replies to the client when the
// job has finished (control.h). Either way the same command code runs.
//
// Thread safety: a context and an executor belong to one thread.
#pragma once

#include <cstdint>
#include <functional>
#include <nlohmann/json.hpp>
#include <optional>
#include <string>
#include <string_view>

#include "disk/status.h"
#include "engine/pool.h"

namespace snapdisk::cli {

// kHours: simulated hours (a simulation's progress).
// kSeconds: planned seconds of work (a run of stages, e.g. `compare`).
enum class ProgressUnit : uint8_t { kBytes, kBlocks, kHours, kSeconds };
// "bytes", "blocks", "hours", "seconds" (the control socket's progress lines); an
// unknown name reads as bytes.
const char* ProgressUnitName(ProgressUnit unit);
ProgressUnit ParseProgressUnit(std::string_view name);

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

// What a progress bar shows for a stepped job.
struct StepProgress {
  std::string label;
  uint64_t done = 0;
  uint64_t total = 0;  // 0: unknown
  ProgressUnit unit = ProgressUnit::kBytes;
};

class CommandContext;

// A long job run as steps on the pool's thread.
struct SteppedJob {
  // A bounded slice of work that never waits for I/O (the caller drives
  // Pool::Poll between steps); true once the job has finished.
  std::function<bool()> step;
  // Asks the job to stop (Ctrl-C; the client hanging up; the server shutting
  // down): a later step then finishes it. Called at most once.
  std::function<void()> cancel;
  // What to show on the progress bar; polled about ten times a second. May
  // be empty (no progress).
  std::function<StepProgress()> progress;
  // The job's own id (a backup's set id), for `backup jobs` and `backup
  // cancel`. May be empty.
  std::function<std::string()> id;
  // Called once, after the step that finished the job, on the pool's thread:
  // reports the outcome through the context and returns the exit code.
  std::function<int(CommandContext&)> finish;
  // Optional, for jobs whose user need not wait for the end (an instant
  // restore's fill: the volume is usable long before). Polled before every
  // step; once it returns an exit code the command answers with it and what
  // it printed so far, and the job is no longer the command's: inside the
  // server it goes on in the background (listed by `backup jobs`,
  // cancellable; finish is called, but its report reaches nobody); run here,
  // without a server, it is cancelled and stepped to its end, and finish is
  // not called. So only a job that something else continues later (the next
  // `serve`, a resume command) may answer early.
  std::function<std::optional<int>(CommandContext&)> answer_early;
};

// RunSteps's answer when the job goes on after the command's body returned
// (inside the server): the exit code is not known yet. Never a process's
// exit code.
inline constexpr int kExitPending = -1;

// Where a stepped job runs; an executor installs one in the contexts it
// makes (the server's control socket). Without one, RunSteps runs the job to
// its end before it returns (RunStepsHere).
class StepRunner {
 public:
  virtual ~StepRunner() = default;
  // Takes the job over; returns kExitPending, or an exit code when the job
  // could not be taken (reported through `ctx`).
  virtual int RunSteps(CommandContext& ctx, SteppedJob job) = 0;
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

  // Runs `job` (see SteppedJob) and returns its exit code, or kExitPending
  // when the executor finishes it later; a job body returns what this
  // returns. Needs the pool. At most once per command.
  int RunSteps(SteppedJob job);
  void set_step_runner(StepRunner* runner) { step_runner_ = runner; }
  // True when a server runs this command (jobs then go on between NBD
  // requests, and may go on after the command answered).
  bool in_server() const { return step_runner_ != nullptr; }

 private:
  Output& out_;
  Pool* pool_ = nullptr;
  StepRunner* step_runner_ = nullptr;
  std::string pool_path_;
  bool json_ = false;
  std::string cwd_;
  int stdin_fd_ = 0;
  int stdout_fd_ = 1;
};

// Runs a stepped job here, to its end: steps it, waiting for the pool's I/O
// in between (WaitForPoolWork), draws its progress, cancels it once
// ctx.out().Cancelled(), then returns job.finish(ctx).
int RunStepsHere(CommandContext& ctx, SteppedJob& job);
// Between two steps of a job: waits until the pool completes a request when
// it has some in flight, else sleeps `idle_ns` (the job waits for its worker
// threads, or for its rate limit).
void WaitForPoolWork(Pool& pool, int64_t idle_ns = 200'000);

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
  // Runs a job without a pool (pool create, which makes its own; the store
  // commands): in this process only; a server refuses it. The context has
  // no pool.
  virtual int RunWithoutPool(const std::string& pool_path, const JobOptions& options,
                             const PoolJob& job) = 0;
};

}  // namespace snapdisk::cli
