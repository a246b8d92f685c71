#include "engine/block_cache.h"

namespace snapdisk {

BlockCache::BlockCache(uint32_t block_bytes, uint64_t capacity_bytes)
    : block_bytes_(block_bytes), capacity_bytes_(capacity_bytes) {}

BlockCache::~BlockCache() { Clear(); }

CachedBlock* BlockCache::Find(uint64_t key) {
  auto it = blocks_.find(key);
  if (it == blocks_.end()) {
    ++misses_;
    return nullptr;
  }
  ++hits_;
  CachedBlock* b = it->second.get();
  if (!b->dirty) {
    clean_lru_.erase(clean_lru_.iterator_to(*b));
    clean_lru_.push_back(*b);
  }
  return b;
}

CachedBlock* BlockCache::Insert(uint64_t key, bool dirty) {
  auto block = std::make_unique<CachedBlock>();
  block->key = key;
  block->dirty = dirty;
  block->data = AlignedBuffer(block_bytes_);
  CachedBlock* b = block.get();
  auto [it, inserted] = blocks_.emplace(key, std::move(block));
  SNAPDISK_CHECK(inserted, "cache key inserted twice");
  if (dirty) {
    ++dirty_count_;
  } else {
    clean_lru_.push_back(*b);
  }
  return b;
}

void BlockCache::MarkDirty(CachedBlock* b) {
  if (b->dirty) return;
  clean_lru_.erase(clean_lru_.iterator_to(*b));
  b->dirty = true;
  ++dirty_count_;
}

void BlockCache::MarkClean(CachedBlock* b) {
  if (!b->dirty) return;
  b->dirty = false;
  --dirty_count_;
  clean_lru_.push_back(*b);
}

void BlockCache::Erase(uint64_t key) {
  auto it = blocks_.find(key);
  if (it == blocks_.end()) return;
  CachedBlock* b = it->second.get();
  if (b->dirty) {
    --dirty_count_;
  } else {
    clean_lru_.erase(clean_lru_.iterator_to(*b));
  }
  blocks_.erase(it);
}

void BlockCache::Trim() {
  while (cached_bytes() > capacity_bytes_ && !clean_lru_.empty()) {
    CachedBlock& victim = clean_lru_.front();
    clean_lru_.pop_front();
    blocks_.erase(victim.key);
  }
}

void BlockCache::Clear() {
  clean_lru_.clear();
  blocks_.clear();
  dirty_count_ = 0;
}

}  // namespace snapdisk
