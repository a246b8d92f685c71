// SpaceMap: the pool's reference counts and block allocator.
//
// Every allocatable block has a 32-bit reference count (FORMAT.md, "Space
// map"); a block is free at 0. Counts are read through the BlockCache and
// changed in memory; WriteDirty() writes every changed space-map block to the
// slot the last commit does not use, and the superblock written after it makes
// the change durable.
//
// A block whose count falls to 0 in transaction N is not handed out (nor
// punched) until commit N+1 has completed: until commit N lands, the state of
// commit N-1 references it; after that it *cools* for one more commit, so that
// commit N-1's state stays whole on disk while N is the newest — if N's
// superblock is ever unreadable, N-1 is a complete fallback.
//
// Errors: Corruption when a space-map block fails its checksum (naming level,
// index and PBN); IOError from the device; NoSpace when no block is free.
// Thread safety: none; the pool serializes access. The device and cache are
// borrowed and must outlive the SpaceMap.
#pragma once

#include <array>
#include <cstdint>
#include <set>
#include <unordered_set>
#include <vector>

#include "disk/block_device.h"
#include "engine/block_cache.h"
#include "engine/format.h"

namespace snapdisk {

class SpaceMap {
 public:
  SpaceMap(BlockDevice& device, BlockCache& cache, const format::SpaceMapGeometry& geometry,
           uint32_t block_bytes, uint64_t pool_blocks);

  // Takes the persistent state from a superblock.
  void Load(const format::Superblock& sb);
  // Puts the state into a superblock about to be written (after WriteDirty).
  void Store(format::Superblock* sb) const;

  // What to do with a block once it is free and its transaction committed.
  enum class FreeKind : uint8_t {
    // Punch it out of the file: the space goes back to the file system (trim,
    // delete, rollback).
    kPunch,
    // Keep it allocated in the file and hand it out again first (a block
    // replaced by an overwrite: the next write will want one). At most
    // kMaxReuseBlocks are kept; the rest are punched.
    kReuse,
  };
  static constexpr size_t kMaxReuseBlocks = size_t{1} << 20;

  Result<uint32_t> Get(uint64_t pbn);
  Status Increment(uint64_t pbn);
  // Returns the count after the decrement. At 0 the block is pending free.
  Result<uint32_t> Decrement(uint64_t pbn, FreeKind kind = FreeKind::kPunch);

  // A free block, its count set to 1.
  Result<uint64_t> Allocate();
  // A block for metadata (map nodes, catalog blocks), count set to 1. Taken
  // from chunks of never-used space set aside for metadata, each chunk the
  // span of one space-map leaf: siblings in a tree then share a leaf of
  // counts, so shadowing a node (one more reference to each child) dirties a
  // leaf or two instead of hundreds. Falls back to Allocate() when no chunk
  // can be had.
  Result<uint64_t> AllocateMetadata();
  // Up to `max_count` consecutive free blocks starting at the returned PBN
  // (at least 1), each with count 1. `*count` receives how many.
  Result<uint64_t> AllocateRun(uint64_t max_count, uint64_t* count);

  // Writes every changed space-map block (leaves first) to its other slot.
  Status WriteDirty();
  // The transaction has committed: the blocks the previous one freed are free
  // from now on, and this one's start cooling. Returns those to punch out of
  // the file (sorted).
  std::vector<uint64_t> CommitDone();

  uint64_t blocks_in_use() const { return blocks_in_use_; }
  // Blocks that can be allocated now (reuse_ holds free blocks: counted).
  uint64_t free_blocks() const {
    return pool_blocks_ - geometry_.first_data_block - blocks_in_use_ - pending_free_.size() -
           cooling_.size();
  }
  uint64_t high_water() const { return high_water_; }
  // Blocks freed but not reusable yet: freed in the open transaction, or by
  // the last commit (cooling). Commits make them reusable.
  uint64_t freed_not_reusable_blocks() const { return pending_free_.size() + cooling_.size(); }
  uint64_t cooling_blocks() const { return cooling_.size(); }
  uint64_t first_data_block() const { return geometry_.first_data_block; }
  uint64_t pool_blocks() const { return pool_blocks_; }
  size_t dirty_blocks() const;

 private:
  static uint64_t Key(int level, uint64_t index) {
    return (uint64_t{1} << 63) | (uint64_t(level) << 56) | index;
  }
  Result<CachedBlock*> LoadBlock(int level, uint64_t index);
  // The entry describing (level, index): in the parent block or the top array.
  Result<std::byte*> EntryLocation(int level, uint64_t index);
  Result<uint32_t*> CountSlot(uint64_t pbn, bool for_write);
  Status CheckPbn(uint64_t pbn) const;

  BlockDevice& device_;
  BlockCache& cache_;
  const format::SpaceMapGeometry geometry_;
  const uint32_t block_bytes_;
  const uint64_t pool_blocks_;

  // The top level's entries, stored in the superblock, in encoded form.
  std::array<std::byte, format::kSpaceMapTopEntries * format::kSpaceMapEntryBytes> top_{};
  uint64_t high_water_ = 0;
  uint64_t blocks_in_use_ = 0;
  uint64_t scan_cursor_ = 0;
  // The current metadata chunk: [metadata_next_, metadata_end_). Its unused
  // blocks are ordinary free blocks (below high_water_): if the pool is
  // reopened they are simply found by the scan.
  uint64_t metadata_next_ = 0;
  uint64_t metadata_end_ = 0;
  std::unordered_set<uint64_t> pending_free_;
  std::unordered_set<uint64_t> pending_reuse_;  // the kReuse part of pending_free_
  std::unordered_set<uint64_t> cooling_;        // freed by the last commit
  std::unordered_set<uint64_t> cooling_reuse_;  // the kReuse part of cooling_
  // Free blocks still allocated in the file, handed out first; sorted so the
  // back is the lowest PBN (runs come out in ascending order).
  std::vector<uint64_t> reuse_;
  std::vector<std::set<uint64_t>> dirty_;  // per level: indexes of changed blocks
};

}  // namespace snapdisk
