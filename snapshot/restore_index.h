// A backup set's restore index: its extents, cut into pages, so that an
// instant restore can serve a read after reading O(1) of the set, whatever
// its size. The manifest (snapshot/backup_set.h) holds the same extents in
// one JSON object, O(chunks) to read and decode (~30 ms for 8 GiB of 1 MiB
// chunks); the index is what a restore reads first, the manifest what
// everything else reads.
//
// Complete images (snapshot and full sets) get an index, retained as long as
// the set. PutManifest puts its pages, then the manifest, which records the
// index ("restore_index": the page count, the top object's SHA-256 and the
// pages' nonce), then the top; so the chain manifest -> top -> pages ->
// chunks is hash-checked end to end, and a top exists only beside its
// manifest (a job that fails before its manifest leaves pages no top or
// manifest names; the nonce, random per attempt, keeps a retry of the same
// set id from colliding with them).
//
// Store layout (keys):
//   sets/<volume>/<seq:010>-<id>.idx                the top: JSON, the set's
//                                                   facts and its page table
//   index/<volume>/<seq:010>-<id>/<nonce>/<page:06> page `page`, binary
//
// Top JSON (version 1):
//   {"format": "snapdisk-restore-index", "version": 1, "id": "S2",
//    "sequence": 2, "volume": "db", "volume_id": 12 /* optional */,
//    "lineage": 12 /* optional */, "type": "snapshot", "block_bytes": 4096,
//    "volume_size_bytes": ..., "consistent_unix_ns": ..., "last_lsn": ...,
//    "extents": N, "data_bytes": N /* optional */, "nonce": "<16 hex>",
//    "pages": [[first_offset_bytes, end_offset_bytes, extents, "<xxh3-128>"]]}
// Page i covers the volume bytes [first, end) of its extents: the first
// extent's offset to the last one's end. Pages are in offset order and do not
// overlap; the hash is ChunkHash() of the page object.
//
// Page encoding (little endian): "SDIX", u8 version 1, 3 zero bytes,
// u32 chunk count, u32 extent count; then per chunk: 32 hex digits of its
// hash, u64 raw_bytes, u64 stored_bytes, u16 key length, key (the chunk
// object's key); then per extent: u64 offset_bytes, u64 length_bytes,
// u32 chunk (an index into the page's chunks), u64 chunk_offset_bytes.
//
// Thread safety: free functions; safe from any thread (the store's rules).
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "disk/status.h"
#include "engine/worm_store.h"
#include "snapshot/backup_set.h"

namespace snapdisk {

// Extents per page: a page of 1 MiB chunks covers 1 GiB and is ~130 KiB.
inline constexpr uint32_t kRestoreIndexPageExtents = 1024;

struct RestoreIndexPageRef {
  uint64_t first_offset_bytes = 0;
  uint64_t end_offset_bytes = 0;
  uint32_t extents = 0;
  std::string hash;  // ChunkHash of the page object
};

struct RestoreIndex {
  std::string id;
  uint64_t sequence = 0;
  std::string volume;
  uint64_t volume_id = 0;  // 0 in tops written before it was recorded
  uint64_t lineage = 0;    // likewise
  BackupType type = BackupType::kSnapshot;
  uint32_t block_bytes = 0;
  uint64_t volume_size_bytes = 0;
  int64_t consistent_unix_ns = 0;
  uint64_t last_lsn = 0;
  uint64_t extents = 0;
  // The set's data bytes (its extents' lengths), for space checks; unknown
  // in tops written before the field existed.
  std::optional<uint64_t> data_bytes;
  std::string nonce;  // in the page keys
  std::vector<RestoreIndexPageRef> pages;
  // From the top object (not in its JSON): its key and SHA-256.
  std::string key;
  std::string sha256;
};

// One page: its chunks and its extents (each names a chunk of the page).
struct RestoreIndexPage {
  std::vector<ChunkInfo> chunks;  // hash, raw_bytes, stored_bytes, key
  struct Extent {
    uint64_t offset_bytes = 0;
    uint64_t length_bytes = 0;
    uint32_t chunk = 0;
    uint64_t chunk_offset_bytes = 0;
  };
  std::vector<Extent> extents;
};

// Whether sets of this type get an index (the complete images).
bool HasRestoreIndex(BackupType type);

// The keys of a set's index: its top, then its pages (none for a set whose
// manifest records no index).
std::string RestoreIndexTopKey(const BackupSet& set);
std::vector<std::string> RestoreIndexKeys(const BackupSet& set);

// Puts the pages of the index of `set` (extents, chunks, sequence and
// retention filled in; the manifest not yet put), each retained until
// set.retain_until_unix_ns, records the page count, nonce and the top's
// SHA-256 in `set` for the manifest, and returns the top object's bytes, for
// PutRestoreIndexTop once the manifest is put. Sets without an index:
// nothing put, "" returned. The store's error.
Result<std::string> PutRestoreIndexPages(WormStore& store, BackupSet& set);
Status PutRestoreIndexTop(WormStore& store, const BackupSet& set, const std::string& top);

// The index of the set `id` (read: the top only). NotFound when the set has
// none (a set made before indexes existed, a set type without one, a set
// from an export file) or does not exist; Corruption for a damaged top.
Result<RestoreIndex> FindRestoreIndex(WormStore& store, std::string_view id);

// Reads page `page` of `index` and checks it against the top's hash and
// itself (extents in order, inside the page's range and the volume, inside
// their chunks). Corruption naming the set and page.
Result<RestoreIndexPage> ReadRestoreIndexPage(WormStore& store, const RestoreIndex& index,
                                              size_t page);

// Checks an index against its set's manifest: the manifest records this top
// (same SHA-256) and the same set. Corruption saying what differs.
Status CheckRestoreIndex(const RestoreIndex& index, const BackupSet& set);

}  // namespace snapdisk
