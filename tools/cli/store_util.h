// Opening WORM stores (engine/worm_store.h) from CLI commands.
//
// A directory store is locked while open (flock), and a second open of it is
// Busy even in the same process. OpenStore therefore hands out one shared
// store object per directory while any holder keeps it: inside `snapdisk
// serve`, backups of several volumes into one store run at once on it (and
// BackupJob's one-job-per-volume rule sees them all). The store is closed
// when its last holder lets go.
//
// Thread safety: OpenStore may be called from any thread.
#pragma once

#include <memory>
#include <string>

#include "disk/status.h"
#include "engine/worm_store.h"

namespace snapdisk::cli {

// `dir` as an absolute, canonical path when it exists (else as given, made
// absolute): how stores are compared and kept in policies.
std::string CanonicalStoreDir(const std::string& dir);

// The store at `dir` (already resolved against the caller's directory).
// NotFound: "store DIR does not exist (make it with `snapdisk store create
// DIR`)", or the store's own message for a directory that is no store; Busy when another process holds it, saying that a running backup
// holds its store until it finishes.
Result<std::shared_ptr<WormStore>> OpenStore(const std::string& dir);

// For commands that only read (backup list): the store as OpenStore gives
// it, or, when another process holds it (a backup running in `snapdisk
// serve`), a read-only view of it (DirStoreOptions::read_only) and
// `*held_by` says who holds it ("" otherwise).
Result<std::shared_ptr<WormStore>> OpenStoreForReading(const std::string& dir,
                                                       std::string* held_by);

// Who this process is, in the note a store it opens carries for a second
// opener's Busy message: `snapdisk serve` says which pool it serves.
// Default "snapdisk (pid N)".
void SetStoreHolderRole(const std::string& role);

}  // namespace snapdisk::cli
