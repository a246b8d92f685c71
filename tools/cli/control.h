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
// If the client disconnects while a long command (import, export) runs, the
// server cancels it the way Ctrl-C cancels it locally.
//
// The server runs one command at a time on its own thread, so while a long
// command (import, export, fsck, scrub) runs, its other work (NBD requests)
// waits; volume I/O already in flight keeps completing.
//
// Client behaviour (RunThroughServer): no socket file -> the CLI opens the
// pool itself; a socket file nobody listens on (a server that died) -> the
// same (stale socket). A server that accepts but closes without a final line
// is an I/O error (exit 6).
//
// Thread safety: ServeControlConnection runs on the thread that drives the
// pool (it calls Pool methods); the other functions are thread-compatible.
#pragma once

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

// Server side: handles one accepted connection `fd` synchronously on the
// server's thread (reads the request, runs the command against `pool`, writes
// the reply) and closes `fd`. `pool_path` is the served pool's path.
// Never throws; errors go into the reply.
void ServeControlConnection(int fd, Pool& pool, const std::string& pool_path);

// Client side: when a server listens on ControlSocketPath(pool_path), sends
// it `argv` (the command line after "snapdisk") and relays the reply through
// `out` (progress lines to out.Progress); returns the command's exit code.
// std::nullopt when no server listens: the caller runs the command itself.
std::optional<int> RunThroughServer(const std::string& pool_path,
                                    const std::vector<std::string>& argv, const JobOptions& options,
                                    Output& out);

}  // namespace snapdisk::cli
