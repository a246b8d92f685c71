// The control socket. While `snapdisk serve` holds a pool, every other
// snapdisk command on that pool is carried out by the server: the CLI finds
// the socket beside the pool, sends the command, and prints the reply as if it
// had run locally (same output, same exit code).
//
// Protocol (Unix stream socket at ControlSocketPath(pool)): the client sends
// one request, a JSON object on one line:
//   {"command": ["snapshot", "create", "db", "s1"], "json": false, "cwd": "/abs/dir"}
// i.e. the CLI's own argv after `snapdisk` with the pool argument removed,
// and the server answers zero or more progress lines
//   {"progress": {"done": N, "total": N}}
// then exactly one final line
//   {"exit_code": N, "stdout": "...", "stderr": "..."}
// and closes. `cwd` lets the server resolve relative paths (import/export
// files). Data never goes over this socket except through files the server
// opens itself.
#pragma once

#include <string>

#include "disk/status.h"
#include "engine/pool.h"

namespace snapdisk::cli {

// "POOL.ctl".
std::string ControlSocketPath(const std::string& pool_path);

// Server side: handles one accepted connection `fd` synchronously on the
// server's thread (reads the request, runs the command against `pool`, writes
// the reply) and closes `fd`. `pool_path` is the served pool's path.
// Never throws; errors go into the reply.
void ServeControlConnection(int fd, Pool& pool, const std::string& pool_path);

}  // namespace snapdisk::cli
