// Fsck and Scrub: checks of a pool's consistency and of its data.
//
// Fsck commits the pool, drops its metadata cache and re-reads every reachable
// metadata block from the device, verifying: both the current superblock and
// every map node and catalog block against the checksum that points at them;
// that every block's reference count equals the pointers to it (no leak, no
// block owned twice without a count for it, no count for a block nobody
// references); that the superblock's in-use total is right; and that every
// hydration map is consistent (ranges inside the volume, done bits only inside
// the ranges, the pending count its record holds). Cost: O(blocks
// in use) in time, 4 bytes per pool block in memory.
//
// Scrub reads every data block referenced by a volume or snapshot once and
// verifies its checksum, reporting every volume/snapshot offset that refers to
// a bad block.
//
// Both return structured reports (for --json); a Status error means the check
// itself could not run (device error, pool failed).
// Thread safety: as the Pool.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "engine/pool.h"

namespace snapdisk {

struct FsckProblem {
  std::string kind;    // "checksum", "refcount", "leak", "range", "superblock", "hydration"
  uint64_t block = 0;  // the physical block concerned
  std::string detail;
};

struct FsckReport {
  uint64_t generation = 0;
  uint64_t map_nodes = 0;
  uint64_t data_blocks = 0;
  uint64_t catalog_blocks = 0;
  uint64_t blocks_in_use = 0;
  std::vector<FsckProblem> problems;
  bool clean() const { return problems.empty(); }
  std::string ToString() const;
};

struct ScrubProblem {
  std::string volume;
  std::string snapshot;  // empty for the live volume
  uint64_t offset_bytes = 0;
  uint64_t block = 0;
  std::string detail;
};

struct ScrubReport {
  uint64_t blocks_read = 0;
  uint64_t bytes_read = 0;
  std::vector<ScrubProblem> problems;
  bool clean() const { return problems.empty(); }
  std::string ToString() const;
};

// Progress for long checks: called now and then with blocks done and total
// (total is an estimate: the blocks in use).
using CheckProgress = std::function<void(uint64_t done, uint64_t total)>;

class Fsck {
 public:
  static Result<FsckReport> Check(Pool& pool, const CheckProgress& progress = {});
  static Result<ScrubReport> Scrub(Pool& pool, const CheckProgress& progress = {});
};

}  // namespace snapdisk
