// Backup sets in a WormStore: the manifest that describes one set, the chunk
// objects that hold its data, and how both are named, encoded and chained.
//
// Store layout (keys):
//   chunks/<xx>/<hash>                   a compressed chunk, content-addressed:
//                                        <hash> is the XXH3-128 (32 hex digits)
//                                        of the uncompressed bytes, <xx> its
//                                        first two digits. Stored once, shared
//                                        by every set that contains the bytes.
//   sets/<volume>/<seq:010>-<id>.json    a set's manifest (JSON, below).
//
// Set ids are a type letter and a store-wide sequence number: S (snapshot
// backup), F (full), D (differential), I (incremental), L (log segment), e.g.
// "F3", "L7". The sequence is the manifest's <seq>.
//
// Manifests of one volume form a hash chain: each holds prev_sha256, the
// SHA-256 of the volume's previous manifest object, so a manifest removed,
// rewritten or slipped in behind the store's back breaks the chain (the
// WormStore's audit log catches what the chain cannot: the newest one gone).
//
// Chunk object encoding: "SDCK" magic, u8 version 1, u8 codec (1 = zstd),
// u16 zero, u32 uncompressed length (little endian), then one zstd frame.
//
// A chunk key whose object expired can never be written again (WORM: a key is
// written once). When the same bytes come back after that, the chunk is stored
// under "chunks/<xx>/<hash>.<n>" (n = 1, 2, ...) instead; ChunkInfo::key says
// which object a set uses.
//
// Manifest JSON (version 1; every field required unless marked optional):
//   {"format": "snapdisk-backup-set", "version": 1,
//    "id": "F3", "sequence": 3, "volume": "db", "volume_id": 12, "lineage": 12,
//    "type": "full",              // BackupTypeName
//    "first_lsn": 0, "last_lsn": 812, "base": "",
//    "started_unix_ns": ..., "finished_unix_ns": ..., "consistent_unix_ns": ...,
//    "first_record_unix_ns": 0, "last_record_unix_ns": 0,
//    "block_bytes": 4096, "volume_size_bytes": ..., "data_bytes": ...,
//    "stored_bytes": ...,
//    "chunks": [{"hash": "<32 hex>", "raw_bytes": N, "stored_bytes": N,
//                "new": true, "key": "chunks/.../<hash>.1" /* optional */}],
//    "extents": [[offset_bytes, length_bytes, chunk_index, chunk_offset_bytes]],
//    "zero_extents": [[offset_bytes, length_bytes]],
//    "restore_index": {"pages": N, "sha256": "<64 hex>",      // optional
//                      "nonce": "<16 hex>"},
//    "prev_sha256": "<64 hex>" or ""}
// `chunk_index` indexes "chunks" (it keeps large manifests small). Extents and
// zero extents are sorted by offset, non-empty, do not overlap each other and
// lie inside the volume; an extent lies inside its chunk. DecodeManifest
// checks all of that. Data sets list each chunk once; a log segment lists its
// stream's chunks in order, so a chunk whose content repeats is listed at
// every position it holds (with the same raw_bytes; its key may differ, see
// above). Readers accept repeats in any set: code that sums or visits the
// distinct objects of a set must not assume hashes are unique.
//
// Data of a set:
//  - Snapshot backups are complete images: `extents` map every data range of
//    the volume (incremental forever in storage — unchanged data refers to the
//    chunks earlier sets stored — yet each manifest restores on its own).
//  - Full backups list every allocated range; differential and incremental
//    backups list the ranges changed since their base plus `zero_extents`,
//    ranges that became zeros (trimmed) since then.
//  - Log segments hold records, not ranges: chunks of a record stream (see
//    snapshot/log_backup.h); `extents` is empty.
//  - Snapshot and full sets also have a restore index (the same extents in
//    pages, for instant restores: snapshot/restore_index.h); "restore_index"
//    records its page count and the SHA-256 of its top object.
//
// Thread safety: free functions are pure; safe from any thread.
#pragma once

#include <cstdint>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "disk/status.h"
#include "engine/worm_store.h"

namespace snapdisk {

enum class BackupType : uint8_t { kSnapshot, kFull, kDiff, kIncr, kLog };
// "snapshot", "full", "diff", "incr", "log" (stable: in manifests and --json).
const char* BackupTypeName(BackupType type);
Result<BackupType> ParseBackupType(std::string_view name);
// 'S', 'F', 'D', 'I', 'L'.
char BackupTypeLetter(BackupType type);

// A range of the volume whose bytes are in a chunk: volume bytes
// [offset_bytes, offset_bytes + length_bytes) are chunk `chunk` bytes
// [chunk_offset_bytes, chunk_offset_bytes + length_bytes).
struct ChunkExtent {
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
  std::string chunk;  // the chunk's content hash (32 hex digits)
  uint64_t chunk_offset_bytes = 0;
};

struct ZeroExtent {
  uint64_t offset_bytes = 0;
  uint64_t length_bytes = 0;
};

// A chunk a set uses, with its sizes (for reports and restore planning).
struct ChunkInfo {
  std::string hash;            // XXH3-128 of the uncompressed bytes
  uint64_t raw_bytes = 0;      // uncompressed
  uint64_t stored_bytes = 0;   // the object's size
  bool new_in_set = false;     // stored by this set (not shared with an earlier one)
  // The chunk object's key: ChunkKey(hash), or a ".<n>" variant of it (see the
  // file comment). DecodeManifest fills it in when the JSON omits it.
  std::string key;
};

struct BackupSet {
  std::string id;  // e.g. "F3"
  uint64_t sequence = 0;
  std::string volume;
  uint64_t volume_id = 0;
  uint64_t lineage = 0;  // a rollback starts a new one
  BackupType type = BackupType::kFull;
  // The LSN range the set covers. Data backups: first_lsn is base's
  // last_lsn + 1 (0 for a full or snapshot backup: from nothing), last_lsn the
  // volume's LSN at the backup's consistent point. Log segments: the first and
  // last record.
  uint64_t first_lsn = 0;
  uint64_t last_lsn = 0;
  std::string base;  // diff: its full; incr: the previous backup; else empty
  int64_t started_unix_ns = 0;
  int64_t finished_unix_ns = 0;
  // Data backups: when the snapshot was taken (the point the set restores
  // to). Log segments: the first and last record's times.
  int64_t consistent_unix_ns = 0;
  int64_t first_record_unix_ns = 0;
  int64_t last_record_unix_ns = 0;
  uint32_t block_bytes = 0;
  uint64_t volume_size_bytes = 0;
  uint64_t data_bytes = 0;    // bytes of volume data (or log records) in the set
  uint64_t stored_bytes = 0;  // bytes of chunks this set added to the store
  std::vector<ChunkInfo> chunks;
  std::vector<ChunkExtent> extents;
  std::vector<ZeroExtent> zero_extents;
  std::string prev_sha256;  // the volume's previous manifest, "" for the first
  // The set's restore index (snapshot/restore_index.h); empty: none.
  uint64_t restore_index_pages = 0;
  std::string restore_index_sha256;  // of its top object
  std::string restore_index_nonce;   // in its page keys
  // From the manifest object (not in the JSON): its key, retention and hash.
  std::string key;
  int64_t retain_until_unix_ns = 0;
  std::string sha256;
};

// The manifest's JSON (stable field names; see FORMAT in the file comment).
std::string EncodeManifest(const BackupSet& set);
// InvalidArgument/Corruption naming `key` for malformed JSON or fields.
Result<BackupSet> DecodeManifest(std::string_view json, std::string_view key);

std::string ManifestKey(const BackupSet& set);  // sets/<volume>/<seq>-<id>.json
std::string ChunkKey(std::string_view hash);    // chunks/<xx>/<hash>
std::string ChunkHash(std::span<const std::byte> raw);  // XXH3-128, 32 hex digits
std::string Sha256Hex(std::span<const std::byte> bytes);

// Compresses `raw` into the chunk object encoding.
std::vector<std::byte> EncodeChunk(std::span<const std::byte> raw, int zstd_level);
// The same into `out` (resized; its capacity is reused, so a worker encoding
// many chunks allocates once).
void EncodeChunkInto(std::span<const std::byte> raw, int zstd_level, std::vector<std::byte>& out);
// Decodes and checks a chunk object against its hash: Corruption naming the
// chunk (and `context`, e.g. the set id) when anything is wrong.
Result<std::vector<std::byte>> DecodeChunk(std::span<const std::byte> object,
                                           std::string_view hash, std::string_view context);

// Reads the chunk `chunk` of a set from `store` and decodes it (DecodeChunk:
// checked against its content hash and raw_bytes). Corruption naming the chunk
// and `context` (e.g. "set F3") for a damaged chunk, the store's error (with
// the same context) when the object cannot be read. Restores read every chunk
// through here.
Result<std::vector<std::byte>> ReadChunk(WormStore& store, const ChunkInfo& chunk,
                                         std::string_view context);

// Reading sets back.
// Every set in the store (of `volume` only, when not empty), by sequence.
Result<std::vector<BackupSet>> ListBackupSets(WormStore& store, std::string_view volume = {});
// NotFound naming the id.
Result<BackupSet> FindBackupSet(WormStore& store, std::string_view id);
// The object "sets/<volume>/<seq>-<id><suffix>" of set `id` (".json": its
// manifest), found by listing "sets/" (no object is read). NotFound naming
// the id, InvalidArgument for a malformed id.
Result<WormObjectInfo> FindSetObject(WormStore& store, std::string_view id,
                                     std::string_view suffix);
// The next free sequence number in the store: above every manifest in it and
// every number reserved in this process (below) and not yet released.
Result<uint64_t> NextBackupSequence(WormStore& store);
// Takes the next free sequence number for a job on `volume` and holds it until
// ReleaseBackupSequence, so that jobs running at once on one store (data and
// log backups of several volumes) never get the same id. One job per volume
// at a time: Busy naming the running job's sequence while `volume` holds a
// reservation (so a volume's manifests are put in sequence order and its
// chain is simply sequence order). Release once the job's manifest is put or
// the job failed (a failed job leaves a gap: ids need not be dense).
// Reservations are per process and per store object. `min_sequence`: take
// at least this number (to step over an id that is taken elsewhere, e.g. by
// a leftover snapshot "backup-<id>").
Result<uint64_t> ReserveBackupSequence(WormStore& store, std::string_view volume,
                                       uint64_t min_sequence = 0);
void ReleaseBackupSequence(WormStore& store, std::string_view volume, uint64_t sequence);
// Puts a manifest as the newest of its volume: sets `set.prev_sha256` to the
// SHA-256 of the volume's newest manifest object in the store (by sequence),
// puts the pages of the set's restore index (snapshot and full sets:
// snapshot/restore_index.h), encodes the manifest, puts it retained until
// set.retain_until_unix_ns, fills set.key and set.sha256, and last puts the
// index's top (a failure there is ignored: restores then read the manifest).
// Manifest puts of this process are serialized. The store's error on
// failure (then no manifest was put; index pages may have been, under keys
// no later set uses).
Status PutManifest(WormStore& store, BackupSet& set);

}  // namespace snapdisk
