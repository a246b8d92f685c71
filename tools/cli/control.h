// The control socket. While `snapdisk serve` holds a pool, every other
// snapdisk command on that pool is carried out by the server: the CLI finds
// the socket beside the pool, sends the command, and prints the reply as if it
// had run locally (same output, same exit code). `pool create` never goes to
// a server (there is no server for a pool that does not exist yet).
//
// Protocol, version 1 (Unix stream socket at ControlSocketPath(pool)). The
// client sends one request, a JSON object on one line:
//   {"argv": ["snapshot", "create", "pool", "db", "s1"], "cwd": "/abs/dir",
//    "progress": true, "fds": ["stdin"]}
// `argv` is the CLI's own argv after `snapdisk`, unchanged (the pool argument
// included: the server parses it with the same command definitions and checks
// that it names the pool it serves, after resolving it against `cwd`).
// `cwd` is the client's working directory: relative paths (the pool, import
// and export files) are resolved against it; the server opens those files
// itself, with its own permissions. `progress` asks for progress lines (the
// client sets it when its stderr is a terminal). `fds` lists the descriptors
// passed with the request's bytes as SCM_RIGHTS ancillary data, in order:
// "stdin" and/or "stdout", for import from "-" and export to "-" — so piping
// through the server works as it does locally.
//
// The server answers zero or more progress lines
//   {"progress": {"label": "import db", "done": N, "total": N, "unit": "bytes"}}
// ("unit" is "bytes" or "blocks"; total 0 means unknown), then exactly one
// final line
//   {"exit_code": N, "stdout": "...", "stderr": "..."}
// and closes. Data never goes over this socket, only through files and
// descriptors. The server refuses peers whose uid is neither its own nor root
// (SO_PEERCRED), requests over 1 MiB, and a request not complete within 10 s.
// If the client disconnects while a long command (import, export, backup)
// runs, the server cancels it the way Ctrl-C cancels it locally.
//
// The server runs commands on its one thread. Most run to their end when
// they arrive, so while a long one (import, export, fsck, scrub) runs, the
// server's other work (NBD requests) waits; volume I/O already in flight
// keeps completing. A backup is different: it runs as steps
// (CommandContext::RunSteps, SteppedJob) that the server's event loop drives
// between NBD requests, so NBD clients keep being served while it runs; the
// client gets progress lines meanwhile and the final line when it has
// finished. Other commands are served while a backup runs (at most
// kMaxServerJobs stepped jobs at once — backups, restores and their fills,
// volume checks, RBD diff imports and exports; more are Busy).
//
// Client behaviour (RunThroughServer): no socket file -> the CLI opens the
// pool itself; a socket file nobody listens on (a server that died) -> the
// same (stale socket). A server that accepts but closes without a final line
// is an I/O error (exit 6).
//
// Thread safety: ControlSession and ServeControlConnection run on the thread
// that drives the pool (they call Pool methods); the other functions are
// thread-compatible.
#pragma once

#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "disk/status.h"
#include "engine/pool.h"
#include "tools/cli/command_context.h"

namespace snapdisk::cli {

// "POOL.ctl".
std::string ControlSocketPath(const std::string& pool_path);

// For the server: a listening socket at ControlSocketPath(pool_path)
// (close-on-exec, blocking). A stale socket file left by a dead server is
// replaced; a live one is Busy. Paths longer than a sockaddr_un holds work
// (through /proc/self/fd). The caller owns the fd; RemoveControlSocket
// unlinks the file when the server stops.
Result<int> ListenControlSocket(const std::string& pool_path);
void RemoveControlSocket(const std::string& pool_path);

// Stepped jobs (backups) one server runs at once.
inline constexpr size_t kMaxServerJobs = 8;

// Server side, for an event loop: one accepted control connection. Start
// reads the request (blocking, bounded by the 10 s request timeout) and runs
// the command against `pool`. Most commands finish there: the reply is sent,
// the connection closed, done() is true. A command whose job runs as steps
// is left running: call Step() on the pool's thread, between Pool::Poll
// calls, until it returns true; the step that finishes the job sends the
// reply. Progress lines go to the client as the job advances (at most ten a
// second, never blocking); the client hanging up cancels the job.
// `allow_steps` false (the server runs kMaxServerJobs already): a stepped
// job is refused with Busy. Never throws; errors go into the reply.
//
// Thread safety: the pool's thread only. The pool must outlive the session.
class ControlSession {
 public:
  static std::unique_ptr<ControlSession> Start(int fd, Pool& pool, const std::string& pool_path,
                                               bool allow_steps = true);
  // A session still running is cancelled and driven to its end first
  // (polling the pool), so its client gets its reply.
  ~ControlSession();
  ControlSession(const ControlSession&) = delete;
  ControlSession& operator=(const ControlSession&) = delete;

  bool done() const;
  // One step of the job; sends the reply once it has finished. True once
  // done. Never waits for I/O, except in the step that finishes the job
  // (which may commit the pool).
  bool Step();
  // Asks the job to stop (the server is shutting down); later steps finish
  // it, and the client gets the job's answer (exit 130 for a backup).
  void Cancel();

 private:
  struct Impl;
  explicit ControlSession(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
};

// Server side, synchronous: handles one accepted connection `fd` on the
// pool's thread to its end (a ControlSession stepped with WaitForPoolWork in
// between) and closes `fd`. `pool_path` is the served pool's path.
void ServeControlConnection(int fd, Pool& pool, const std::string& pool_path);

// Client side: when a server listens on ControlSocketPath(pool_path), sends
// it `argv` (the command line after "snapdisk") and relays the reply through
// `out` (progress lines to out.Progress); returns the command's exit code.
// std::nullopt when no server listens: the caller runs the command itself.
std::optional<int> RunThroughServer(const std::string& pool_path,
                                    const std::vector<std::string>& argv, const JobOptions& options,
                                    Output& out);

}  // namespace snapdisk::cli
