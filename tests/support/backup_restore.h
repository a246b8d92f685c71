// A test helper that restores backup sets into a pool (the real restore module
// comes later): a snapshot or full set alone, a diff onto its full, an incr
// onto its chain down to the full. Every chunk is read with ReadChunk, so
// each one is verified against its hash; the chain is checked to link up
// (bases, volume, lineage, LSNs).
//
// Thread safety: as the Pool (one thread at a time).
#pragma once

#include <cstdint>
#include <string>
#include <string_view>
#include <vector>

#include "engine/pool.h"
#include "engine/worm_store.h"
#include "snapshot/backup_set.h"

namespace snapdisk::testing {

struct RestoreReport {
  std::vector<std::string> sets;  // applied, oldest first
  uint64_t chunks_read = 0;       // chunk objects fetched and verified
  uint64_t bytes_written = 0;     // data bytes written to the new volume
};

// The sets `id` restores from, oldest (the full or the snapshot set) first.
// NotFound/Corruption when the chain is broken.
Result<std::vector<BackupSet>> ResolveRestoreChain(WormStore& store, std::string_view id);

// Creates `new_volume` (unlimited profile, the newest set's size) and writes
// the chain's data into it. On error the volume may be left half-written.
Result<RestoreReport> RestoreBackupSet(WormStore& store, std::string_view id, Pool& pool,
                                       std::string_view new_volume);

// "" when `a` and `b` (volumes or snapshot handles of the same size) read the
// same bytes, else where they first differ.
std::string CompareVolumes(Volume& a, Volume& b);

}  // namespace snapdisk::testing
