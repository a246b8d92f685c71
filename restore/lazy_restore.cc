// Instant restore from a backup set (the contract is in
// restore/lazy_restore.h; the engine side in engine/pool.h, "Hydration").
#include "restore/lazy_restore.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_map>

#include "disk/bytes.h"
#include "engine/aligned_buffer.h"
#include "restore/restore_state.h"

namespace snapdisk {

namespace {

// Decoded chunks a source attached on demand caches (as
// LazyRestoreOptions::cached_chunks by default).
constexpr uint32_t kResolvedCachedChunks = 4;

using Json = nlohmann::ordered_json;

constexpr const char* kAttributeFormat = "snapdisk-hydration-source";
// The rate cap may let this much run ahead after an idle spell.
constexpr int64_t kPaceBurstNs = 100'000'000;

// The stored bytes of the distinct chunks of `chunks`.
uint64_t DistinctStoredBytes(const std::vector<ChunkInfo>& chunks) {
  std::unordered_map<std::string_view, uint64_t> by_hash;
  for (const ChunkInfo& c : chunks) by_hash.emplace(c.hash, c.stored_bytes);
  uint64_t total = 0;
  for (const auto& [hash, bytes] : by_hash) total += bytes;
  return total;
}

bool IsCompleteImage(BackupType type) {
  return type == BackupType::kSnapshot || type == BackupType::kFull;
}

// The attribute names the set and how to recognise it: by its restore
// index's hash (a fast start read only that), or its manifest's (a set
// without an index).
std::string EncodeAttribute(const LazyRestoreOptions& options, const std::string& set_id,
                            const std::string& index_sha256, const std::string& manifest_sha256) {
  Json j;
  j["format"] = kAttributeFormat;
  j["version"] = 1;
  j["store"] = options.store_locator;
  j["set"] = set_id;
  if (options.rate_mb_per_s > 0) j["rate_mb_per_s"] = options.rate_mb_per_s;
  if (!index_sha256.empty()) j["index_sha256"] = index_sha256;
  if (!manifest_sha256.empty()) j["manifest_sha256"] = manifest_sha256;
  return j.dump();
}

struct SourceAttribute {
  std::string store;
  std::string set;
  std::string index_sha256;  // one of these two
  std::string manifest_sha256;
  double rate_mb_per_s = 0;
};

Result<SourceAttribute> DecodeAttribute(std::string_view text, std::string_view volume) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption("volume '" + std::string(volume) + "': attribute " +
                              kHydrationSourceAttribute + " " + why);
  };
  const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return bad("is not a JSON object");
  auto text_field = [&](const char* name, std::string* out, bool required) -> Status {
    auto it = j.find(name);
    if (it == j.end() && !required) return Status::OK();
    if (it == j.end() || !it->is_string())
      return bad(std::string("has no string \"") + name + "\"");
    *out = it->get<std::string>();
    return Status::OK();
  };
  std::string format;
  SNAPDISK_RETURN_IF_ERROR(text_field("format", &format, true));
  auto version = j.find("version");
  if (format != kAttributeFormat || version == j.end() || !version->is_number_integer() ||
      version->get<int64_t>() != 1) {
    return bad("is not version 1 of " + std::string(kAttributeFormat));
  }
  SourceAttribute a;
  SNAPDISK_RETURN_IF_ERROR(text_field("store", &a.store, true));
  SNAPDISK_RETURN_IF_ERROR(text_field("set", &a.set, true));
  SNAPDISK_RETURN_IF_ERROR(text_field("index_sha256", &a.index_sha256, false));
  SNAPDISK_RETURN_IF_ERROR(
      text_field("manifest_sha256", &a.manifest_sha256, a.index_sha256.empty()));
  if (auto rate = j.find("rate_mb_per_s"); rate != j.end()) {
    if (!rate->is_number() || !(rate->get<double>() > 0)) return bad("has a bad \"rate_mb_per_s\"");
    a.rate_mb_per_s = rate->get<double>();
  }
  return a;
}

// The source of set `set_id`: through its restore index when it has one
// (reads the index's top only), else through its manifest. NotFound naming
// the set; InvalidArgument for a set that is not a complete image.
Result<std::shared_ptr<BackupSetSource>> OpenSource(WormStore& store, std::string_view set_id,
                                                    uint32_t cached_chunks,
                                                    std::string* index_sha256,
                                                    std::string* manifest_sha256) {
  Result<RestoreIndex> index = FindRestoreIndex(store, set_id);
  if (index.ok()) {
    *index_sha256 = index->sha256;
    return std::make_shared<BackupSetSource>(store, *std::move(index), cached_chunks);
  }
  if (!index.status().IsNotFound()) return index.status();
  SNAPDISK_ASSIGN_OR_RETURN(BackupSet set, FindBackupSet(store, set_id));
  if (!IsCompleteImage(set.type)) {
    return Status::InvalidArgument(
        "set " + set.id + " is a " + BackupTypeName(set.type) +
        " backup: a lazy restore needs a complete image (a snapshot or full set)" +
        (set.type == BackupType::kLog ? std::string() : "; restore its chain instead"));
  }
  *manifest_sha256 = set.sha256;
  return std::make_shared<BackupSetSource>(store, set, cached_chunks);
}

// The source the attribute records, from `store`: the set must be the one
// the volume came from (the same index or, for a set without one, the same
// manifest).
Result<std::shared_ptr<BackupSetSource>> OpenRecordedSource(WormStore& store,
                                                            const SourceAttribute& attribute,
                                                            std::string_view volume,
                                                            uint32_t cached_chunks) {
  const std::string context = "volume '" + std::string(volume) + "' hydrates from set " +
                              attribute.set + " (store " + attribute.store + ")";
  std::string index_sha256;
  std::string manifest_sha256;
  Result<std::shared_ptr<BackupSetSource>> opened =
      OpenSource(store, attribute.set, cached_chunks, &index_sha256, &manifest_sha256);
  if (!opened.ok()) return opened.status().WithContext(context);
  const bool by_index = !attribute.index_sha256.empty();
  const std::string& want = by_index ? attribute.index_sha256 : attribute.manifest_sha256;
  const std::string& have = by_index ? index_sha256 : manifest_sha256;
  if (want != have) {
    return Status::InvalidArgument(context + ": its " + (by_index ? "restore index" : "manifest") +
                                   " has sha256 " + want + ", but this store's set " +
                                   attribute.set + " has " +
                                   (have.empty() ? std::string("none") : have) +
                                   ": another store (the volume's is '" + attribute.store + "')");
  }
  return opened;
}

// A set's source together with the store it reads (attached on demand: the
// pool then holds the only reference to the store).
class OwningSource final : public HydrationSource {
 public:
  OwningSource(std::shared_ptr<WormStore> store, std::shared_ptr<BackupSetSource> source)
      : store_(std::move(store)), source_(std::move(source)) {}
  Status Read(uint64_t offset_bytes, std::span<std::byte> out) override {
    return source_->Read(offset_bytes, out);
  }
  Result<std::vector<std::pair<uint64_t, uint64_t>>> FetchedWith(uint64_t offset_bytes) override {
    return source_->FetchedWith(offset_bytes);
  }
  uint64_t fetched_bytes() const override { return source_->fetched_bytes(); }
  uint64_t image_fetch_bytes() const override { return source_->image_fetch_bytes(); }
  bool background_fetch() const override { return source_->background_fetch(); }

 private:
  std::shared_ptr<WormStore> store_;  // outlives source_ (declared first)
  std::shared_ptr<BackupSetSource> source_;
};

// What the pool holds: the source, owning the store when the caller asked.
std::shared_ptr<HydrationSource> Attached(const LazyRestoreOptions& options,
                                          std::shared_ptr<BackupSetSource> source) {
  if (options.store_owner == nullptr) return source;
  return std::make_shared<OwningSource>(options.store_owner, std::move(source));
}

Status ValidateOptions(const LazyRestoreOptions& o) {
  if (!(o.rate_mb_per_s >= 0) || !std::isfinite(o.rate_mb_per_s)) {
    return Status::InvalidArgument("hydration rate must be >= 0 MB/s (got " +
                                   std::to_string(o.rate_mb_per_s) + ")");
  }
  if (o.step_bytes == 0) return Status::InvalidArgument("hydration step must be > 0 bytes");
  if (o.cached_chunks == 0) return Status::InvalidArgument("at least one chunk must be cached");
  return Status::OK();
}

}  // namespace

const char* HydrationJobStateName(HydrationJobState state) {
  switch (state) {
    case HydrationJobState::kRunning:
      return "running";
    case HydrationJobState::kDone:
      return "done";
    case HydrationJobState::kFailed:
      return "failed";
    case HydrationJobState::kCancelled:
      return "cancelled";
  }
  return "unknown";
}

// ---- BackupSetSource ----------------------------------------------------------------

BackupSetSource::BackupSetSource(WormStore& store, RestoreIndex index, uint32_t cached_chunks)
    : store_(store),
      set_id_(index.id),
      volume_size_bytes_(index.volume_size_bytes),
      data_bytes_(index.data_bytes),
      origin_{index.type,    index.volume,   index.volume_id,
              index.lineage, index.last_lsn, index.consistent_unix_ns},
      page_refs_(index.pages),
      pages_(index.pages.size()),
      cached_chunks_(std::max<uint32_t>(1, cached_chunks)) {
  index_ = std::move(index);
}

BackupSetSource::BackupSetSource(WormStore& store, const BackupSet& set, uint32_t cached_chunks)
    : store_(store),
      set_id_(set.id),
      volume_size_bytes_(set.volume_size_bytes),
      data_bytes_(set.data_bytes),
      origin_{set.type,    set.volume,   set.volume_id,
              set.lineage, set.last_lsn, set.consistent_unix_ns},
      cached_chunks_(std::max<uint32_t>(1, cached_chunks)) {
  set_stored_bytes_.store(DistinctStoredBytes(set.chunks));
  // One in-memory page holding every extent of the manifest.
  if (set.extents.empty()) return;
  auto page = std::make_unique<RestoreIndexPage>();
  page->chunks = set.chunks;
  std::unordered_map<std::string_view, uint32_t> by_hash;
  for (size_t i = 0; i < set.chunks.size(); ++i) {
    by_hash.emplace(set.chunks[i].hash, static_cast<uint32_t>(i));
  }
  page->extents.reserve(set.extents.size());
  for (const ChunkExtent& e : set.extents) {
    auto it = by_hash.find(e.chunk);
    // DecodeManifest guarantees every extent names one of the set's chunks.
    SNAPDISK_CHECK(it != by_hash.end(), "a manifest's extents name its chunks");
    page->extents.push_back({e.offset_bytes, e.length_bytes, it->second, e.chunk_offset_bytes});
  }
  RestoreIndexPageRef ref;
  ref.first_offset_bytes = set.extents.front().offset_bytes;
  ref.end_offset_bytes = set.extents.back().offset_bytes + set.extents.back().length_bytes;
  ref.extents = static_cast<uint32_t>(set.extents.size());
  page_refs_.push_back(ref);
  pages_.push_back(std::move(page));
}

BackupSetSource::~BackupSetSource() = default;

std::optional<uint64_t> BackupSetSource::set_stored_bytes() const {
  const uint64_t bytes = set_stored_bytes_.load();
  if (bytes == 0) return std::nullopt;
  return bytes;
}

std::vector<Extent> BackupSetSource::DataRanges(uint32_t block_bytes) const {
  std::vector<Extent> out;
  auto add = [&](uint64_t offset, uint64_t end) {
    // A set made on a pool with smaller blocks may cover part of a block:
    // the source reads zeros for the rest.
    const uint64_t first = offset / block_bytes * block_bytes;
    end = std::min((end + block_bytes - 1) / block_bytes * block_bytes, volume_size_bytes_);
    if (!out.empty() && first <= out.back().offset_bytes + out.back().length_bytes) {
      out.back().length_bytes = std::max(out.back().offset_bytes + out.back().length_bytes, end) -
                                out.back().offset_bytes;
    } else {
      out.push_back(Extent{first, end - first, false});
    }
  };
  if (index_) {
    for (const RestoreIndexPageRef& p : page_refs_) add(p.first_offset_bytes, p.end_offset_bytes);
  } else if (!pages_.empty()) {
    for (const RestoreIndexPage::Extent& e : pages_[0]->extents) {
      add(e.offset_bytes, e.offset_bytes + e.length_bytes);
    }
  }
  return out;
}

Status BackupSetSource::CheckAgainstManifest() {
  if (!index_) return Status::OK();
  SNAPDISK_ASSIGN_OR_RETURN(BackupSet set, FindBackupSet(store_, set_id_));
  SNAPDISK_RETURN_IF_ERROR(CheckRestoreIndex(*index_, set));
  set_stored_bytes_.store(DistinctStoredBytes(set.chunks));
  return Status::OK();
}

Result<const RestoreIndexPage*> BackupSetSource::Page(size_t page) {
  std::lock_guard<std::mutex> lock(mu_);  // a page is read once, under the lock
  if (pages_[page] == nullptr) {
    SNAPDISK_ASSIGN_OR_RETURN(RestoreIndexPage read, ReadRestoreIndexPage(store_, *index_, page));
    pages_[page] = std::make_unique<RestoreIndexPage>(std::move(read));
  }
  return pages_[page].get();
}

Result<std::shared_ptr<const std::vector<std::byte>>> BackupSetSource::Chunk(
    const ChunkInfo& chunk) {
  std::promise<ChunkResult> fetched;
  {
    std::unique_lock<std::mutex> lock(mu_);
    for (size_t i = 0; i < cache_.size(); ++i) {
      if (cache_[i].hash != chunk.hash) continue;
      std::rotate(cache_.begin() + i, cache_.begin() + i + 1, cache_.end());  // most recent last
      return cache_.back().data;
    }
    // Another thread is fetching it: wait for that fetch (once per chunk).
    if (auto it = fetching_.find(chunk.hash); it != fetching_.end()) {
      std::shared_future<ChunkResult> other = it->second;
      lock.unlock();
      return other.get();
    }
    fetching_.emplace(chunk.hash, fetched.get_future().share());
  }
  ChunkResult result = [&]() -> ChunkResult {
    SNAPDISK_ASSIGN_OR_RETURN(std::vector<std::byte> read,
                              ReadChunk(store_, chunk, "set " + set_id_));
    chunks_read_.fetch_add(1);
    store_bytes_read_.fetch_add(chunk.stored_bytes);
    return std::make_shared<const std::vector<std::byte>>(std::move(read));
  }();
  std::lock_guard<std::mutex> lock(mu_);
  fetching_.erase(chunk.hash);
  if (result.ok()) {
    if (cache_.size() >= cached_chunks_) cache_.erase(cache_.begin());
    cache_.push_back(Cached{chunk.hash, *result});
  }
  fetched.set_value(result);
  return result;
}

Result<std::pair<const RestoreIndexPage*, const RestoreIndexPage::Extent*>> BackupSetSource::Locate(
    uint64_t offset_bytes) {
  auto ref = std::upper_bound(
      page_refs_.begin(), page_refs_.end(), offset_bytes,
      [](uint64_t offset, const RestoreIndexPageRef& p) { return offset < p.end_offset_bytes; });
  if (ref == page_refs_.end() || ref->first_offset_bytes > offset_bytes) {
    return std::pair<const RestoreIndexPage*, const RestoreIndexPage::Extent*>(nullptr, nullptr);
  }
  SNAPDISK_ASSIGN_OR_RETURN(const RestoreIndexPage* page,
                            Page(static_cast<size_t>(ref - page_refs_.begin())));
  auto it = std::upper_bound(page->extents.begin(), page->extents.end(), offset_bytes,
                             [](uint64_t offset, const RestoreIndexPage::Extent& e) {
                               return offset < e.offset_bytes + e.length_bytes;
                             });
  if (it == page->extents.end() || it->offset_bytes > offset_bytes) {
    return std::pair<const RestoreIndexPage*, const RestoreIndexPage::Extent*>(page, nullptr);
  }
  return std::pair<const RestoreIndexPage*, const RestoreIndexPage::Extent*>(page, &*it);
}

Result<std::vector<std::pair<uint64_t, uint64_t>>> BackupSetSource::FetchedWith(
    uint64_t offset_bytes) {
  SNAPDISK_ASSIGN_OR_RETURN(auto found, Locate(offset_bytes));
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  const auto [page, extent] = found;
  if (page == nullptr) return ranges;  // outside every page: not pending
  if (extent == nullptr) {
    // A hole inside the page's span: zeros, fetched from nowhere; it goes
    // at once (it becomes a hole in the volume).
    auto next = std::upper_bound(
        page->extents.begin(), page->extents.end(), offset_bytes,
        [](uint64_t offset, const RestoreIndexPage::Extent& e) { return offset < e.offset_bytes; });
    uint64_t end = next == page->extents.end() ? volume_size_bytes_ : next->offset_bytes;
    uint64_t begin = 0;
    if (next != page->extents.begin()) {
      const RestoreIndexPage::Extent& prev = *(next - 1);
      begin = prev.offset_bytes + prev.length_bytes;
    }
    // At most the MiB around the offset: zeros cost nothing to fetch, but
    // filling a GiB-long hole would hold the read that asked for one block.
    constexpr uint64_t kHoleUnitBytes = uint64_t{1} << 20;
    begin = std::max(begin, offset_bytes / kHoleUnitBytes * kHoleUnitBytes);
    end = std::min(end, begin + kHoleUnitBytes);
    ranges.emplace_back(begin, end - begin);
    return ranges;
  }
  // A chunk's extents are mostly neighbours in the page (it was cut from
  // the image in order); one whose content repeats is listed at each place.
  for (const RestoreIndexPage::Extent& e : page->extents) {
    if (e.chunk != extent->chunk) continue;
    if (!ranges.empty() && ranges.back().first + ranges.back().second == e.offset_bytes) {
      ranges.back().second += e.length_bytes;
    } else {
      ranges.emplace_back(e.offset_bytes, e.length_bytes);
    }
  }
  return ranges;
}

Status BackupSetSource::Read(uint64_t offset_bytes, std::span<std::byte> out) {
  const uint64_t end = offset_bytes + out.size();
  if (end < offset_bytes || end > volume_size_bytes_) {
    return Status::InvalidArgument("set " + set_id_ + ": read of " + std::to_string(out.size()) +
                                   " bytes at " + std::to_string(offset_bytes) +
                                   " is beyond its volume's " + std::to_string(volume_size_bytes_) +
                                   " bytes");
  }
  std::memset(out.data(), 0, out.size());  // between extents: zeros
  // Pages, and extents in a page, are sorted and disjoint: start at the
  // first that ends after offset_bytes.
  auto ref = std::upper_bound(
      page_refs_.begin(), page_refs_.end(), offset_bytes,
      [](uint64_t offset, const RestoreIndexPageRef& p) { return offset < p.end_offset_bytes; });
  for (; ref != page_refs_.end() && ref->first_offset_bytes < end; ++ref) {
    SNAPDISK_ASSIGN_OR_RETURN(const RestoreIndexPage* page,
                              Page(static_cast<size_t>(ref - page_refs_.begin())));
    auto it = std::upper_bound(page->extents.begin(), page->extents.end(), offset_bytes,
                               [](uint64_t offset, const RestoreIndexPage::Extent& e) {
                                 return offset < e.offset_bytes + e.length_bytes;
                               });
    for (; it != page->extents.end() && it->offset_bytes < end; ++it) {
      const ChunkInfo& chunk = page->chunks[it->chunk];
      SNAPDISK_ASSIGN_OR_RETURN(std::shared_ptr<const std::vector<std::byte>> data, Chunk(chunk));
      const uint64_t a = std::max(offset_bytes, it->offset_bytes);
      const uint64_t b = std::min(end, it->offset_bytes + it->length_bytes);
      const uint64_t in_chunk = it->chunk_offset_bytes + (a - it->offset_bytes);
      if (in_chunk + (b - a) > data->size()) {
        return Status::Corruption("set " + set_id_ + ": chunk " + chunk.hash + " holds " +
                                  std::to_string(data->size()) + " bytes, extent at " +
                                  std::to_string(it->offset_bytes) + " needs " +
                                  std::to_string(in_chunk + (b - a)));
      }
      std::memcpy(out.data() + (a - offset_bytes), data->data() + in_chunk, b - a);
    }
  }
  return Status::OK();
}

// ---- HydrationJob ---------------------------------------------------------------------

HydrationJob::HydrationJob(Pool& pool, std::string volume, std::string set_id,
                           std::shared_ptr<BackupSetSource> source,
                           const LazyRestoreOptions& options, int64_t started_ns)
    : pool_(pool),
      volume_(std::move(volume)),
      set_id_(std::move(set_id)),
      source_(std::move(source)),
      options_(options),
      clock_(options.clock != nullptr ? *options.clock : SystemClock::Get()),
      started_ns_(started_ns) {}

HydrationJob::~HydrationJob() = default;

Status HydrationJob::UpdatePending() {
  SNAPDISK_ASSIGN_OR_RETURN(HydrationInfo info, pool_.GetHydrationInfo(volume_));
  pending_bytes_.store(info.pending_bytes);
  return Status::OK();
}

Status HydrationJob::Begin() {
  SNAPDISK_ASSIGN_OR_RETURN(HydrationInfo info, pool_.GetHydrationInfo(volume_));
  total_bytes_.store(info.pending_bytes);
  pending_bytes_.store(info.pending_bytes);
  pending_at_commit_ = info.pending_bytes;
  if (info.hydrating && info.source_attached) {
    // Usable means serving reads: the first read of the set's data (a
    // pending block, so it comes from the store) is part of the time.
    const std::vector<Extent> ranges = source_->DataRanges(pool_.block_bytes());
    SNAPDISK_ASSIGN_OR_RETURN(Volume * volume, pool_.OpenVolume(volume_));
    AlignedBuffer block(pool_.block_bytes());  // the pool's device may be O_DIRECT
    SNAPDISK_RETURN_IF_ERROR(volume->Read(ranges.front().offset_bytes, {block.data(), block.size()})
                                 .WithContext("the first read"));
  }
  const int64_t now = clock_.NowNs();
  usable_ns_.store(now);
  next_fill_ns_ = now;
  // Nothing to copy (an all-zeros set, or hydrated before a crash).
  if (!info.hydrating) SNAPDISK_RETURN_IF_ERROR(EndHydration());
  return Status::OK();
}

Status HydrationJob::EndHydration() {
  // The map went with the last pending block; the source attribute goes,
  // and what the hydration read comes, in one commit.
  Status s = pool_.RemoveAttribute(volume_, kHydrationSourceAttribute);
  if (s.IsNotFound()) s = Status::OK();
  if (s.ok()) {
    const HydrationProgress p = progress();
    const int64_t now_unix_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                                    std::chrono::system_clock::now().time_since_epoch())
                                    .count();
    const nlohmann::ordered_json result = {{"set", set_id_},
                                           {"finished_unix_ns", now_unix_ns},
                                           {"store_bytes_read", p.store_bytes_read},
                                           {"set_stored_bytes", p.set_stored_bytes}};
    s = pool_.SetAttribute(volume_, kHydrationResultAttribute, result.dump());
  }
  if (s.ok()) s = pool_.Commit();
  SNAPDISK_RETURN_IF_ERROR(s);
  hydrated_ns_.store(clock_.NowNs());
  Finish(HydrationJobState::kDone, Status::OK());
  return Status::OK();
}

void HydrationJob::Finish(HydrationJobState state, Status status) {
  result_ = std::move(status);
  finished_ = true;
  state_.store(state);
}

bool HydrationJob::Step() {
  if (finished_) return true;
  if (cancel_requested_.load()) {
    Finish(HydrationJobState::kCancelled,
           Status::Cancelled("hydration of volume '" + volume_ + "' from set " + set_id_ +
                             " was cancelled (the volume stays usable, reading the rest from "
                             "the store)"));
    return true;
  }
  auto fail = [&](const Status& s) {
    Finish(HydrationJobState::kFailed,
           s.WithContext("hydrating volume '" + volume_ + "' from set " + set_id_));
    return true;
  };
  const double rate_bytes_per_ns = options_.rate_mb_per_s * 1e6 / 1e9;
  int64_t now = 0;
  if (rate_bytes_per_ns > 0) {
    now = clock_.NowNs();
    if (now < next_fill_ns_) {
      // The cap says wait; reads may have filled meanwhile.
      Result<HydrationInfo> info = pool_.GetHydrationInfo(volume_);
      if (!info.ok()) return fail(info.status());
      pending_bytes_.store(info->pending_bytes);
      if (Status s = CommitIfDue(info->pending_bytes); !s.ok()) return fail(s);
      return false;
    }
  }
  if (!manifest_checked_ && source_ != nullptr) {
    // The link of the hash chain the fast start skipped (once; ~the time
    // reading the whole manifest takes).
    if (Status s = source_->CheckAgainstManifest(); !s.ok()) return fail(s);
    manifest_checked_ = true;
    return false;
  }
  Result<uint64_t> filled = pool_.HydrateStep(volume_, options_.step_bytes);
  if (!filled.ok()) return fail(filled.status());
  filled_bytes_.fetch_add(*filled);
  if (rate_bytes_per_ns > 0 && *filled > 0) {
    next_fill_ns_ =
        std::max(next_fill_ns_, now - kPaceBurstNs) +
        static_cast<int64_t>(std::ceil(static_cast<double>(*filled) / rate_bytes_per_ns));
  }
  Result<HydrationInfo> info = pool_.GetHydrationInfo(volume_);
  if (!info.ok()) return fail(info.status());
  pending_bytes_.store(info->pending_bytes);
  if (!info->hydrating) {
    if (Status s = EndHydration(); !s.ok()) return fail(s);
    return true;
  }
  if (Status s = CommitIfDue(info->pending_bytes); !s.ok()) return fail(s);
  return false;
}

Status HydrationJob::CommitIfDue(uint64_t pending_bytes) {
  if (options_.commit_every_bytes == 0 ||
      pending_at_commit_ < pending_bytes + options_.commit_every_bytes) {
    return Status::OK();
  }
  pending_at_commit_ = pending_bytes;
  return pool_.Commit();
}

Status HydrationJob::Run(const std::function<bool(const HydrationProgress&)>& progress) {
  auto last = std::chrono::steady_clock::now();
  while (!Step()) {
    if (progress) {
      const auto now = std::chrono::steady_clock::now();
      if (now - last >= std::chrono::milliseconds(100)) {
        last = now;
        if (!progress(this->progress())) Cancel();
      }
    }
    pool_.Poll(0);  // clients' requests keep moving between steps
    if (options_.rate_mb_per_s > 0 && !cancel_requested_.load()) {
      const int64_t now = clock_.NowNs();
      if (now < next_fill_ns_) clock_.SleepUntilNs(std::min(next_fill_ns_, now + 100'000'000));
    }
  }
  if (progress) (void)progress(this->progress());
  return result_;
}

HydrationProgress HydrationJob::progress() const {
  HydrationProgress p;
  p.volume = volume_;
  p.set_id = set_id_;
  p.state = state_.load();
  p.total_bytes = total_bytes_.load();
  p.pending_bytes = pending_bytes_.load();
  p.done_bytes = p.total_bytes > p.pending_bytes ? p.total_bytes - p.pending_bytes : 0;
  p.filled_bytes = filled_bytes_.load();
  if (source_) {
    p.chunks_read = source_->chunks_read();
    p.store_bytes_read = source_->store_bytes_read();
    p.set_stored_bytes = source_->set_stored_bytes().value_or(0);
    if (p.set_stored_bytes > 0) {
      p.read_amplification =
          static_cast<double>(p.store_bytes_read) / static_cast<double>(p.set_stored_bytes);
    }
  }
  const int64_t usable = usable_ns_.load();
  const int64_t hydrated = hydrated_ns_.load();
  if (usable != 0) p.usable_after_s = static_cast<double>(usable - started_ns_) / 1e9;
  if (hydrated != 0) p.hydrated_after_s = static_cast<double>(hydrated - started_ns_) / 1e9;
  const int64_t end_ns = hydrated != 0 ? hydrated : clock_.NowNs();
  const int64_t elapsed_ns = end_ns - (usable != 0 ? usable : started_ns_);
  if (elapsed_ns > 0) {
    p.rate_bytes_per_s =
        static_cast<double>(p.filled_bytes) * 1e9 / static_cast<double>(elapsed_ns);
  }
  if (p.state == HydrationJobState::kRunning && p.rate_bytes_per_s > 0 && p.pending_bytes > 0) {
    p.eta_s = static_cast<double>(p.pending_bytes) / p.rate_bytes_per_s;
  }
  return p;
}

Result<std::shared_ptr<HydrationSource>> OpenRecordedHydrationSource(
    Pool& pool, std::string_view volume, const HydrationStoreOpener& open_store) {
  SNAPDISK_ASSIGN_OR_RETURN(std::string text, pool.GetAttribute(volume, kHydrationSourceAttribute));
  SNAPDISK_ASSIGN_OR_RETURN(SourceAttribute attribute, DecodeAttribute(text, volume));
  if (attribute.store.empty()) {
    return Status::NotFound(
        "its restore recorded no store (`snapdisk restore resume --store DIR`)");
  }
  Result<std::shared_ptr<WormStore>> store =
      open_store ? open_store(attribute.store) : [&]() -> Result<std::shared_ptr<WormStore>> {
    DirStoreOptions options;
    options.read_only = true;  // reads beside whoever has the store open
    SNAPDISK_ASSIGN_OR_RETURN(std::unique_ptr<WormStore> opened,
                              OpenDirStore(attribute.store, options));
    return std::shared_ptr<WormStore>(std::move(opened));
  }();
  if (!store.ok()) return store.status().WithContext("store " + attribute.store);
  SNAPDISK_ASSIGN_OR_RETURN(std::shared_ptr<BackupSetSource> source,
                            OpenRecordedSource(**store, attribute, volume, kResolvedCachedChunks));
  return std::shared_ptr<HydrationSource>(
      std::make_shared<OwningSource>(*std::move(store), std::move(source)));
}

std::function<Result<std::shared_ptr<HydrationSource>>(Pool&, std::string_view)>
RecordedHydrationSourceResolver(HydrationStoreOpener open_store) {
  return [open_store = std::move(open_store)](Pool& pool, std::string_view volume) {
    return OpenRecordedHydrationSource(pool, volume, open_store);
  };
}

Result<HydrationSourceRecord> GetHydrationSourceRecord(Pool& pool, std::string_view volume) {
  SNAPDISK_ASSIGN_OR_RETURN(std::string text, pool.GetAttribute(volume, kHydrationSourceAttribute));
  SNAPDISK_ASSIGN_OR_RETURN(SourceAttribute a, DecodeAttribute(text, volume));
  return HydrationSourceRecord{a.store, a.set, a.rate_mb_per_s};
}

Result<HydrationResult> GetHydrationResult(Pool& pool, std::string_view volume) {
  SNAPDISK_ASSIGN_OR_RETURN(std::string text, pool.GetAttribute(volume, kHydrationResultAttribute));
  try {
    const nlohmann::json j = nlohmann::json::parse(text);
    HydrationResult r;
    r.set_id = j.at("set").get<std::string>();
    r.finished_unix_ns = j.at("finished_unix_ns").get<int64_t>();
    r.store_bytes_read = j.at("store_bytes_read").get<uint64_t>();
    r.set_stored_bytes = j.at("set_stored_bytes").get<uint64_t>();
    return r;
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption("volume '" + std::string(volume) + "': attribute " +
                              kHydrationResultAttribute + " does not decode: " + e.what());
  }
}

// ---- Starting and resuming --------------------------------------------------------------

Result<std::unique_ptr<HydrationJob>> StartLazyRestore(Pool& pool, WormStore& store,
                                                       std::string_view set_id,
                                                       std::string_view new_volume,
                                                       const LazyRestoreOptions& options) {
  Clock& clock = options.clock != nullptr ? *options.clock : SystemClock::Get();
  const int64_t started = clock.NowNs();
  SNAPDISK_RETURN_IF_ERROR(ValidateOptions(options));
  std::string index_sha256;
  std::string manifest_sha256;
  SNAPDISK_ASSIGN_OR_RETURN(
      std::shared_ptr<BackupSetSource> source,
      OpenSource(store, set_id, options.cached_chunks, &index_sha256, &manifest_sha256));
  const std::string id = source->set_id();
  // The fill writes the set's data: refuse up front a pool without room for
  // it, rather than leave a volume that cannot finish hydrating.
  uint64_t data_bytes = 0;
  if (std::optional<uint64_t> known = source->data_bytes()) {
    data_bytes = *known;
  } else {
    SNAPDISK_ASSIGN_OR_RETURN(BackupSet set, FindBackupSet(store, id));  // an older index
    data_bytes = set.data_bytes;
  }
  if (const PoolInfo info = pool.Info(); data_bytes > info.free_bytes) {
    return Status::NoSpace("an instant restore of set " + id + " into volume '" +
                           std::string(new_volume) + "' needs up to " + HumanBytes(data_bytes) +
                           " of pool space for its data, and the pool has " +
                           HumanBytes(info.free_bytes) +
                           " free; grow the pool or free space first (nothing was changed)");
  }
  SNAPDISK_RETURN_IF_ERROR(
      pool.CreateVolume(new_volume, source->volume_size_bytes(), options.profile)
          .status()
          .WithContext("lazy restore of set " + id));
  // From here on an error deletes the new volume again (with its attribute
  // and map): nothing is left behind.
  const std::string volume(new_volume);
  auto undo = [&](const Status& why) {
    (void)pool.DeleteVolume(volume);
    return why.WithContext("lazy restore of set " + id + " into volume '" + volume + "'");
  };
  const std::vector<Extent> ranges = source->DataRanges(pool.block_bytes());
  // The volume's restore state says where it came from (`restore status`),
  // open at once: nothing can be applied to an instant restore.
  const BackupSetSource::Origin& origin = source->origin();
  RestoreState state;
  state.phase = RestorePhase::kOpen;
  state.source_volume = origin.volume;
  state.source_volume_id = origin.volume_id;
  state.lineage = origin.lineage;
  state.lsn = origin.last_lsn;
  state.unix_ns = origin.consistent_unix_ns;
  state.full = state.last_set = state.last_data_set = id;
  state.instant = true;
  state.applied.push_back({id, origin.type, 0, origin.last_lsn});
  Status s = pool.SetAttribute(volume, kHydrationSourceAttribute,
                               EncodeAttribute(options, id, index_sha256, manifest_sha256));
  if (s.ok()) s = pool.SetAttribute(volume, kRestoreStateAttribute, EncodeRestoreState(state));
  if (s.ok()) s = pool.BeginHydration(volume, ranges);
  if (s.ok() && !ranges.empty()) s = pool.AttachHydrationSource(volume, Attached(options, source));
  if (s.ok()) s = pool.Commit();
  if (!s.ok()) return undo(s);
  std::unique_ptr<HydrationJob> job(
      new HydrationJob(pool, volume, id, std::move(source), options, started));
  if (Status b = job->Begin(); !b.ok()) return undo(b);
  return job;
}

Result<std::unique_ptr<HydrationJob>> ResumeHydration(Pool& pool, std::string_view volume,
                                                      WormStore& store,
                                                      const LazyRestoreOptions& options) {
  Clock& clock = options.clock != nullptr ? *options.clock : SystemClock::Get();
  const int64_t started = clock.NowNs();
  SNAPDISK_RETURN_IF_ERROR(ValidateOptions(options));
  Result<std::string> text = pool.GetAttribute(volume, kHydrationSourceAttribute);
  if (text.status().IsNotFound() && pool.GetVolume(volume).ok()) {
    return Status::NotFound("volume '" + std::string(volume) +
                            "' was not restored lazily (it has no " + kHydrationSourceAttribute +
                            " attribute)");
  }
  if (!text.ok()) return text.status();
  SNAPDISK_ASSIGN_OR_RETURN(SourceAttribute attribute, DecodeAttribute(*text, volume));
  SNAPDISK_ASSIGN_OR_RETURN(HydrationInfo info, pool.GetHydrationInfo(volume));
  std::shared_ptr<BackupSetSource> source;
  if (info.hydrating) {
    SNAPDISK_ASSIGN_OR_RETURN(source,
                              OpenRecordedSource(store, attribute, volume, options.cached_chunks));
    SNAPDISK_RETURN_IF_ERROR(pool.AttachHydrationSource(volume, Attached(options, source)));
  }
  std::unique_ptr<HydrationJob> job(new HydrationJob(pool, std::string(volume), attribute.set,
                                                     std::move(source), options, started));
  SNAPDISK_RETURN_IF_ERROR(job->Begin());
  return job;
}

}  // namespace snapdisk
