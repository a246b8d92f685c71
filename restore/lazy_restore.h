// Instant ("lazy") restore: a backup set becomes a new volume that is usable
// at once, while its data is copied in behind the clients' back.
//
// StartLazyRestore creates the volume (the set's size), gives it a hydration
// map of the set's data ranges (engine/pool.h, "Hydration") and attaches a
// BackupSetSource that reads them from the store. From then on:
//  - a read of a block not yet hydrated fetches it from the store (the chunk
//    is decoded and checked against its content hash by ReadChunk; the last
//    few decoded chunks are cached, since a chunk's extents are adjacent);
//  - writes, trims and write-zeroes win over the backup's data;
//  - the HydrationJob it returns copies the rest, lowest offsets first, at a
//    configurable rate, with progress and an ETA.
// Work before the volume is usable does not grow with the set's data: it
// reads the top of the set's restore index (snapshot/restore_index.h: one
// small object, a line per GiB of data), creates the volume, writes the
// map's ranges (one per index page at most), commits once, and serves the
// first read (one index page, one chunk). The manifest, O(the set's chunks),
// is read by the job's first Step, which checks that it records the index
// (a mismatch fails the job with Corruption). Until then reads trust the
// index top as the store gave it (its own checksum, not yet the manifest's
// hash chain): a command that answers once the volume is usable and leaves
// the fill for later (`snapdisk restore`) has the check made by that fill. A set without an index
// is started from its manifest: O(its extents) before usable.
//
// Which store and set hydrate the volume is kept in its attribute
// "hydration-source" (JSON: {"format": "snapdisk-hydration-source",
// "version": 1, "store": <LazyRestoreOptions::store_locator>, "set": <id>,
// "index_sha256": <the set's restore index top's hash>} — or, for a set
// without an index, "manifest_sha256": <its manifest's hash>; and
// "rate_mb_per_s" when the fill was capped), so that after
// a reopen (or a crash: everything written and flushed stays, nothing
// hydrated before the last commit is fetched again) ResumeHydration attaches
// the source again and returns a job that continues where the last commit
// left off. The attribute goes when the volume is fully hydrated.
//
// Which sets: snapshot sets and full backups, whose extents are the complete
// image. A differential or incremental set needs its chain (restore it with
// restore/restore_apply.h); log segments hold no image.
//
// Lifetimes: the store must outlive the volume's use of the source — until
// the volume is hydrated, deleted, its source detached
// (Pool::AttachHydrationSource(volume, nullptr)), or the pool destroyed —
// because the pool holds the source after the job is gone (a cancelled job
// leaves the volume usable, reading through the source).
//
// Thread safety: StartLazyRestore, ResumeHydration, Step, Run and the
// destructor run on the pool's thread (the source's reads block it while a
// chunk is fetched: ~ms each). progress() and Cancel() may be called from any
// thread.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <future>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <unordered_map>
#include <vector>

#include "disk/clock.h"
#include "disk/essd_profile.h"
#include "disk/status.h"
#include "engine/hydration.h"
#include "engine/pool.h"
#include "engine/worm_store.h"
#include "snapshot/backup_set.h"
#include "snapshot/restore_index.h"

namespace snapdisk {

// The volume attribute naming a lazily restored volume's source.
inline constexpr const char* kHydrationSourceAttribute = "hydration-source";
// The volume attribute a fill that completes leaves in its place, in the
// same commit (JSON; HydrationResult): what the hydration read from the
// store, for `restore status` after the fill is gone.
inline constexpr const char* kHydrationResultAttribute = "hydration-result";

struct LazyRestoreOptions {
  // The new volume's profile (StartLazyRestore only).
  EssdLevel profile = EssdLevel::kUnlimited;
  // Background fill cap in 10^6 bytes/s; 0: as fast as the store and the
  // pool allow. Reads of clients are never capped.
  double rate_mb_per_s = 0;
  // Bytes one Step() fills at most (rounded up to a block): bounds how long
  // a step holds the pool's thread.
  uint64_t step_bytes = uint64_t{1} << 20;
  // Decoded chunks kept in memory (>= 1): memory is this many chunks.
  uint32_t cached_chunks = 4;
  // The job commits the pool once this many bytes left the hydration map
  // since its last commit (filled by the job, or by reads that filled the
  // chunks they fetched), so a crash refetches at most about that much (0:
  // only when the job finishes; clients' flushes commit too).
  uint64_t commit_every_bytes = uint64_t{64} << 20;
  // How to find the store again (e.g. its directory), recorded in the
  // attribute for people and tools; ResumeHydration identifies the set by
  // its manifest's hash, not by this.
  std::string store_locator;
  // When set, the source attached to the volume holds this reference to the
  // store, so the store lives as long as the pool reads through it (beyond
  // the job: a command that answers once the volume is usable). It must be
  // the store passed in. Null: the caller keeps the store alive (see
  // "Lifetimes" above).
  std::shared_ptr<WormStore> store_owner;
  // Paces the rate cap and times the job; null: the system's monotonic clock.
  // Must outlive the job.
  Clock* clock = nullptr;
};

// A HydrationSource over one complete-image backup set: the bytes of its
// extents, zeros between them. It finds extents through the set's restore
// index (snapshot/restore_index.h), reading a page of it when a read first
// needs one, so it starts after reading the index's top only; a set without
// an index is served from its manifest, all in memory. Reads chunks only
// through ReadChunk (so every chunk is checked against its content hash): a
// damaged chunk or index page fails the read with Corruption naming the set,
// a store error with the store's code, in context. Keeps the last
// `cached_chunks` decoded chunks and every index page it read (O(extents)
// at most, as the manifest). Counters are readable from any thread. `store`
// must outlive the source.
class BackupSetSource final : public HydrationSource {
 public:
  BackupSetSource(WormStore& store, RestoreIndex index, uint32_t cached_chunks);
  BackupSetSource(WormStore& store, const BackupSet& set, uint32_t cached_chunks);
  ~BackupSetSource() override;
  Status Read(uint64_t offset_bytes, std::span<std::byte> out) override;
  // Every extent of the chunk that holds `offset_bytes` in its index page
  // (the whole chunk is fetched and decoded to serve any byte of it): the
  // engine fills them all, so a chunk is read from the store once however
  // the volume is read. In a hole inside a page's span: the hole, at most the
  // MiB around the offset (zeros, fetched from nowhere). Empty outside every
  // page. Reads the index page when needed.
  Result<std::vector<std::pair<uint64_t, uint64_t>>> FetchedWith(uint64_t offset_bytes) override;
  uint64_t fetched_bytes() const override { return store_bytes_read(); }
  uint64_t image_fetch_bytes() const override { return set_stored_bytes().value_or(0); }
  // A chunk fetch costs a store read and a decode: the pool does it off its
  // thread. Read and FetchedWith are thread-safe (the cache and the pages
  // read so far are under a lock; store reads are not).
  bool background_fetch() const override { return true; }

  const std::string& set_id() const { return set_id_; }
  // What the set records of its source (for the restored volume's state).
  struct Origin {
    BackupType type = BackupType::kSnapshot;
    std::string volume;
    uint64_t volume_id = 0;  // 0: an older index did not record it
    uint64_t lineage = 0;
    uint64_t last_lsn = 0;
    int64_t consistent_unix_ns = 0;
  };
  const Origin& origin() const { return origin_; }
  uint64_t volume_size_bytes() const { return volume_size_bytes_; }
  // The set's data bytes (its extents' lengths): what a fill writes at most.
  // Unknown only for an index top written before it recorded them.
  std::optional<uint64_t> data_bytes() const { return data_bytes_; }
  // Where the set may hold data, as block-aligned, merged ranges: the spans
  // of its index pages (holes inside a span read as zeros), or of its
  // extents. O(pages) with an index.
  std::vector<Extent> DataRanges(uint32_t block_bytes) const;
  // With an index: reads the set's manifest and checks that it records this
  // index (CheckRestoreIndex) — the link of the hash chain a fast start
  // skips. OK at once without one (the manifest was read already).
  Status CheckAgainstManifest();
  uint64_t chunks_read() const { return chunks_read_.load(); }
  uint64_t store_bytes_read() const { return store_bytes_read_.load(); }  // chunk objects
  // The stored bytes of the set's distinct chunks (what a restore that reads
  // each once fetches): known once the manifest was read (a set without an
  // index; after CheckAgainstManifest), else nullopt. Any thread.
  std::optional<uint64_t> set_stored_bytes() const;

 private:
  Result<const RestoreIndexPage*> Page(size_t page);
  // The page and extent holding `offset_bytes`; a null extent in a hole.
  Result<std::pair<const RestoreIndexPage*, const RestoreIndexPage::Extent*>> Locate(
      uint64_t offset_bytes);
  // The chunk's decoded bytes, from the cache or the store (read outside the
  // lock; a thread that asks for a chunk another is fetching waits for that
  // fetch, so a chunk is read once however many threads want it).
  using ChunkResult = Result<std::shared_ptr<const std::vector<std::byte>>>;
  ChunkResult Chunk(const ChunkInfo& chunk);

  WormStore& store_;
  const std::string set_id_;
  const uint64_t volume_size_bytes_;
  const std::optional<uint64_t> data_bytes_;
  const Origin origin_;
  std::optional<RestoreIndex> index_;                     // none: pages_ came from the manifest
  std::vector<RestoreIndexPageRef> page_refs_;            // the pages' spans, in order
  std::vector<std::unique_ptr<RestoreIndexPage>> pages_;  // null: not read yet
  const uint32_t cached_chunks_;
  struct Cached {
    std::string hash;
    std::shared_ptr<const std::vector<std::byte>> data;
  };
  std::vector<Cached> cache_;  // most recently used last; under mu_
  std::unordered_map<std::string, std::shared_future<ChunkResult>> fetching_;  // under mu_
  std::mutex mu_;  // guards cache_, fetching_ and pages_ (Read and FetchedWith run on two threads)
  std::atomic<uint64_t> chunks_read_{0};
  std::atomic<uint64_t> store_bytes_read_{0};
  std::atomic<uint64_t> set_stored_bytes_{0};  // 0: not known yet
};

enum class HydrationJobState : uint8_t { kRunning, kDone, kFailed, kCancelled };
// "running", "done", "failed", "cancelled".
const char* HydrationJobStateName(HydrationJobState state);

struct HydrationProgress {
  std::string volume;
  std::string set_id;
  HydrationJobState state = HydrationJobState::kRunning;
  uint64_t total_bytes = 0;       // the volume's pending bytes when the job began
  uint64_t done_bytes = 0;        // of those, no longer pending (filled, or written by clients)
  uint64_t pending_bytes = 0;     // still to come from the store
  uint64_t filled_bytes = 0;      // copied by this job
  uint64_t chunks_read = 0;       // chunks fetched, for the fill and for clients' reads
  uint64_t store_bytes_read = 0;  // bytes of chunk objects fetched
  // The stored bytes of the set's distinct chunks (what reading each chunk
  // once costs; 0 until the job's first step read the manifest), and
  // store_bytes_read over it (0 when unknown).
  uint64_t set_stored_bytes = 0;
  double read_amplification = 0;
  double rate_bytes_per_s = 0;  // filled_bytes over the time so far
  double eta_s = 0;             // pending_bytes at that rate; 0 when unknown or done
  // RTO figures, from the call that started the job: until the volume was
  // usable (StartLazyRestore/ResumeHydration returned), and until nothing was
  // pending (0 until then).
  double usable_after_s = 0;
  double hydrated_after_s = 0;
};

class HydrationJob {
 public:
  // Does not detach the source: the volume stays usable after the job.
  ~HydrationJob();
  HydrationJob(const HydrationJob&) = delete;
  HydrationJob& operator=(const HydrationJob&) = delete;

  // Fills at most step_bytes (none while the rate cap says wait) and returns
  // true once the job has finished (then result()). Blocks only for the
  // fill's chunk reads and block writes (Pool::HydrateStep). The step that
  // finds nothing pending removes the attribute and commits the pool.
  bool Step();
  // Step until finished, sleeping when the rate cap says so and polling the
  // pool between steps; calls `progress` about every 100 ms (false cancels).
  Status Run(const std::function<bool(const HydrationProgress&)>& progress = {});
  // OK once done; the error that stopped the job (Cancelled after Cancel()).
  const Status& result() const { return result_; }
  HydrationProgress progress() const;
  // Stops filling at the next Step (any thread); the volume stays hydrating
  // with its source attached, and ResumeHydration can continue later.
  void Cancel() { cancel_requested_.store(true); }

 private:
  friend Result<std::unique_ptr<HydrationJob>> StartLazyRestore(Pool&, WormStore&, std::string_view,
                                                                std::string_view,
                                                                const LazyRestoreOptions&);
  friend Result<std::unique_ptr<HydrationJob>> ResumeHydration(Pool&, std::string_view, WormStore&,
                                                               const LazyRestoreOptions&);
  HydrationJob(Pool& pool, std::string volume, std::string set_id,
               std::shared_ptr<BackupSetSource> source, const LazyRestoreOptions& options,
               int64_t started_ns);
  // Serves the first read of the set's data (the end of "usable"), then
  // takes the map's figures (or finishes at once when nothing is pending).
  Status Begin();
  void Finish(HydrationJobState state, Status status);
  // Nothing is pending any more: removes the source attribute, records what
  // the hydration read (kHydrationResultAttribute), commits, and finishes.
  Status EndHydration();
  // Commits when commit_every_bytes left the map since the last commit.
  Status CommitIfDue(uint64_t pending_bytes);
  Status UpdatePending();

  Pool& pool_;
  const std::string volume_;
  const std::string set_id_;
  const std::shared_ptr<BackupSetSource> source_;  // null when nothing was pending
  const LazyRestoreOptions options_;
  Clock& clock_;
  const int64_t started_ns_;
  int64_t next_fill_ns_ = 0;
  // Pending bytes at the last commit: reads fill whole chunks too, so the
  // job commits by what left the map, whoever filled it.
  uint64_t pending_at_commit_ = 0;
  bool manifest_checked_ = false;  // the first Step checks the index against the manifest
  Status result_;
  bool finished_ = false;
  std::atomic<bool> cancel_requested_{false};
  // For progress() from any thread.
  std::atomic<HydrationJobState> state_{HydrationJobState::kRunning};
  std::atomic<uint64_t> total_bytes_{0};
  std::atomic<uint64_t> pending_bytes_{0};
  std::atomic<uint64_t> filled_bytes_{0};
  std::atomic<int64_t> usable_ns_{0};
  std::atomic<int64_t> hydrated_ns_{0};
};

// Restores snapshot or full set `set_id` of `store` into the new volume
// `new_volume` of `pool`, instantly (see the file comment), and commits the
// pool before returning, so the volume, its map and its attribute survive a
// crash. Errors change nothing (a volume already created is deleted again):
// NotFound (set), InvalidArgument (options; a set that is not a complete
// image), AlreadyExists (volume), NoSpace naming the bytes needed and free
// when the pool has less free space than the set's data (a fill that could
// never finish), the pool's and the store's errors.
Result<std::unique_ptr<HydrationJob>> StartLazyRestore(Pool& pool, WormStore& store,
                                                       std::string_view set_id,
                                                       std::string_view new_volume,
                                                       const LazyRestoreOptions& options);

// What a lazily restored volume's "hydration-source" attribute records (for
// whoever resumes it: the store to open, the cap to fill at). NotFound when
// the volume has none (not restored lazily, or hydrated); Corruption when it
// is malformed.
struct HydrationSourceRecord {
  std::string store_locator;
  std::string set_id;
  double rate_mb_per_s = 0;  // the fill's cap when it was started; 0: none
};
Result<HydrationSourceRecord> GetHydrationSourceRecord(Pool& pool, std::string_view volume);

// What the job that completed a volume's hydration measured (the
// "hydration-result" attribute). Its figures count from when that job's
// source was attached: after a crash or a restart, from the resume on.
struct HydrationResult {
  std::string set_id;
  int64_t finished_unix_ns = 0;   // the system clock
  uint64_t store_bytes_read = 0;  // chunk objects fetched, for the fill and for reads
  uint64_t set_stored_bytes = 0;  // the set's distinct chunks (0: not known)
};
// NotFound when the volume has none (never instantly restored, still
// hydrating, its last blocks filled by reads with no job running, a copy
// restore since replaced its data, or filled by a build that did not record
// it); Corruption for an attribute that does not decode.
Result<HydrationResult> GetHydrationResult(Pool& pool, std::string_view volume);

// Opens the store a volume's restore recorded (HydrationSourceRecord::
// store_locator). For the CLI and the server: the directory store there.
using HydrationStoreOpener =
    std::function<Result<std::shared_ptr<WormStore>>(const std::string& locator)>;

// The source of a hydrating volume, found from what its restore recorded
// (the "hydration-source" attribute): the store opened by `open_store`
// (empty: the directory store at the recorded locator, read-only, so it
// reads beside a process that has the store open), and the set checked to be
// the one the volume came from, as ResumeHydration does. The source owns the
// store. NotFound (no attribute; no store recorded), the store's errors,
// InvalidArgument (another set under that id).
Result<std::shared_ptr<HydrationSource>> OpenRecordedHydrationSource(
    Pool& pool, std::string_view volume, const HydrationStoreOpener& open_store = {});
// The same as a PoolOptions::hydration_source_resolver: whoever opens a pool
// with it reads instantly restored volumes after a restart, with nothing to
// run first (the CLI, `snapdisk serve`; a library user sets it in the
// options given to PoolFile::Open or Pool::Open).
std::function<Result<std::shared_ptr<HydrationSource>>(Pool&, std::string_view)>
RecordedHydrationSourceResolver(HydrationStoreOpener open_store = {});

// Attaches the source of a lazily restored volume again (after a reopen, a
// crash, or a cancelled job) and returns a job that finishes its hydration.
// NotFound when the volume has no "hydration-source" attribute or the store
// has no such set; InvalidArgument when the store's set is not the one the
// volume was restored from (another index or manifest hash). A volume found fully
// hydrated gets its attribute removed and a job that is done at once.
Result<std::unique_ptr<HydrationJob>> ResumeHydration(Pool& pool, std::string_view volume,
                                                      WormStore& store,
                                                      const LazyRestoreOptions& options);

}  // namespace snapdisk
