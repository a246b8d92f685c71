// The snapdisk NBD server: serves every volume of a pool by name, and every
// snapshot read-only as "VOL@SNAP", over the NBD protocol (fixed newstyle
// handshake; NBD_OPT_GO/INFO/LIST/ABORT/STRUCTURED_REPLY/LIST_META_CONTEXT/
// SET_META_CONTEXT; READ, WRITE (+FUA), FLUSH, TRIM, WRITE_ZEROES, CACHE,
// DISC and BLOCK_STATUS with base:allocation).
//
// Threads: one. An epoll loop owns the PoolFile (so the pool's lock), the
// listening socket, every client socket, the control socket and a signalfd
// for SIGTERM/SIGINT; it submits volume requests and drives them with
// Pool::Poll(0) when the FileDevice's completion eventfd (or, for QoS timers,
// a short timeout) says there is work. Replies go out in completion order,
// matched by the client's cookie, batched into one sendmsg per connection per
// loop turn.
// Control commands run on the same thread: most to their end when they
// arrive; backups as steps between loop turns (tools/cli/control.h), so NBD
// requests keep being served while one runs. SIGTERM cancels running backups
// (their clients get exit 130).
//
// Limits (bounded memory): at most `max_clients` connections, each with at
// most `max_requests_per_client` requests in flight and at most
// `max_request_bytes` per READ/WRITE (larger ones get EINVAL; a too-long
// WRITE's payload is read and dropped). A client that breaks the protocol
// (bad magic, oversized option) is disconnected; the others keep going.
//
// Flush and FUA commit the pool (Pool::Commit), which covers every completed
// write of every connection: the export advertises NBD_FLAG_CAN_MULTI_CONN.
// While a client has an export open the volume is marked in use
// (Volume::SetInUse), so rollback and delete through the control socket
// answer Busy.
//
// Instant restores go on by themselves: when the server opens the pool, every
// volume still hydrating from a backup gets its store attached again and its
// fill continued as a job between NBD requests (tools/cli/hydration_resume.h;
// listed by `backup jobs`, cancelled by `backup cancel`, cancelled when the
// server stops). A volume whose store cannot be opened is served anyway, its
// pending blocks failing to read, after one line on stderr saying why.
#pragma once

#include <cstdint>
#include <string>

namespace snapdisk::nbd {

struct ServerOptions {
  std::string pool_path;
  // Exactly one of: a Unix socket path, or a TCP port (0: any free port; the
  // ready line says which).
  std::string socket_path;
  int tcp_port = -1;
  std::string bind_address = "127.0.0.1";
  uint32_t max_clients = 128;
  uint32_t max_requests_per_client = 64;
  uint32_t max_request_bytes = uint32_t{32} << 20;
  // Log connects and disconnects to stderr (protocol errors are always logged).
  bool verbose = false;
  // Cap of each background fill the server resumes on its own (instantly
  // restored volumes still hydrating when it opens the pool), in 10^6
  // bytes/s; 0: unlimited, as the instant restore itself. See
  // tools/cli/hydration_resume.h.
  double hydrate_rate_mb_per_s = 0;
  // The server carries out the pool's backup policies itself: every this
  // many seconds it plans what is due and runs it as a job (a line each on
  // stderr; `backup history` keeps them). 0: never (`policy run` by hand).
  double policy_check_interval_s = 30;
};

// Opens the pool (its lock: a second server gets Busy), listens, resumes the
// pool's hydrating volumes (a line each on stderr), prints one line to stderr
// when ready —
//   snapdisk: serving POOL on unix:PATH (N volumes, M snapshots)
//   snapdisk: serving POOL on tcp:ADDR:PORT (N volumes, M snapshots)
// — and serves until SIGTERM or SIGINT, then finishes the requests in flight,
// commits and closes the pool, removes its sockets, and returns 0. Returns the
// exit code of tools/cli/exit_codes.h on failure (3 pool missing, 4 busy,
// 5 corrupt, 2 bad options, 6 I/O error) after printing why to stderr.
int Serve(const ServerOptions& options);

}  // namespace snapdisk::nbd
