// BlockCache: the bounded in-memory cache of metadata blocks (map nodes,
// catalog blocks, space-map blocks), keyed by a 64-bit key the caller chooses
// (a PBN for map nodes; a tagged key for space-map blocks).
//
// Dirty blocks (changed in the open transaction) are pinned until the commit
// marks them clean; clean blocks are evicted least-recently-used first when
// the cache holds more than its budget. Eviction happens only in Trim(), which
// the pool calls between operations, so a pointer returned by Find/Insert
// stays valid until the next Trim() or Erase() of that key.
//
// Memory: bounded by capacity_bytes plus the dirty blocks of one transaction;
// the pool commits early when dirty_bytes() passes a share of the budget.
//
// Thread safety: none; the pool serializes access.
#pragma once

#include <boost/intrusive/list.hpp>
#include <cstdint>
#include <memory>
#include <unordered_map>

#include "engine/aligned_buffer.h"

namespace snapdisk {

struct CachedBlock : public boost::intrusive::list_base_hook<> {
  uint64_t key = 0;
  bool dirty = false;
  AlignedBuffer data;
};

class BlockCache {
 public:
  BlockCache(uint32_t block_bytes, uint64_t capacity_bytes);
  ~BlockCache();
  BlockCache(const BlockCache&) = delete;
  BlockCache& operator=(const BlockCache&) = delete;

  // The cached block, marked most recently used; nullptr if absent.
  CachedBlock* Find(uint64_t key);
  // Adds a zero-filled block under `key` (which must be absent).
  CachedBlock* Insert(uint64_t key, bool dirty);
  void MarkDirty(CachedBlock* block);
  void MarkClean(CachedBlock* block);
  // Forgets `key` (dirty or not); no-op if absent.
  void Erase(uint64_t key);
  // Evicts clean blocks until the cache is within its budget (or only dirty
  // blocks are left).
  void Trim();
  // Forgets every block.
  void Clear();

  uint64_t capacity_bytes() const { return capacity_bytes_; }
  uint64_t cached_bytes() const { return uint64_t{blocks_.size()} * block_bytes_; }
  uint64_t dirty_bytes() const { return dirty_count_ * uint64_t{block_bytes_}; }
  uint64_t hits() const { return hits_; }
  uint64_t misses() const { return misses_; }

 private:
  using Lru = boost::intrusive::list<CachedBlock>;
  const uint32_t block_bytes_;
  const uint64_t capacity_bytes_;
  std::unordered_map<uint64_t, std::unique_ptr<CachedBlock>> blocks_;
  Lru clean_lru_;  // clean blocks only, least recently used first
  uint64_t dirty_count_ = 0;
  uint64_t hits_ = 0;
  uint64_t misses_ = 0;
};

}  // namespace snapdisk
