// Backup export files: one backup set, and every set it needs to be restored,
// copied out of a WormStore into a single standalone file that can be checked
// and restored from on its own (`snapdisk backup export --store DIR ID FILE`).
//
// What goes in: the set `id` and, for a differential or incremental set, its
// base chain back to the full (an incr's base, that base's base, ... the
// full); a snapshot, full or log set alone. Their manifests are copied as
// stored (so their SHA-256 and prev_sha256 links still hold) and so is every
// chunk object they reference (already compressed: export is a copy, not a
// recompression). Each object once, however many sets share it.
//
// FORMAT (version 1). Integers are little endian; "XXH3-128" is the 16-byte
// canonical (big-endian) form of XXH3_128bits, "XXH3-64" the 8-byte little-
// endian value of XXH3_64bits. Offsets are from the start of the file.
//
//   File header, 128 bytes:
//     0   16  magic "SNAPDISK-EXPORT\0"
//     16  u32 version = 1
//     20  u32 header_bytes = 128
//     24  u64 manifest_count       (1 or more)
//     32  u64 chunk_count
//     40  u64 chunk_bytes          the source store's WormStoreConfig
//     48  u32 zstd_level           ... (informational; chunks carry their own)
//     52  u32 reserved, zero
//     56  i64 exported_unix_ns     the source store's clock at export
//     64  32  target set id, ASCII, zero-padded (at most 31 bytes)
//     96  24  reserved, zero
//     120 u64 XXH3-64 of bytes [0, 120)
//
//   manifest_count + chunk_count sections, the manifests first (oldest set
//   first: the full, then each set built on it; the target last), then the
//   chunks sorted by key. One section:
//     0   4   magic "SDXS"
//     4   u8  type: 1 manifest, 2 chunk
//     5   u8  reserved, zero
//     6   u16 key_bytes            1-512
//     8   u64 payload_bytes        manifest: 1 to 2^28 (256 MiB); chunk: 12 to
//                                  67,371,020 (12 + ZSTD_COMPRESSBOUND(64 MiB))
//     16  i64 retain_until_unix_ns the object's retention in the source store
//     24  16  XXH3-128 of the payload (the WormStore's object checksum)
//     40  u64 XXH3-64 of bytes [0, 40) of the section and the key
//     48  key_bytes   key: the object's store key, "sets/<volume>/<seq>-<id>.json"
//                     or "chunks/<xx>/<hash>[.<n>]" (snapshot/backup_set.h)
//     48 + key_bytes  payload: the object's bytes exactly as stored (manifest
//                     JSON; chunk object "SDCK" ...)
//
//   Trailer, 64 bytes, right after the last section; the file ends with it:
//     0   16  magic "SNAPDISK-TRAILER"
//     16  u64 section_count        = manifest_count + chunk_count
//     24  u64 trailer_offset       its own offset (= file size - 64)
//     32  32  SHA-256 of every byte before the trailer
//
// Every byte is covered by a check: the header and each section header by
// their XXH3-64, payloads by their XXH3-128, and the whole file by the
// trailer's SHA-256 (which a reader can also keep elsewhere: see
// ExportReport::sha256). Chunks are also checked against their content hash
// (DecodeChunk), manifests by DecodeManifest and their key.
//
// Limits: at most 1,000,000 manifests and 2^32 chunks in a file; lengths are
// bounds-checked before anything is allocated, so hostile files produce a
// Status, never a crash or a huge allocation. Export and verify stream: they
// hold one object at a time (at most ~64 MiB for a chunk, a manifest whole)
// besides a list of the file's keys.
//
// Thread safety: the free functions may run concurrently (on different
// files). A BackupExportReader may be used from any thread once open (its
// index is immutable; reads are pread).
#pragma once

#include <cstdint>
#include <memory>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "disk/status.h"
#include "engine/worm_store.h"
#include "snapshot/backup_set.h"

namespace snapdisk {

inline constexpr uint32_t kBackupExportVersion = 1;

struct ExportOptions {
  // Replace an existing FILE (atomically: by rename). Without it an existing
  // FILE is refused with AlreadyExists and left alone.
  bool overwrite = false;
  // Decode every chunk against its hash before writing it, so a store object
  // that is damaged yet self-consistent fails the export (Corruption naming
  // the chunk and set) instead of yielding a file that fails verification.
  bool check_chunks = true;
  // (bytes of objects copied, bytes to copy: the objects' sizes from Head);
  // return false to cancel. Called on the exporting thread, once before the
  // first byte and after every object.
  WormProgress progress;
};

// One set in an export file (a summary of its manifest).
struct ExportedSet {
  std::string id;  // e.g. "I7"
  BackupType type = BackupType::kFull;
  std::string volume;
  uint64_t volume_id = 0;
  uint64_t lineage = 0;
  std::string base;  // "" for snapshot, full and log sets
  uint64_t first_lsn = 0;
  uint64_t last_lsn = 0;
  int64_t consistent_unix_ns = 0;
  uint64_t volume_size_bytes = 0;
  uint64_t data_bytes = 0;       // manifest's data_bytes
  uint64_t stored_bytes = 0;     // manifest's stored_bytes (added to its store)
  uint64_t chunk_count = 0;      // chunks the set references
  uint64_t chunk_raw_bytes = 0;  // their uncompressed sizes, summed
  int64_t retain_until_unix_ns = 0;
  std::string sha256;  // of the manifest object (as in the store)
};

// Something wrong in an export file.
struct ExportProblem {
  uint64_t offset_bytes = 0;  // where in the file (the section's start, or the point of failure)
  std::string what;           // names the section (index, type, key) and the fault
};

struct ExportReport {
  std::string path;
  std::string target_id;  // the set the file was made for (restore this one)
  uint32_t version = 0;
  uint64_t file_bytes = 0;
  int64_t exported_unix_ns = 0;
  WormStoreConfig config;         // the source store's
  std::vector<ExportedSet> sets;  // file order: oldest first, the target last
  uint64_t manifest_count = 0;
  uint64_t chunk_count = 0;
  uint64_t chunk_stored_bytes = 0;  // chunk payloads, summed
  std::string sha256;               // the trailer's SHA-256 (64 hex digits), verified
  std::vector<ExportProblem> problems;
  bool ok() const { return problems.empty(); }
};

// Writes `id` and the sets it depends on (see the file comment) from `store`
// to the file `path`, via a temporary file beside it (".<name>.<pid>.<n>.
// export-tmp") that is fsync'd and renamed into place, then the folder fsync'd:
// `path` is either absent, its old self, or the whole new file.
//  - NotFound naming the id (or a missing base or chunk object);
//    InvalidArgument for a malformed id; Corruption for a broken chain (a base
//    of another volume or lineage, LSNs that do not follow on) or a damaged
//    store object; AlreadyExists when `path` exists and !options.overwrite;
//    Cancelled when progress returned false; the file system's error else.
//    On any failure the temporary file is removed and `path` is untouched
//    (unless only the final fsync of the folder failed: the file is then in
//    place but its name may not survive a crash).
//  - `written`, when given, receives the report of what was written (as
//    VerifyBackupExport would give it).
// The store must outlive the call; it is only read.
Status ExportBackupSet(WormStore& store, std::string_view id, const std::string& path,
                       const ExportOptions& options = {}, ExportReport* written = nullptr);

// Reads the whole file and checks everything the format promises: magic,
// version, the header and every section header checksum, every payload's
// XXH3-128, every manifest (DecodeManifest, and that its key is its
// ManifestKey), every chunk (DecodeChunk: its content hash), that every chunk
// every manifest references is present and every chunk is referenced, that
// every diff/incr's base is present and links up (same volume and lineage, a
// diff on a full, LSNs that follow on), that the target set is present, the
// trailer, its SHA-256 over the file, and that nothing follows it.
//  - OK: the report (problems empty), with each set's summary.
//  - Corruption when anything is wrong: the message names the first problem
//    (section index, type, key, offset) and how many more were found; when
//    `damaged` is given it receives the report with every problem found (the
//    check goes on past a bad payload; a bad section header, a truncation or
//    a bad trailer ends it, since the lengths after it cannot be trusted).
//  - Unsupported for a version this build does not read; NotFound when the
//    file does not exist; Cancelled when progress (bytes read, file size)
//    returned false; IOError for read errors.
Result<ExportReport> VerifyBackupExport(const std::string& path, const WormProgress& progress = {},
                                        ExportReport* damaged = nullptr);

// A file opened for restore: its sets and objects, read from the file as from
// a store. Open reads the header, every section header (each checked) and
// every manifest (checksum and DecodeManifest), and the trailer; it does not
// read chunk payloads nor the SHA-256 (VerifyBackupExport does). Every read
// of an object checks its XXH3-128, so damage still shows up as Corruption.
class BackupExportReader {
 public:
  virtual ~BackupExportReader() = default;

  virtual const std::string& path() const = 0;
  virtual const std::string& target_id() const = 0;
  virtual int64_t exported_unix_ns() const = 0;
  // The file's sets, oldest first, target last; key, retain_until and sha256
  // filled in as ListBackupSets does.
  virtual const std::vector<BackupSet>& sets() const = 0;
  // NotFound naming the id when it is not in the file.
  virtual Result<BackupSet> FindSet(std::string_view id) const = 0;
  // The decoded (uncompressed) bytes of the chunk with content hash `hash`,
  // verified against it. NotFound when the file holds no such chunk.
  virtual Result<std::vector<std::byte>> Get(std::string_view hash) const = 0;
  // An object's stored bytes by store key (verified XXH3-128).
  virtual Result<std::vector<std::byte>> GetObject(std::string_view key) const = 0;
  // A read-only WormStore over the file's objects, so code that restores from
  // a store (FindBackupSet, ListBackupSets, restore) reads from the file
  // unchanged: Get, Head, List and Verify work (created_unix_ns is the export
  // time; the clock is the real one); Put, ExtendRetention, Delete and Expire
  // are refused with PermissionDenied. Owned by the reader (must outlive use).
  virtual WormStore& store() = 0;
};

// NotFound when the file does not exist; Corruption naming the section and
// offset for damage Open reads; Unsupported for another version.
Result<std::unique_ptr<BackupExportReader>> OpenBackupExport(const std::string& path);

// One or more export files read as one read-only store (OpenBackupExport
// each; an object several files hold is read from the first): what a restore
// from downloaded files reads — a full's file and the log backups' files
// after it restore to a point in time. Every read is verified as the single
// file's view verifies it. The errors of OpenBackupExport, naming the file;
// InvalidArgument for no path.
Result<std::unique_ptr<WormStore>> OpenBackupExports(const std::vector<std::string>& paths);

}  // namespace snapdisk
