// Instant restores that go on by themselves when a server opens their pool.
//
// A volume restored instantly (restore/lazy_restore.h) keeps, until it is
// hydrated, the attribute "hydration-source" naming its store (the directory
// `snapdisk restore` recorded as LazyRestoreOptions::store_locator) and set.
// The source itself is not persisted, so after `snapdisk serve` restarts (or
// the pool is reopened after a crash) the volume's pending blocks cannot be
// read until the source is attached again. ServerFills does that when the
// server opens the pool: for every volume with a pending hydration whose
// attribute names a store, it opens the store (OpenStore, store_util.h),
// attaches the set again (ResumeHydration: the set is checked against the
// manifest hash the volume recorded) and continues the fill as a job the
// server's event loop steps between NBD requests — listed by `snapdisk backup
// jobs POOL`, cancelled by `snapdisk backup cancel POOL JOB|SET`.
//
// The store: OpenStore hands out one store object per directory in a
// process, so the fill and the backups and restores forwarded to the same
// server share it (no Busy between them). A command run by another process
// (`store expire`, a local backup of another pool) gets Busy naming the server
// while a fill holds the store, as with a running backup; `backup list`
// reads beside it. The store is released when the fill ends.
//
// A volume whose source cannot be attached (no store recorded; the store
// missing, locked by another process; the set expired, damaged or not the
// one the volume recorded) does not stop the server: one line is logged
// naming the volume, the store and why, the volume stays hydrating with no
// source (reads of its pending blocks fail with "source is not attached",
// never zeros; `restore status` says so), and `snapdisk restore resume
// --store DIR POOL VOL` attaches it later.
//
// How a fill ends:
//  - done: the volume is hydrated; the pool drops the source, the store is
//    released, a line is logged;
//  - cancelled (`backup cancel`, the server stopping) or failed: the source
//    is detached (unless another fill of the volume runs in this process,
//    e.g. a `restore resume` forwarded meanwhile, whose source the pool now
//    holds), the store released, a line logged; the volume stays hydrating
//    with everything filled so far and `restore resume` (or the next start
//    of the server) continues.
//
// Rate: a resumed fill runs at the cap its restore was started with
// (`snapdisk restore --rate`, recorded in the attribute; none: as fast as the
// store and the pool allow), unless ServerFillOptions::rate_mb_per_s
// (`snapdisk serve --hydrate-rate MB/s`) sets one for every fill.
//
// Thread safety: the pool's thread only (the server runs everything there).
#pragma once

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "engine/pool.h"

namespace snapdisk::cli {

// The progress label of a job that fills `volume` from backup set `set_id`:
// "hydrate VOL from SET". The instant restore's own job (`snapdisk restore`,
// `restore resume`) is labelled the same way, which is how FindFillJob tells
// the jobs filling a volume from the others.
std::string FillJobLabel(std::string_view volume, std::string_view set_id);

// The number (JobRegistry) of a running job of this process that fills
// `volume` (recognized by its label, FillJobLabel); nullopt when none does.
std::optional<uint64_t> FindFillJob(std::string_view volume);

struct ServerFillOptions {
  // The served pool's path, as given on the command line (for the job's
  // command line in `backup jobs`).
  std::string pool_path;
  // Cap of each fill in 10^6 bytes/s; 0: the cap its restore recorded (none:
  // as fast as the store and the pool allow). Clients' reads are never capped.
  double rate_mb_per_s = 0;
  // Where the lines about fills go (one call per line, without a newline).
  // Empty: nowhere.
  std::function<void(const std::string&)> log;
};

class ServerFills {
 public:
  // `pool` must outlive this object.
  ServerFills(Pool& pool, ServerFillOptions options);
  // Cancels what still runs and steps it to its end (see CancelAll).
  ~ServerFills();
  ServerFills(const ServerFills&) = delete;
  ServerFills& operator=(const ServerFills&) = delete;

  // Attaches every hydrating volume of the pool whose attribute names a store
  // (see the file comment) and starts its fill; logs one line per volume (its
  // fill started, or why it stays unattached). Returns how many fills started.
  // Never fails: a volume that cannot be attached is left as it is.
  size_t ResumeAll();
  // One step of every running fill (each fills at most a step's bytes, or
  // nothing while its rate cap says wait); a fill that ends is reported
  // (log), unregistered and dropped. Blocks only for the fills' chunk reads
  // and block writes (Pool::HydrateStep), and for the commit that ends a
  // fill.
  void Step();
  bool idle() const { return fills_.empty(); }
  // Asks every fill to stop (the server is shutting down): the next Step
  // ends them all, leaving their volumes hydrating and unattached.
  void CancelAll();

 private:
  struct Fill;
  // Opens the store and attaches `volume`'s source; the fill, or why not.
  Result<std::unique_ptr<Fill>> Resume(const std::string& volume);
  // The fill has finished: report it, let its source and store go.
  void End(Fill& fill);
  void Log(const std::string& line) const;

  Pool& pool_;
  const ServerFillOptions options_;
  std::vector<std::unique_ptr<Fill>> fills_;
};

}  // namespace snapdisk::cli
