// Pool: a snapdisk storage pool on one BlockDevice — volumes, snapshots and
// clones as copy-on-write block maps over shared blocks (engine/FORMAT.md).
//
// Lifecycle: Create() formats a device, Open() opens a formatted one (reading
// only the two superblocks and the catalog: no data scan), Close() commits and
// lets go. Destroying a Pool without Close() commits too, unless the pool has
// failed; uncommitted state is simply lost, as in a crash.
//
// Durability: Commit() (and a volume flush, which commits) makes everything
// done before it durable, atomically. Catalog operations — create, delete,
// grow, snapshot, clone, rollback — are atomic and visible at once, and
// durable at the next commit, like writes: a crash before it loses the
// operation whole, never half of it. (Committing costs two device flushes;
// callers that need the operation durable now call Commit(), as the CLI and
// the NBD server do before they reply.) A write is durable after the next
// commit; until then a crash keeps it or loses it whole per block.
//
// Failure: if a device error or corruption interrupts an operation that was
// changing metadata, the pool *fails*: that call returns its own error
// (NoSpace, IOError, Corruption) prefixed "pool failed (reopen it)", every
// later call returns IOError saying the same, and the last commit on disk is
// intact. (When a commit the pool started itself — to bound memory or to free
// space for a waiting write — fails it, the next call gets that error with its
// own code.)
// Errors that leave memory consistent (bad arguments, not found, a read's
// checksum mismatch, NoSpace before anything changed) do not fail the pool.
//
// Names: 1-128 characters of letters, digits, '.', '_' and '-'.
//
// Operations defined outside engine/: snapshots (create, delete, list, diff)
// in snapshot/snapshot.cc, clone and rollback in restore/clone.cc.
//
// Thread safety: a Pool and its Volumes are driven by one thread at a time
// (callers serialize every call, as with the device). The device must outlive
// the Pool.
#pragma once

#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "disk/block_device.h"
#include "disk/clock.h"
#include "disk/essd_profile.h"
#include "engine/block_cache.h"
#include "engine/block_map.h"
#include "engine/format.h"
#include "engine/hydration.h"
#include "engine/space_map.h"
#include "engine/volume.h"

namespace snapdisk {

class Volume;
struct PendingIo;
class PendingRanges;
struct HydrationState;
class HydrationFetcher;

struct PoolOptions {
  // Block size for Create(): a power of two from 4 KiB to 64 KiB. Open() takes
  // it from the pool.
  uint32_t block_bytes = 4096;
  // Memory for cached metadata (map nodes, space-map and catalog blocks).
  uint64_t cache_bytes = uint64_t{256} << 20;
  // Volume requests accepted at once, over all volumes; Submit beyond is Busy.
  uint32_t max_requests = 1024;
  // Time source for QoS pacing and latency; null: the system's monotonic
  // clock. Must outlive the pool.
  Clock* clock = nullptr;
  // Time source for creation times and log records (ns since the Unix
  // epoch); empty: the real wall clock.
  std::function<int64_t()> wall_clock_ns;
  // Data the write log of a volume without a policy keeps referenced before
  // it drops its oldest records (see Pool, "The write log").
  uint64_t log_unshipped_limit_bytes = uint64_t{256} << 20;
  // Instant restores after a reopen: called on the pool's thread when a read,
  // a partial write or HydrateStep needs a pending block of a hydrating
  // volume that has no source attached (the process that restored it is
  // gone, it crashed, or its fill stopped). It returns the source to attach
  // (the pool keeps it, as AttachHydrationSource does), or an error: that
  // request then fails with IOError "volume 'V' is hydrating and its source
  // is not attached: <why>", and so does every request in the next second
  // (the error cached), after which the next one asks again. It may read the
  // pool's attributes; it must not change the pool. Empty: such requests
  // fail without asking. restore/lazy_restore.h has the one the CLI and the
  // server use (RecordedHydrationSourceResolver: the store the volume's
  // restore recorded).
  std::function<Result<std::shared_ptr<HydrationSource>>(Pool& pool, std::string_view volume)>
      hydration_source_resolver;
};

struct PoolInfo {
  uint32_t block_bytes = 0;
  uint64_t pool_bytes = 0;  // the device's usable size
  uint64_t used_bytes = 0;  // blocks in use (data and metadata)
  uint64_t free_bytes = 0;
  uint64_t metadata_bytes = 0;  // the space map's fixed region and the superblocks
  uint64_t generation = 0;      // commits so far
  uint64_t volumes = 0;
  uint64_t snapshots = 0;
  uint64_t cache_bytes = 0;  // metadata cached now
  // Problems Open noticed and worked around, e.g. a damaged superblock slot
  // (the pool then opened at the previous commit). Fsck reports them too.
  std::vector<std::string> warnings;
};

struct VolumeInfo {
  std::string name;
  uint64_t id = 0;
  uint64_t size_bytes = 0;
  EssdLevel profile = EssdLevel::kUnlimited;
  int64_t created_unix_ns = 0;
  uint64_t snapshots = 0;
  uint64_t lsn = 0;      // writes so far (the log sequence number)
  uint64_t lineage = 0;  // random, unique beyond the pool; changes at every rollback
  std::string origin;    // "VOL@SNAP" a clone was made from, else empty
};

struct SnapshotInfo {
  std::string volume;
  std::string name;
  uint64_t id = 0;
  uint64_t size_bytes = 0;
  int64_t created_unix_ns = 0;
  uint64_t lsn = 0;
  // Data bytes only this snapshot references, and bytes it shares with the
  // volume or other snapshots (filled by ListSnapshots(..., with_usage)).
  uint64_t exclusive_bytes = 0;
  uint64_t shared_bytes = 0;
};

class Pool {
 public:
  // Formats `device` as an empty pool. InvalidArgument for a bad block size
  // or a device too small; IOError from the device.
  static Result<std::unique_ptr<Pool>> Create(BlockDevice& device, const PoolOptions& options);
  // Opens a formatted device. Corruption when neither superblock is valid or
  // the catalog fails its checksums; Unsupported for another format version.
  static Result<std::unique_ptr<Pool>> Open(BlockDevice& device, const PoolOptions& options);
  ~Pool();
  Pool(const Pool&) = delete;
  Pool& operator=(const Pool&) = delete;

  // Waits for volume I/O in flight, then makes every change durable.
  Status Commit();
  // Commit, then no further calls but the destructor.
  Status Close();

  PoolInfo Info() const;
  uint32_t block_bytes() const { return block_bytes_; }
  BlockDevice& device() { return device_; }
  // The time source of QoS pacing and latencies (PoolOptions::clock).
  Clock& clock() const { return options_.clock ? *options_.clock : SystemClock::Get(); }
  // OK, or the error that failed the pool.
  const Status& health() const { return failure_; }

  // ---- Volumes (engine/pool.cc) ----
  // A new, empty (all zeros) thin volume. AlreadyExists, InvalidArgument
  // (name; size not a positive multiple of 512; a PL size outside its range).
  Result<VolumeInfo> CreateVolume(std::string_view name, uint64_t size_bytes,
                                  EssdLevel profile = EssdLevel::kUnlimited);
  // Busy while the volume has I/O in flight; refused while it has snapshots.
  Status DeleteVolume(std::string_view name);
  // Grows (never shrinks) the volume to `new_size_bytes`.
  Status GrowVolume(std::string_view name, uint64_t new_size_bytes);
  std::vector<VolumeInfo> ListVolumes() const;
  Result<VolumeInfo> GetVolume(std::string_view name) const;
  // The pool-owned handle for I/O; valid until the volume is deleted or the
  // pool closed. The same handle is returned every time.
  Result<Volume*> OpenVolume(std::string_view name);

  // ---- Snapshots (snapshot/snapshot.cc) ----
  // O(1): shares the volume's map root. Writes completed before the call are
  // in the snapshot; writes still in flight are not.
  Result<SnapshotInfo> CreateSnapshot(std::string_view volume, std::string_view name);
  // O(blocks only the snapshot holds). Busy while the snapshot is open with
  // reads in flight or in use.
  // kInBackground: the snapshot is gone at once (as with kNow: its name is
  // free, it is not listed, the deletion is durable at the next commit), and
  // the blocks only it held are freed in slices of kReleaseRefsPerPoll by
  // Poll — the pool's thread then never stops for more than a slice — and
  // at the latest by the next commit, which finishes what is left first.
  // Their space comes back later accordingly.
  enum class Release : uint8_t { kNow, kInBackground };
  Status DeleteSnapshot(std::string_view volume, std::string_view name,
                        Release release = Release::kNow);
  // Map and data references a kInBackground deletion frees per Poll: ~50-100
  // us of the pool's thread.
  static constexpr size_t kReleaseRefsPerPoll = 4096;
  // A read-only handle on the snapshot (reads and flush; writes, trims and
  // write-zeroes are InvalidArgument). Pool-owned, like OpenVolume's.
  Result<Volume*> OpenSnapshot(std::string_view volume, std::string_view name);
  // Oldest first. With `with_usage`, fills exclusive/shared bytes (walks the
  // snapshot's map: O(its mapped blocks)).
  Result<std::vector<SnapshotInfo>> ListSnapshots(std::string_view volume, bool with_usage = false);
  // Changed ranges between snapshot `from` and snapshot `to` of one volume, or
  // the live volume when `to` is empty; merged, in increasing order. Cost:
  // O(changed map nodes). An empty `from` means "from nothing" (every mapped
  // range of `to`).
  Result<std::vector<Extent>> Diff(std::string_view volume, std::string_view from,
                                   std::string_view to);

  // ---- Snapshot reads off the pool's thread (engine/volume.cc) ----
  // For a backup whose workers copy a snapshot while this thread serves the
  // volume — the ESSD backend copying a snapshot outside the disk's I/O
  // path: the pool's thread resolves where the blocks lie, any thread reads
  // them. Sound because a snapshot's blocks never change and are not freed
  // while it exists, and a snapshot marked in use (Volume::SetInUse) cannot
  // be deleted: the caller keeps it marked until its reads are done.
  //
  // One map entry per block of [first_vbn, first_vbn + count) of the open
  // snapshot handle `snapshot` (pbn 0: a hole). InvalidArgument for a volume
  // handle, a snapshot not marked in use or a range beyond its last block
  // (a size that ends inside a block has that block whole);
  // Unsupported when the device cannot be read beside its driving thread
  // (BlockDevice::SupportsConcurrentReads). Cost: O(mapped blocks in the
  // range) on the pool's cached map nodes.
  Result<std::vector<format::MapEntry>> ResolveSnapshotBlocks(const Volume& snapshot,
                                                              uint64_t first_vbn, uint64_t count);
  // Reads resolved blocks into `dest` (entries.size() blocks), zero-filling
  // holes and verifying every block's checksum (Corruption "checksum
  // mismatch at offset O (block P)", O from `first_vbn`, the first entry's
  // block). Thread-safe: any thread, concurrently with the pool's own.
  Status ReadResolvedBlocks(std::span<const format::MapEntry> entries, uint64_t first_vbn,
                            std::byte* dest);

  // ---- Restore inside the pool (restore/clone.cc) ----
  // A new volume sharing the snapshot's map: O(1), independent afterwards.
  Result<VolumeInfo> Clone(std::string_view volume, std::string_view snapshot,
                           std::string_view new_volume);
  // Resets the volume to the snapshot, O(1) plus freeing what only the
  // volume's current map held. Busy while the volume has I/O in flight or is
  // marked in use (Volume::SetInUse). Starts a new lineage.
  Status Rollback(std::string_view volume, std::string_view snapshot);

  // ---- The write log (engine/write_log.cc) ----
  // Every volume journals its mutations from creation on (log backup is on by
  // default): one record per write, trim or write-zeroes with its LSN, time
  // and range. Records do not copy data: they hold references to the blocks
  // the write produced, which stay allocated until the record is dropped —
  // after its log segment was shipped (snapshot/log_backup.h). Records and
  // references are committed with everything else, so a flushed write's
  // record survives any crash.
  //
  // Without a policy (SetLogRequired false), the log keeps at most
  // `PoolOptions::log_unshipped_limit_bytes` of referenced data: past it the
  // oldest records are dropped until a quarter of the limit is free — by
  // Poll, kLogDropBlocksPerPoll references at a time, or by the next commit,
  // whichever comes first — and LogInfo::dropped_through says so (a later
  // segment then reports the gap). With a policy nothing is
  // dropped unshipped and the log cannot be turned off.
  struct LogRecord {
    uint64_t index = 0;  // position in the volume's log: 1, 2, ... (never reused)
    uint64_t lsn = 0;
    uint64_t lineage = 0;
    int64_t time_unix_ns = 0;
    VolumeOp op = VolumeOp::kWrite;  // kWrite, kTrim or kWriteZeroes
    uint64_t offset_bytes = 0;
    uint64_t length_bytes = 0;
    uint64_t first_log_block = 0;  // internal: where the data references start
  };
  struct LogInfo {
    bool enabled = true;
    bool required = false;        // a policy holds the log on
    uint64_t first_index = 0;     // oldest record kept (0: none kept)
    uint64_t next_index = 1;      // the index the next record gets
    uint64_t dropped_through = 0; // records up to this index were dropped unshipped
    uint64_t records = 0;
    uint64_t referenced_bytes = 0;  // data blocks kept for the records
  };
  Result<LogInfo> GetLogInfo(std::string_view volume);
  // Turning the log off drops every record; refused (PermissionDenied) while
  // required.
  Status SetLogEnabled(std::string_view volume, bool enabled);
  Status SetLogRequired(std::string_view volume, bool required);
  // Records with index >= from_index, oldest first, at most max_records.
  Result<std::vector<LogRecord>> ReadLog(std::string_view volume, uint64_t from_index,
                                         size_t max_records);
  // The bytes a write record wrote (record.length_bytes of them), verified
  // against their checksums (Corruption naming the volume and LSN).
  Status ReadLogData(std::string_view volume, const LogRecord& record, std::span<std::byte> out);
  // Drops records with index <= through_index and lets their blocks go.
  Status DropLog(std::string_view volume, uint64_t through_index);

  // ---- Volume attributes (engine/attributes.cc) ----
  // Small named values kept with a volume (a backup policy, backup state),
  // committed like everything else and deleted with the volume. Keys follow
  // the name rules; values up to 64 KiB.
  Status SetAttribute(std::string_view volume, std::string_view key, std::string_view value);
  // NotFound when unset.
  Result<std::string> GetAttribute(std::string_view volume, std::string_view key);
  Status RemoveAttribute(std::string_view volume, std::string_view key);
  // The write fence: while a volume has the attribute kWriteFenceAttribute
  // ("write-fence"), Volume::Submit refuses its writes, trims and
  // write-zeroes with PermissionDenied "volume 'V': OP at offset O length L
  // refused: VALUE" (synchronously, no callback); reads and flushes are
  // served. VALUE says why (restore/restore_apply.h fences a volume while it
  // is restoring). Being an attribute, the fence is committed with
  // everything else, so it survives reopen and crash and binds every user of
  // the pool; requests accepted before it was set still complete. Writes
  // through a handle marked Volume::SetWriteFenceExempt (the fence's owner)
  // pass. Catalog operations (grow, snapshot, clone, rollback, delete) and
  // HydrateStep are not fenced. Cost per write: one hash lookup.
  static constexpr char kWriteFenceAttribute[] = "write-fence";

  // ---- Hydration: instant restore (engine/hydration.cc, engine/hydration.h) ----
  // A volume can carry a *hydration map*: blocks whose data must still come
  // from a HydrationSource (restore/lazy_restore.h attaches one that reads a
  // backup) and that nothing has written locally yet. Until they are filled:
  //  - Reads (Volume::Read and Submit) of pending blocks return the source's
  //    bytes, block by block (pending blocks from the source, the others from
  //    the volume); MapExtents reports pending blocks as data. Without a
  //    source attached such a read fails with IOError "volume 'X' is
  //    hydrating and its source is not attached" — never zeros; a source
  //    error fails the read with the source's code and message, in context.
  //  - Writes, trims and write-zeroes take the blocks they cover out of the
  //    map as they complete: the client's data wins over the source's,
  //    whatever the order of the client's requests and HydrateStep. A request
  //    that covers part of a pending block first reads that block from the
  //    source (read-modify-write), so the rest of the block keeps the source's
  //    bytes.
  //  - HydrateStep copies pending blocks into the volume. The copy changes
  //    nothing a reader sees: it is not journaled in the write log, leaves the
  //    LSN alone and bypasses QoS (callers pace it).
  //  - Durability: the map is committed with the data, atomically, like every
  //    catalog change. After a crash every block is in the volume as the last
  //    commit left it (hydrated or written) or still pending: no flushed write
  //    is lost and no block reads zeros instead of the source. Filled data not
  //    yet committed is fetched again.
  //  - When nothing is pending the map is removed (durable at the next
  //    commit); deleting the volume deletes it.
  //  - Snapshots: a snapshot of a hydrating volume does not see the source
  //    (its pending blocks would read zeros), so BeginHydration refuses a
  //    volume with snapshots and callers must not snapshot one until it is
  //    hydrated (GetHydrationInfo). Rollback likewise.
  // Cost: BeginHydration writes the ranges once, O(ranges) whatever the data
  // size; Open reads nothing of a map, OpenVolume loads it (O(ranges + bitmap
  // blocks), one bitmap block per 8 * block_bytes volume blocks); a commit
  // writes the bitmap blocks whose bits changed. Memory: O(pending runs).
  // Threading: the source is called synchronously on the pool's thread (see
  // HydrationSource), which blocks for as long as it takes.
  //
  // Makes `ranges` of `volume` pending (overlaps merge; `zero` must be false).
  // Each range starts on a block boundary and ends on one or at the volume's
  // end. Data the volume already holds in those ranges is overridden by the
  // source's. No ranges: nothing to do. InvalidArgument (a range), NotFound,
  // AlreadyExists (already hydrating), Busy (the volume has snapshots or
  // requests in flight).
  Status BeginHydration(std::string_view volume, const std::vector<Extent>& ranges);
  // Attaches `source` to a hydrating volume (null: detaches it). The pool
  // holds it until it is replaced, the volume is hydrated or deleted, or the
  // pool is destroyed; it is not persisted. NotFound when not hydrating.
  Status AttachHydrationSource(std::string_view volume, std::shared_ptr<HydrationSource> source);
  // hydrating = false (and zeros) for a volume with nothing pending.
  Result<HydrationInfo> GetHydrationInfo(std::string_view volume);
  // Copies up to `max_bytes` (at least one block) of pending data, lowest
  // offsets first, from the source into the volume, and returns the bytes
  // filled (0: nothing is pending). Blocks the source holds as all zeros
  // become holes. Synchronous: the pool's thread waits for the source reads
  // and device writes (~max_bytes of each). Errors: IOError when no source is
  // attached; the source's error; NoSpace (after committing to make freed
  // space reusable); device errors. Runs filled before an error stay filled;
  // the failing run changes nothing unless the map update itself failed,
  // which fails the pool.
  Result<uint64_t> HydrateStep(std::string_view volume, uint64_t max_bytes);

  // Drives volume I/O: pushes queued work to the device and runs completion
  // callbacks of finished requests on this thread. Waits until at least
  // min(min_completions, requests in flight) callbacks ran; Poll(0) never
  // blocks. Returns the number of callbacks run.
  uint32_t Poll(uint32_t min_completions);
  // Volume requests accepted and not yet completed, over all volumes.
  uint32_t in_flight() const { return requests_in_flight_; }
  // When the next QoS admission or held completion is due, or now while a
  // background deletion has blocks left to free (the pool's clock;
  // INT64_MAX: none). The pool has no fd for these timers: an event loop
  // that sleeps on the device's eventfd wakes by then and calls Poll.
  int64_t NextTimerNs() const;
  // Readable (an eventfd) when work the pool does off its thread is ready:
  // a hydration source's fetch for a parked read (see "Hydration"). An event
  // loop that sleeps on the device's eventfd sleeps on this one too and
  // calls Poll when it fires.
  int background_event_fd() const;

  // ---- Internal interface for snapshot/, restore/ and tools (not for users) ----
  enum class Kind : uint8_t {
    kVolume = 1,
    kSnapshot = 2,
    kAttribute = 3,
    kLog = 4,
    kHydration = 5,
  };
  struct Record {
    uint64_t id = 0;  // 0: free slot
    uint64_t parent_id = 0;
    Kind kind = Kind::kVolume;
    EssdLevel profile = EssdLevel::kUnlimited;
    std::string name;
    uint64_t size_bytes = 0;
    TreeRoot root;
    int64_t created_unix_ns = 0;
    uint64_t lsn = 0;
    uint64_t lineage = 0;
    // kLog only: the write log's state (FORMAT.md, "write log").
    uint64_t log_next_index = 1;
    uint64_t log_first_index = 1;
    uint64_t log_dropped_through = 0;
    uint64_t log_next_block = 0;
    uint64_t log_first_block = 0;
    uint8_t log_flags = 0;
    // kHydration only: the hydration map's state (FORMAT.md, "hydration map").
    uint64_t hydration_ranges = 0;          // entries in the range blocks
    uint64_t hydration_total_blocks = 0;    // pending at BeginHydration
    uint64_t hydration_pending_blocks = 0;  // pending now
  };
  BlockMap& block_map() { return *map_; }
  SpaceMap& space_map() { return *space_; }

 private:
  friend class Volume;
  friend struct PendingIo;
  friend class Fsck;

  Pool(BlockDevice& device, const PoolOptions& options, uint32_t block_bytes,
       const format::SpaceMapGeometry& geometry, uint64_t pool_blocks);
  Status LoadCatalog();
  Status WriteCatalog();
  // `force`: write a new generation even with nothing dirty (releases the
  // blocks the previous commit freed; see SpaceMap).
  Status CommitLocked(bool force);
  Status Fail(Status why);
  Status CheckHealthy() const;
  // A commit the pool starts itself (memory bound, space waiters): its
  // error, if any, goes to the next caller.
  void CommitInBackground();
  int64_t WallNowNs() const;

  // Catalog helpers.
  Result<size_t> FindVolumeSlot(std::string_view name) const;
  Result<size_t> FindSnapshotSlot(uint64_t volume_id, std::string_view name) const;
  size_t AllocateSlot();
  void FreeSlot(size_t slot);
  void MarkRecordDirty(size_t slot);
  // The record's tree changed: write its dirty nodes at commit.
  void MarkRootDirty(size_t slot);
  static std::string SnapshotKey(uint64_t volume_id, std::string_view name);
  Status ValidateVolumeSize(uint64_t size_bytes, EssdLevel profile) const;
  uint64_t CountSnapshots(uint64_t volume_id) const;
  VolumeInfo MakeVolumeInfo(const Record& r) const;
  SnapshotInfo MakeSnapshotInfo(const Record& r) const;
  Status NewVolumeRecord(std::string_view name, uint64_t size_bytes, EssdLevel profile,
                         const TreeRoot& root, uint64_t parent_id, size_t* slot_out);
  // Attribute and write-log records, by AuxKey().
  static std::string AuxKey(Kind kind, uint64_t volume_id, std::string_view name);
  Result<size_t> FindLogSlot(std::string_view volume);
  // The new volume's write log (enabled), in NewVolumeRecord.
  void NewLogRecord(uint64_t volume_id);
  // Frees the attribute and log records of a volume being deleted.
  Status DeleteAuxRecords(uint64_t volume_id);
  // Journals a completed mutation of `volume` (engine/write_log.cc).
  Status AppendLog(const Volume& volume, VolumeOp op, uint64_t offset_bytes, uint64_t length_bytes,
                   const std::vector<format::MapEntry>* blocks);
  // Extra metadata a write of `blocks` needs for its log references.
  uint64_t LogMetadataNeed(const Volume& volume, uint64_t blocks) const;
  // Commit, step 1: drops what logs without a policy keep beyond the limit,
  // then writes pending log records into record blocks.
  Status CommitLogs();
  Result<LogRecord> ReadLogRecord(size_t log_slot, uint64_t index);
  // Data blocks kept by logs that no policy requires (they give way when the
  // pool is full).
  uint64_t UnrequiredLogBlocks() const;
  Status DropLogThrough(size_t log_slot, uint64_t through_index);
  // The oldest records of logs_over_limit_ whose data starts below
  // min(first block + max_blocks, the log's target), for Poll: a commit that
  // dropped 112 MiB of references at once held the pool's thread ~1 ms.
  Status DropLogsOverLimit(uint64_t max_blocks);
  Status DropLogBelow(size_t slot, uint64_t target_block);
  static constexpr uint64_t kLogDropBlocksPerPoll = 2048;
  // Logs without a policy past the limit, by slot: the first data block
  // their dropping stops at (a quarter of the limit free).
  std::map<size_t, uint64_t> logs_over_limit_;
  // Hydration maps (engine/hydration.cc). The state of a hydrating volume,
  // loaded; null when the volume is not hydrating. OpenVolume loads it first
  // (LoadHydration), so every I/O path finds it loaded.
  HydrationState* FindHydration(uint64_t volume_id) const;
  Status LoadHydration(uint64_t volume_id);
  // Reads and checks a hydration record's tree, filling `pending`.
  // Corruption naming the volume and what is wrong (also for fsck).
  Status ReadHydrationMap(size_t slot, PendingRanges* pending);
  // Attaches the source through options_.hydration_source_resolver when none
  // is; IOError saying why when there is none to attach.
  Status EnsureHydrationSource(const HydrationState& h, const Record& volume);
  // Reads blocks [first_vbn, first_vbn + count) of `volume` from its source.
  Status ReadFromSource(const HydrationState& h, const Record& volume, uint64_t first_vbn,
                        uint64_t count, std::byte* dest);
  // Fills [first_vbn, first_vbn + count) (at most kMaxFillRunBlocks) into
  // the volume from `data` (the source's bytes for those blocks), or from the
  // source when `data` is null.
  Status FillRun(size_t vol_slot, HydrationState& h, uint64_t first_vbn, uint64_t count,
                 const std::byte* data = nullptr);
  // Fills the pending blocks of [first_vbn, end_vbn), in runs of at most
  // kMaxFillRunBlocks, from `data` (the source's bytes from first_vbn on) or,
  // when null, from the source. False: it stopped early without an error (no
  // room, or the hydration ended); what is left stays pending.
  Result<bool> FillPending(size_t vol_slot, uint64_t first_vbn, uint64_t end_vbn,
                           const std::byte* data);
  // A read that needs pending blocks whose source is attached: hands the
  // fetch to fetcher_ and parks `io` until its result (true), or false when
  // the read goes on at once (nothing pending, no source).
  bool ParkForFetch(PendingIo* io);
  // Fills what finished fetches brought and starts their parked reads again
  // (synchronously this time: what is still pending is read from the source).
  void ProcessFetchResults();
  // Before a request reads pending blocks of [first_vbn, first_vbn + count):
  // fills every pending block of the source's fetch units that hold them
  // (HydrationSource::FetchedWith). What it cannot fill (no units, no room)
  // stays pending, for the request to read from the source. Errors: the
  // source's (the request fails with them) or the pool's failure.
  Status FillFetched(size_t vol_slot, uint64_t first_vbn, uint64_t count);
  // A mutation of [first_vbn, first_vbn + count) reached the volume's map:
  // those blocks leave the hydration map (which may end it).
  Status HydrationWritten(const Volume& volume, uint64_t first_vbn, uint64_t count);
  Status TakePending(uint64_t volume_id, HydrationState& h, uint64_t first_vbn, uint64_t end_vbn);
  // Metadata a mutation of `blocks` blocks may add to the next commit's
  // hydration work, and what that work needs now (see CheckRoom).
  uint64_t HydrationMetadataNeed(const Volume& volume, uint64_t blocks) const;
  uint64_t HydrationMetadataNeed(const HydrationState& h, uint64_t blocks) const;
  uint64_t HydrationCommitNeed() const;
  // Commit, step 1b: ORs the done bits set since the last commit into the
  // maps' bitmap blocks.
  Status CommitHydration();
  // Volume handle bookkeeping (delete/rollback must see no I/O in flight).
  Volume* LiveVolume(uint64_t id) const;
  Status CheckIdle(const Record& volume) const;

  // I/O machinery (engine/volume.cc).
  void DrainDevice();
  void ProcessFinished();
  void SubmitToDevice(IoRequest* request);
  void PumpBacklog();
  // Moves due QoS timers on; returns the next pending timer (INT64_MAX: none).
  int64_t RunTimers();
  // NextTimerNs without background work: QoS timers only.
  int64_t NextQosTimerNs() const;
  uint32_t AsyncDeviceLimit() const;
  IoRequest* GetDeviceRequest();
  PendingIo* GetIo();
  // Submits one device request for `io` (counted in io->device_pending).
  void SubmitDeviceIo(PendingIo* io, IoOp op, uint64_t pbn, uint64_t blocks, std::byte* data);
  // The request is finished: its callback runs at the next Poll.
  void CompleteIo(PendingIo* io, Status status);
  void HoldSetup(PendingIo* io);
  void ReleaseSetup(PendingIo* io);
  // Moves `io` on after its device requests finished.
  void Advance(PendingIo* io);
  // `may_park`: a read of pending blocks may wait for a background fetch.
  void StartRead(PendingIo* io, bool may_park = true);
  void StartMutation(PendingIo* io);
  void StartBlockWrites(PendingIo* io);
  // Commits, then restarts writes that found only not-yet-reusable space.
  void RetrySpaceWaiters();
  // Space accounting: a mutation starts only if the free blocks cover its own
  // need, the map nodes that writes in flight may still shadow
  // (metadata_reserved_) and what the next commit allocates. So a map update
  // never runs out of space half-way, and NoSpace comes before anything changed.
  static constexpr uint64_t kCommitReserveBlocks = 64;
  // What a catalog operation may allocate: two records (a volume and its
  // log) in a catalog tree grown to full height.
  static constexpr uint64_t kCatalogOpBlocks = 2 * format::kMaxTreeHeight + 2;
  uint64_t MetadataNeed(const TreeRoot& root, uint64_t blocks) const;
  // `freeing`: the operation gives space back (trim): it may dip into the
  // commit's fixed margin, so a full pool can always be trimmed.
  Status CheckRoom(uint64_t blocks, bool freeing = false) const;
  uint64_t metadata_reserved_ = 0;
  void FinishMutation(PendingIo* io);
  // Reads the mapped blocks [first, first+count) of `io` into `dest`
  // (zero-filling holes), recording each block's map entry in io->entries.
  Status ReadMapped(PendingIo* io, uint64_t first_vbn, uint64_t count, std::byte* dest);
  Status VerifyRead(PendingIo* io, uint64_t first_vbn, uint64_t count, const std::byte* data);
  Record& RecordOf(const Volume& volume) { return records_[volume.slot_]; }
  // A new lineage id: random, 1 to 2^53 - 1, unique beyond this pool (see
  // pool.cc). Thread-safe.
  static uint64_t NewLineageId();

  BlockDevice& device_;
  const PoolOptions options_;
  const uint32_t block_bytes_;
  const uint64_t pool_blocks_;
  format::Superblock sb_;
  std::unique_ptr<BlockCache> cache_;
  std::unique_ptr<SpaceMap> space_;
  std::unique_ptr<BlockMap> map_;
  Status failure_;
  mutable Status unreported_failure_;  // see CommitInBackground
  bool closed_ = false;
  bool force_commit_ = false;  // commit even with nothing dirty (a new pool)

  // The catalog, in memory: records by slot, and indexes.
  std::vector<std::string> open_warnings_;
  std::vector<Record> records_;
  std::unordered_map<std::string, size_t> volume_by_name_;
  std::unordered_map<std::string, size_t> snapshot_by_key_;  // SnapshotKey() -> slot
  std::unordered_map<uint64_t, size_t> slot_by_id_;
  std::unordered_map<std::string, size_t> aux_by_key_;        // AuxKey() -> slot
  std::unordered_map<uint64_t, size_t> log_slot_by_volume_;  // volume id -> its log's slot
  // Log records not yet in record blocks, by log slot, oldest first.
  std::unordered_map<size_t, std::vector<LogRecord>> log_pending_;
  uint64_t log_pending_records_ = 0;  // over all logs (bounded by early commits)
  // A write found the pool full while logs without a policy kept blocks: the
  // next commit drops those logs whole.
  bool log_pressure_ = false;
  // Hydrating volumes, by volume id (one per hydration record).
  std::unordered_map<uint64_t, std::unique_ptr<HydrationState>> hydrations_;
  uint64_t hydration_dirty_blocks_ = 0;  // bitmap blocks with bits to commit
  // Source fetches off the pool's thread, and the reads parked on each (by
  // the fetch's id).
  std::unique_ptr<HydrationFetcher> fetcher_;
  std::unordered_map<uint64_t, std::vector<PendingIo*>> fetch_waiters_;
  uint64_t next_fetch_id_ = 0;
  std::vector<size_t> free_slots_;
  std::set<uint64_t> dirty_record_blocks_;  // catalog VBNs to rewrite at commit
  std::set<size_t> dirty_roots_;            // slots whose trees changed
  TreeRoot catalog_root_;

  std::unordered_map<uint64_t, std::unique_ptr<Volume>> volumes_;  // open handles by id

  std::vector<std::unique_ptr<PendingIo>> io_pool_;  // every PendingIo made so far
  std::vector<PendingIo*> free_ios_;
  // Requests between device completion and map update / user callback.
  std::vector<PendingIo*> finished_;
  std::vector<PendingIo*> completed_;
  std::vector<PendingIo*> delivering_;
  std::deque<IoRequest*> device_backlog_;  // waiting for room in the device queue
  // QoS timers: requests waiting for their start time, and finished requests
  // held until their completion time.
  std::multimap<int64_t, PendingIo*> admissions_;
  std::multimap<int64_t, PendingIo*> held_completions_;
  // Writes waiting for blocks freed since the last commit to become reusable.
  std::vector<PendingIo*> space_waiters_;
  std::vector<std::unique_ptr<IoRequest>> device_request_pool_;
  std::vector<IoRequest*> free_device_requests_;
  uint32_t device_in_flight_ = 0;
  uint32_t requests_in_flight_ = 0;
  bool polling_ = false;
};

}  // namespace snapdisk
