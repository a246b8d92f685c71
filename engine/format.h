// On-disk format of a pool, version 1: constants, field codecs and the
// superblock. engine/FORMAT.md is the byte-exact description; this header is
// its code. Everything here is pure (no I/O) and safe from any thread.
#pragma once

#include <array>
#include <bit>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <span>

#include "disk/status.h"

namespace snapdisk::format {

inline constexpr uint32_t kVersion = 1;
inline constexpr char kMagic[8] = {'S', 'N', 'A', 'P', 'D', 'S', 'K', '\0'};
inline constexpr uint32_t kMinBlockBytes = 4096;
inline constexpr uint32_t kMaxBlockBytes = 65536;
inline constexpr uint64_t kSuperblockPbn[2] = {0, 1};
inline constexpr uint32_t kSuperblockBytes = 512;
inline constexpr int kSpaceMapTopEntries = 16;
inline constexpr uint32_t kCatalogRecordBytes = 256;
inline constexpr uint32_t kMaxNameBytes = 128;
inline constexpr int kMaxTreeHeight = 8;

// XXH3-64, seed 0.
uint64_t Checksum(std::span<const std::byte> bytes);

inline uint64_t Load64(const std::byte* p) {
  uint64_t v;
  std::memcpy(&v, p, 8);
  return v;  // the format is little-endian, and so is every machine we build for
}
inline void Store64(std::byte* p, uint64_t v) { std::memcpy(p, &v, 8); }
inline uint32_t Load32(const std::byte* p) {
  uint32_t v;
  std::memcpy(&v, p, 4);
  return v;
}
inline void Store32(std::byte* p, uint32_t v) { std::memcpy(p, &v, 4); }
static_assert(std::endian::native == std::endian::little, "the pool format is little-endian");

// A map entry (and the root of a tree): where a child block is and what its
// contents hash to. pbn 0 means absent.
struct MapEntry {
  uint64_t pbn = 0;
  uint64_t checksum = 0;
  bool operator==(const MapEntry&) const = default;
};
inline constexpr uint32_t kMapEntryBytes = 16;
inline MapEntry LoadMapEntry(const std::byte* p) { return {Load64(p), Load64(p + 8)}; }
inline void StoreMapEntry(std::byte* p, const MapEntry& e) {
  Store64(p, e.pbn);
  Store64(p + 8, e.checksum);
}

// A space-map entry: checksum of a space-map block's current copy and which
// of its two slots holds it. checksum 0: never written (reads as zeros).
struct SpaceMapEntry {
  uint64_t checksum = 0;
  uint8_t slot = 0;
  bool operator==(const SpaceMapEntry&) const = default;
};
inline constexpr uint32_t kSpaceMapEntryBytes = 16;
inline SpaceMapEntry LoadSpaceMapEntry(const std::byte* p) {
  return {Load64(p), static_cast<uint8_t>(p[8])};
}
inline void StoreSpaceMapEntry(std::byte* p, const SpaceMapEntry& e) {
  std::memset(p, 0, kSpaceMapEntryBytes);
  Store64(p, e.checksum);
  p[8] = static_cast<std::byte>(e.slot);
}

struct Superblock {
  uint32_t block_bytes = 0;
  uint64_t generation = 0;
  uint64_t pool_blocks = 0;
  uint64_t first_data_block = 0;
  uint64_t high_water = 0;
  MapEntry catalog_root;
  uint8_t catalog_height = 0;
  uint8_t space_map_height = 0;
  uint16_t space_map_top_count = 0;
  uint64_t next_object_id = 1;
  uint64_t created_unix_ns = 0;
  uint64_t blocks_in_use = 0;
  std::array<SpaceMapEntry, kSpaceMapTopEntries> space_map_top{};
};

// Encodes into the first kSuperblockBytes of `out` (the rest is left alone).
void EncodeSuperblock(const Superblock& sb, std::span<std::byte> out);
// Decodes and validates magic, version and checksum. Corruption (or
// Unsupported for another format version) names what is wrong.
Result<Superblock> DecodeSuperblock(std::span<const std::byte> in);

// Where the space map's blocks live for a pool of `pool_blocks` blocks.
struct SpaceMapGeometry {
  uint32_t counts_per_leaf = 0;                            // block_bytes / 4
  uint32_t entries_per_dir = 0;                            // block_bytes / 16
  int height = 0;                                          // levels, leaves included
  std::array<uint64_t, kMaxTreeHeight> blocks_at_level{};  // [0] = leaves
  std::array<uint64_t, kMaxTreeHeight> region_start{};     // first PBN of each level's slots
  uint64_t first_data_block = 0;
  uint64_t SlotPbn(int level, uint64_t index, uint8_t slot) const {
    return region_start[level] + 2 * index + slot;
  }
};
// InvalidArgument if the pool is too small to hold its own metadata and at
// least a few data blocks, or too large for kMaxTreeHeight levels.
Result<SpaceMapGeometry> ComputeSpaceMapGeometry(uint64_t pool_blocks, uint32_t block_bytes);

// True for a power of two in [kMinBlockBytes, kMaxBlockBytes].
bool IsValidBlockSize(uint64_t block_bytes);

}  // namespace snapdisk::format
