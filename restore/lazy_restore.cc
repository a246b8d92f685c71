// Instant restore from a backup set (the contract is in
// restore/lazy_restore.h; the engine side in engine/pool.h, "Hydration").
#include "restore/lazy_restore.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstring>
#include <nlohmann/json.hpp>
#include <unordered_map>

namespace snapdisk {

namespace {

using Json = nlohmann::ordered_json;

constexpr const char* kAttributeFormat = "snapdisk-hydration-source";
// The rate cap may let this much run ahead after an idle spell.
constexpr int64_t kPaceBurstNs = 100'000'000;

bool IsCompleteImage(BackupType type) {
  return type == BackupType::kSnapshot || type == BackupType::kFull;
}

// The set's extents as block-aligned ranges of the pool's blocks (a set made
// on a pool with smaller blocks may cover part of a block: the source reads
// zeros for the rest), merged.
std::vector<Extent> BlockRanges(const BackupSet& set, uint32_t block_bytes) {
  std::vector<Extent> out;
  const uint64_t size = set.volume_size_bytes;
  for (const ChunkExtent& e : set.extents) {
    const uint64_t first = e.offset_bytes / block_bytes * block_bytes;
    const uint64_t end = std::min(
        (e.offset_bytes + e.length_bytes + block_bytes - 1) / block_bytes * block_bytes, size);
    if (!out.empty() && first <= out.back().offset_bytes + out.back().length_bytes) {
      out.back().length_bytes = std::max(out.back().offset_bytes + out.back().length_bytes, end) -
                                out.back().offset_bytes;
    } else {
      out.push_back(Extent{first, end - first, false});
    }
  }
  return out;
}

std::string EncodeAttribute(const LazyRestoreOptions& options, const BackupSet& set) {
  Json j;
  j["format"] = kAttributeFormat;
  j["version"] = 1;
  j["store"] = options.store_locator;
  j["set"] = set.id;
  j["manifest_sha256"] = set.sha256;
  return j.dump();
}

struct SourceAttribute {
  std::string store;
  std::string set;
  std::string manifest_sha256;
};

Result<SourceAttribute> DecodeAttribute(std::string_view text, std::string_view volume) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption("volume '" + std::string(volume) + "': attribute " +
                              kHydrationSourceAttribute + " " + why);
  };
  const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return bad("is not a JSON object");
  auto text_field = [&](const char* name, std::string* out) -> Status {
    auto it = j.find(name);
    if (it == j.end() || !it->is_string())
      return bad(std::string("has no string \"") + name + "\"");
    *out = it->get<std::string>();
    return Status::OK();
  };
  std::string format;
  SNAPDISK_RETURN_IF_ERROR(text_field("format", &format));
  auto version = j.find("version");
  if (format != kAttributeFormat || version == j.end() || !version->is_number_integer() ||
      version->get<int64_t>() != 1) {
    return bad("is not version 1 of " + std::string(kAttributeFormat));
  }
  SourceAttribute a;
  SNAPDISK_RETURN_IF_ERROR(text_field("store", &a.store));
  SNAPDISK_RETURN_IF_ERROR(text_field("set", &a.set));
  SNAPDISK_RETURN_IF_ERROR(text_field("manifest_sha256", &a.manifest_sha256));
  return a;
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

BackupSetSource::BackupSetSource(WormStore& store, BackupSet set, uint32_t cached_chunks)
    : store_(store), set_(std::move(set)), cached_chunks_(std::max<uint32_t>(1, cached_chunks)) {
  std::unordered_map<std::string, size_t> by_hash;
  for (size_t i = 0; i < set_.chunks.size(); ++i) by_hash.emplace(set_.chunks[i].hash, i);
  extent_chunk_.reserve(set_.extents.size());
  for (const ChunkExtent& e : set_.extents) {
    auto it = by_hash.find(e.chunk);
    // DecodeManifest guarantees every extent names one of the set's chunks.
    SNAPDISK_CHECK(it != by_hash.end(), "a manifest's extents name its chunks");
    extent_chunk_.push_back(it->second);
  }
}

Result<const std::vector<std::byte>*> BackupSetSource::Chunk(size_t index) {
  for (size_t i = 0; i < cache_.size(); ++i) {
    if (cache_[i].index != index) continue;
    std::rotate(cache_.begin() + i, cache_.begin() + i + 1, cache_.end());  // most recent last
    return &cache_.back().data;
  }
  const ChunkInfo& chunk = set_.chunks[index];
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<std::byte> data,
                            ReadChunk(store_, chunk, "set " + set_.id));
  chunks_read_.fetch_add(1);
  store_bytes_read_.fetch_add(chunk.stored_bytes);
  if (cache_.size() >= cached_chunks_) cache_.erase(cache_.begin());
  cache_.push_back(Cached{index, std::move(data)});
  return &cache_.back().data;
}

Status BackupSetSource::Read(uint64_t offset_bytes, std::span<std::byte> out) {
  const uint64_t end = offset_bytes + out.size();
  if (end < offset_bytes || end > set_.volume_size_bytes) {
    return Status::InvalidArgument("set " + set_.id + ": read of " + std::to_string(out.size()) +
                                   " bytes at " + std::to_string(offset_bytes) +
                                   " is beyond its volume's " +
                                   std::to_string(set_.volume_size_bytes) + " bytes");
  }
  std::memset(out.data(), 0, out.size());  // between extents: zeros
  // The first extent that ends after offset_bytes (extents are sorted and
  // disjoint).
  auto it = std::upper_bound(set_.extents.begin(), set_.extents.end(), offset_bytes,
                             [](uint64_t offset, const ChunkExtent& e) {
                               return offset < e.offset_bytes + e.length_bytes;
                             });
  for (; it != set_.extents.end() && it->offset_bytes < end; ++it) {
    const size_t extent = static_cast<size_t>(it - set_.extents.begin());
    SNAPDISK_ASSIGN_OR_RETURN(const std::vector<std::byte>* data, Chunk(extent_chunk_[extent]));
    const uint64_t a = std::max(offset_bytes, it->offset_bytes);
    const uint64_t b = std::min(end, it->offset_bytes + it->length_bytes);
    const uint64_t in_chunk = it->chunk_offset_bytes + (a - it->offset_bytes);
    if (in_chunk + (b - a) > data->size()) {
      return Status::Corruption("set " + set_.id + ": chunk " + it->chunk + " holds " +
                                std::to_string(data->size()) + " bytes, extent at " +
                                std::to_string(it->offset_bytes) + " needs " +
                                std::to_string(in_chunk + (b - a)));
    }
    std::memcpy(out.data() + (a - offset_bytes), data->data() + in_chunk, b - a);
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
  const int64_t now = clock_.NowNs();
  usable_ns_.store(now);
  next_fill_ns_ = now;
  SNAPDISK_ASSIGN_OR_RETURN(HydrationInfo info, pool_.GetHydrationInfo(volume_));
  total_bytes_.store(info.pending_bytes);
  pending_bytes_.store(info.pending_bytes);
  if (!info.hydrating) {
    // Nothing to copy (an all-zeros set, or hydrated before a crash).
    Status s = pool_.RemoveAttribute(volume_, kHydrationSourceAttribute);
    if (s.IsNotFound()) s = Status::OK();
    if (s.ok()) s = pool_.Commit();
    SNAPDISK_RETURN_IF_ERROR(s);
    hydrated_ns_.store(now);
    Finish(HydrationJobState::kDone, Status::OK());
  }
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
  const double rate_bytes_per_ns = options_.rate_mb_per_s * 1e6 / 1e9;
  int64_t now = 0;
  if (rate_bytes_per_ns > 0) {
    now = clock_.NowNs();
    if (now < next_fill_ns_) return false;  // the cap says wait
  }
  auto fail = [&](const Status& s) {
    Finish(HydrationJobState::kFailed,
           s.WithContext("hydrating volume '" + volume_ + "' from set " + set_id_));
    return true;
  };
  Result<uint64_t> filled = pool_.HydrateStep(volume_, options_.step_bytes);
  if (!filled.ok()) return fail(filled.status());
  filled_bytes_.fetch_add(*filled);
  since_commit_bytes_ += *filled;
  if (rate_bytes_per_ns > 0 && *filled > 0) {
    next_fill_ns_ =
        std::max(next_fill_ns_, now - kPaceBurstNs) +
        static_cast<int64_t>(std::ceil(static_cast<double>(*filled) / rate_bytes_per_ns));
  }
  Result<HydrationInfo> info = pool_.GetHydrationInfo(volume_);
  if (!info.ok()) return fail(info.status());
  pending_bytes_.store(info->pending_bytes);
  if (!info->hydrating) {
    // The map went with the last pending block; the attribute goes in the
    // same commit.
    Status s = pool_.RemoveAttribute(volume_, kHydrationSourceAttribute);
    if (s.IsNotFound()) s = Status::OK();
    if (s.ok()) s = pool_.Commit();
    if (!s.ok()) return fail(s);
    hydrated_ns_.store(clock_.NowNs());
    Finish(HydrationJobState::kDone, Status::OK());
    return true;
  }
  if (options_.commit_every_bytes > 0 && since_commit_bytes_ >= options_.commit_every_bytes) {
    since_commit_bytes_ = 0;
    if (Status s = pool_.Commit(); !s.ok()) return fail(s);
  }
  return false;
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

// ---- Starting and resuming --------------------------------------------------------------

Result<std::unique_ptr<HydrationJob>> StartLazyRestore(Pool& pool, WormStore& store,
                                                       std::string_view set_id,
                                                       std::string_view new_volume,
                                                       const LazyRestoreOptions& options) {
  Clock& clock = options.clock != nullptr ? *options.clock : SystemClock::Get();
  const int64_t started = clock.NowNs();
  SNAPDISK_RETURN_IF_ERROR(ValidateOptions(options));
  SNAPDISK_ASSIGN_OR_RETURN(BackupSet set, FindBackupSet(store, set_id));
  if (!IsCompleteImage(set.type)) {
    return Status::InvalidArgument(
        "set " + set.id + " is a " + BackupTypeName(set.type) +
        " backup: a lazy restore needs a complete image (a snapshot or full set)" +
        (set.type == BackupType::kLog ? std::string() : "; restore its chain instead"));
  }
  SNAPDISK_RETURN_IF_ERROR(pool.CreateVolume(new_volume, set.volume_size_bytes, options.profile)
                               .status()
                               .WithContext("lazy restore of set " + set.id));
  // From here on an error deletes the new volume again (with its attribute
  // and map): nothing is left behind.
  const std::string volume(new_volume);
  auto undo = [&](const Status& why) {
    (void)pool.DeleteVolume(volume);
    return why.WithContext("lazy restore of set " + set.id + " into volume '" + volume + "'");
  };
  const std::vector<Extent> ranges = BlockRanges(set, pool.block_bytes());
  Status s = pool.SetAttribute(volume, kHydrationSourceAttribute, EncodeAttribute(options, set));
  if (s.ok()) s = pool.BeginHydration(volume, ranges);
  auto source = std::make_shared<BackupSetSource>(store, set, options.cached_chunks);
  if (s.ok() && !ranges.empty()) s = pool.AttachHydrationSource(volume, source);
  if (s.ok()) s = pool.Commit();
  if (!s.ok()) return undo(s);
  std::unique_ptr<HydrationJob> job(
      new HydrationJob(pool, volume, set.id, std::move(source), options, started));
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
    Result<BackupSet> set = FindBackupSet(store, attribute.set);
    if (!set.ok()) {
      return set.status().WithContext("volume '" + std::string(volume) + "' hydrates from set " +
                                      attribute.set + " (store " + attribute.store + ")");
    }
    if (set->sha256 != attribute.manifest_sha256) {
      return Status::InvalidArgument("volume '" + std::string(volume) + "' hydrates from set " +
                                     attribute.set + " with manifest sha256 " +
                                     attribute.manifest_sha256 + ", but this store's set " +
                                     set->id + " has " + set->sha256 +
                                     ": another store (the volume's is '" + attribute.store + "')");
    }
    source = std::make_shared<BackupSetSource>(store, *std::move(set), options.cached_chunks);
    SNAPDISK_RETURN_IF_ERROR(pool.AttachHydrationSource(volume, source));
  }
  std::unique_ptr<HydrationJob> job(new HydrationJob(pool, std::string(volume), attribute.set,
                                                     std::move(source), options, started));
  SNAPDISK_RETURN_IF_ERROR(job->Begin());
  return job;
}

}  // namespace snapdisk
