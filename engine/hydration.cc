// Hydration maps (Pool, "Hydration"; FORMAT.md, "hydration map").
//
// Why ranges plus a "done" bitmap, and not a bitmap of pending blocks: the
// ranges are what the caller has (a backup's extents), so BeginHydration
// costs O(ranges) whatever the data size — instant restore must not write a
// bit per block of the image before the volume is usable. Bits only ever go
// from 0 to 1 (a block leaves the map and never comes back), so a commit
// writes just the bitmap blocks that changed, and the ranges never change.
//
// Why the fill writes synchronously and outside the request machinery: a
// block leaves the map only when data for it is in the volume's map, and the
// pool's thread does both in one go (FinishMutation for client mutations,
// FillRun for the fill). Device completions only count (ProcessFinished runs
// later), so nothing can slip between the fill's "still pending?" and its map
// update; a client write still in flight when the fill maps a block
// completes later and replaces it — the client's data wins either way.
//
// Why a read parks on a background fetch and still fills synchronously: the
// slow part of a cold read is the source (a store read and a decode), which
// touches no pool state, so HydrationFetcher does it on its own thread while
// the pool's thread serves other requests. The fill of what it brought (map
// updates) stays on the pool's thread, in ProcessFetchResults, under the
// same rule as above; blocks a client wrote meanwhile are simply no longer
// pending, and FillRun leaves them alone.
#include <algorithm>
#include <bit>
#include <cstring>
#include <string>

#include "disk/bytes.h"
#include "engine/hydration_fetcher.h"
#include "engine/hydration_map.h"
#include "engine/pending_io.h"
#include "engine/pool.h"

namespace snapdisk {

using format::MapEntry;

namespace {

constexpr const char* kHydrationName = "hydration";
// Range blocks live from this VBN of a hydration tree up; bitmap blocks below.
constexpr uint64_t kRangeBase = uint64_t{1} << 31;
constexpr uint32_t kRangeBytes = 16;
// Blocks per source read and device write of the fill.
constexpr uint64_t kMaxFillRunBlocks = 256;

// Sets bits [a, b) of a bitmap block's words.
void SetBits(std::vector<uint64_t>& words, uint64_t a, uint64_t b) {
  while (a < b) {
    const uint64_t word = a / 64;
    const uint64_t lo = a % 64;
    const uint64_t n = std::min<uint64_t>(64 - lo, b - a);
    const uint64_t mask = n == 64 ? ~uint64_t{0} : ((uint64_t{1} << n) - 1) << lo;
    words[word] |= mask;
    a += n;
  }
}

bool BitSet(const std::byte* bitmap, uint64_t bit) {
  return (static_cast<uint8_t>(bitmap[bit / 8]) >> (bit % 8)) & 1;
}

// The first bit in [from, to) of `bitmap` that is not `value`; `to` when none.
uint64_t FindOther(const std::byte* bitmap, uint64_t from, uint64_t to, bool value) {
  const uint64_t same = value ? ~uint64_t{0} : 0;
  uint64_t v = from;
  while (v < to) {
    if (v % 64 == 0 && to - v >= 64 && format::Load64(bitmap + v / 8) == same) {
      v += 64;
      continue;
    }
    if (BitSet(bitmap, v) != value) return v;
    ++v;
  }
  return to;
}

}  // namespace

// ---- PendingRanges ------------------------------------------------------------

void PendingRanges::Add(uint64_t first, uint64_t end) {
  if (first >= end) return;
  auto it = runs_.upper_bound(first);
  if (it != runs_.begin()) {
    auto prev = std::prev(it);
    if (prev->second >= first) {  // overlaps or touches: merge
      first = prev->first;
      end = std::max(end, prev->second);
      blocks_ -= prev->second - prev->first;
      runs_.erase(prev);
    }
  }
  while (it != runs_.end() && it->first <= end) {
    end = std::max(end, it->second);
    blocks_ -= it->second - it->first;
    it = runs_.erase(it);
  }
  runs_.emplace(first, end);
  blocks_ += end - first;
}

bool PendingRanges::Contains(uint64_t vbn) const {
  auto it = runs_.upper_bound(vbn);
  if (it == runs_.begin()) return false;
  return vbn < std::prev(it)->second;
}

std::vector<std::pair<uint64_t, uint64_t>> PendingRanges::Overlapping(uint64_t first,
                                                                      uint64_t end) const {
  std::vector<std::pair<uint64_t, uint64_t>> out;
  auto it = runs_.upper_bound(first);
  if (it != runs_.begin() && std::prev(it)->second > first) --it;
  for (; it != runs_.end() && it->first < end; ++it) {
    out.emplace_back(std::max(it->first, first), std::min(it->second, end));
  }
  return out;
}

uint64_t PendingRanges::Remove(uint64_t first, uint64_t end,
                               const std::function<void(uint64_t, uint64_t)>& removed) {
  const std::vector<std::pair<uint64_t, uint64_t>> hit = Overlapping(first, end);
  uint64_t taken = 0;
  for (const auto& [a, b] : hit) {
    auto it = std::prev(runs_.upper_bound(a));  // the run holding a
    const uint64_t run_first = it->first, run_end = it->second;
    runs_.erase(it);
    if (run_first < a) runs_.emplace(run_first, a);
    if (b < run_end) runs_.emplace(b, run_end);
    taken += b - a;
    if (removed) removed(a, b);
  }
  blocks_ -= taken;
  return taken;
}

std::pair<uint64_t, uint64_t> PendingRanges::First() const {
  if (runs_.empty()) return {0, 0};
  return *runs_.begin();
}

// ---- Loading and checking a map ---------------------------------------------------

HydrationState* Pool::FindHydration(uint64_t volume_id) const {
  if (hydrations_.empty()) return nullptr;
  auto it = hydrations_.find(volume_id);
  if (it == hydrations_.end()) return nullptr;
  SNAPDISK_CHECK(it->second->loaded, "a hydrating volume's map is loaded before its I/O");
  return it->second.get();
}

Status Pool::LoadHydration(uint64_t volume_id) {
  auto it = hydrations_.find(volume_id);
  if (it == hydrations_.end() || it->second->loaded) return Status::OK();
  PendingRanges pending;
  SNAPDISK_RETURN_IF_ERROR(ReadHydrationMap(it->second->slot, &pending));
  it->second->pending = std::move(pending);
  it->second->loaded = true;
  return Status::OK();
}

Status Pool::ReadHydrationMap(size_t slot, PendingRanges* out) {
  const Record& rec = records_[slot];
  auto vol_it = slot_by_id_.find(rec.parent_id);
  const bool has_volume =
      vol_it != slot_by_id_.end() && records_[vol_it->second].kind == Kind::kVolume;
  const std::string name = has_volume ? records_[vol_it->second].name : "?";
  auto bad = [&](const std::string& what) {
    return Status::Corruption("hydration map of volume '" + name + "': " + what);
  };
  if (!has_volume) return bad("its volume (id " + std::to_string(rec.parent_id) + ") is gone");
  const uint64_t volume_blocks =
      (records_[vol_it->second].size_bytes + block_bytes_ - 1) / block_bytes_;
  AlignedBuffer block(block_bytes_);
  auto read_block = [&](const MapEntry& e, const std::string& what) -> Status {
    SNAPDISK_RETURN_IF_ERROR(device_.Read(e.pbn * block_bytes_, block.span()));
    if (format::Checksum(block.span()) != e.checksum) {
      return bad(what + " (block " + std::to_string(e.pbn) + ") checksum mismatch");
    }
    return Status::OK();
  };

  // The ranges.
  const uint64_t per_block = block_bytes_ / kRangeBytes;
  const uint64_t range_blocks = (rec.hydration_ranges + per_block - 1) / per_block;
  std::vector<std::pair<uint64_t, uint64_t>> ranges;
  ranges.reserve(rec.hydration_ranges);
  uint64_t total = 0;
  for (uint64_t i = 0; i < rec.hydration_ranges; ++i) {
    if (i % per_block == 0) {
      SNAPDISK_ASSIGN_OR_RETURN(MapEntry e, map_->Lookup(rec.root, kRangeBase + i / per_block));
      if (e.pbn == 0) return bad("range block " + std::to_string(i / per_block) + " is missing");
      SNAPDISK_RETURN_IF_ERROR(read_block(e, "range block " + std::to_string(i / per_block)));
    }
    const std::byte* p = block.data() + (i % per_block) * kRangeBytes;
    const uint64_t first = format::Load64(p);
    const uint64_t count = format::Load64(p + 8);
    if (count == 0 || first >= volume_blocks || count > volume_blocks - first ||
        (!ranges.empty() && first <= ranges.back().second)) {
      return bad("range " + std::to_string(i) + " (blocks " + std::to_string(first) + " +" +
                 std::to_string(count) + ") is out of order or outside the volume");
    }
    ranges.emplace_back(first, first + count);
    total += count;
  }
  if (total != rec.hydration_total_blocks) {
    return bad("its ranges hold " + std::to_string(total) + " blocks, the record says " +
               std::to_string(rec.hydration_total_blocks));
  }
  // Nothing else may live in the range region.
  bool stray = false;
  SNAPDISK_RETURN_IF_ERROR(map_->ForEachDataIn(rec.root, kRangeBase + range_blocks, 2 * kRangeBase,
                                               [&](uint64_t, const MapEntry&) {
                                                 stray = true;
                                                 return Status::OK();
                                               }));
  if (stray) return bad("a block lies beyond its last range block");

  // The done bitmap: pending = ranges minus set bits.
  std::map<uint64_t, MapEntry> bitmap;
  SNAPDISK_RETURN_IF_ERROR(
      map_->ForEachDataIn(rec.root, 0, kRangeBase, [&](uint64_t vbn, const MapEntry& e) {
        bitmap.emplace(vbn, e);
        return Status::OK();
      }));
  const uint64_t bits = uint64_t{8} * block_bytes_;
  uint64_t loaded = UINT64_MAX;  // the bitmap block in `block`
  uint64_t set_bits = 0;         // over every bitmap block read
  uint64_t bitmap_blocks_read = 0;
  for (const auto& [first, end] : ranges) {
    for (uint64_t index = first / bits; index * bits < end; ++index) {
      const uint64_t a = std::max(first, index * bits), b = std::min(end, (index + 1) * bits);
      auto e = bitmap.find(index);
      if (e == bitmap.end()) {
        out->Add(a, b);  // no bit set in this part of the volume yet
        continue;
      }
      if (loaded != index) {
        SNAPDISK_RETURN_IF_ERROR(read_block(e->second, "bitmap block " + std::to_string(index)));
        loaded = index;
        ++bitmap_blocks_read;
        for (uint32_t i = 0; i < block_bytes_; i += 8) {
          set_bits += std::popcount(format::Load64(block.data() + i));
        }
      }
      // Runs of clear bits are pending.
      const uint64_t base = index * bits;
      for (uint64_t v = a - base; v < b - base;) {
        const bool done = BitSet(block.data(), v);
        const uint64_t w = FindOther(block.data(), v, b - base, done);
        if (!done) out->Add(base + v, base + w);
        v = w;
      }
    }
  }
  if (bitmap_blocks_read != bitmap.size()) {
    return bad(std::to_string(bitmap.size() - bitmap_blocks_read) +
               " bitmap blocks cover no range");
  }
  if (set_bits != total - out->blocks()) {
    return bad(std::to_string(set_bits - (total - out->blocks())) +
               " done bits lie outside its ranges");
  }
  if (out->blocks() != rec.hydration_pending_blocks) {
    return bad(std::to_string(out->blocks()) + " blocks are pending, the record says " +
               std::to_string(rec.hydration_pending_blocks));
  }
  if (out->empty()) return bad("nothing is pending, yet the map was kept");
  return Status::OK();
}

// ---- The public API ----------------------------------------------------------------

Status Pool::BeginHydration(std::string_view volume, const std::vector<Extent>& ranges) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_ASSIGN_OR_RETURN(size_t vol_slot, FindVolumeSlot(volume));
  const uint64_t vol_id = records_[vol_slot].id;
  const uint64_t size = records_[vol_slot].size_bytes;
  const std::string what = "volume '" + std::string(volume) + "'";
  if (hydrations_.count(vol_id)) return Status::AlreadyExists(what + " is already hydrating");
  if (uint64_t n = CountSnapshots(vol_id); n > 0) {
    return Status::Busy(what + " has " + std::to_string(n) +
                        " snapshots; a hydrating volume can have none (they would not see "
                        "its source)");
  }
  if (const Volume* v = LiveVolume(vol_id); v != nullptr && v->in_flight() > 0) {
    return Status::Busy(what + " has " + std::to_string(v->in_flight()) + " requests in flight");
  }
  PendingRanges pending;
  for (const Extent& r : ranges) {
    const uint64_t end = r.offset_bytes + r.length_bytes;
    if (r.zero || r.length_bytes == 0 || r.offset_bytes % block_bytes_ != 0 ||
        end < r.offset_bytes || end > size || (end % block_bytes_ != 0 && end != size)) {
      return Status::InvalidArgument(
          what + ": hydration range at " + std::to_string(r.offset_bytes) + " length " +
          std::to_string(r.length_bytes) + " must be non-empty data, start on a " +
          std::to_string(block_bytes_) + "-byte block boundary and end on one or at the " +
          "volume's end (" + std::to_string(size) + " bytes)");
    }
    pending.Add(r.offset_bytes / block_bytes_, (end + block_bytes_ - 1) / block_bytes_);
  }
  if (pending.empty()) return Status::OK();

  const std::vector<std::pair<uint64_t, uint64_t>> runs = pending.Overlapping(0, UINT64_MAX);
  const uint64_t per_block = block_bytes_ / kRangeBytes;
  const uint64_t range_blocks = (runs.size() + per_block - 1) / per_block;
  TreeRoot root{{}, map_->HeightFor(2 * kRangeBase)};
  SNAPDISK_RETURN_IF_ERROR(
      CheckRoom(kCatalogOpBlocks + range_blocks + MetadataNeed(root, range_blocks)));

  // The map's tree, built before anything else changes.
  AlignedBuffer block(block_bytes_);
  Status s;
  for (uint64_t b = 0; b < range_blocks && s.ok(); ++b) {
    std::memset(block.data(), 0, block_bytes_);
    for (uint64_t i = b * per_block; i < std::min<uint64_t>(runs.size(), (b + 1) * per_block);
         ++i) {
      std::byte* p = block.data() + (i % per_block) * kRangeBytes;
      format::Store64(p, runs[i].first);
      format::Store64(p + 8, runs[i].second - runs[i].first);
    }
    auto pbn = space_->AllocateMetadata();
    if (!pbn.ok()) {
      s = pbn.status();
      break;
    }
    const MapEntry e{*pbn, format::Checksum(block.span())};
    s = device_.Write(*pbn * block_bytes_, block.span());
    if (s.ok()) s = map_->Set(root, kRangeBase + b, e).status();
    if (!s.ok()) (void)map_->ReleaseData(*pbn);
  }
  if (!s.ok()) {
    Status released = map_->Release(root);
    return released.ok() ? s : Fail(released);
  }

  const size_t slot = AllocateSlot();
  Record& r = records_[slot];
  r.id = sb_.next_object_id++;
  r.parent_id = vol_id;
  r.kind = Kind::kHydration;
  r.name = kHydrationName;
  r.root = root;
  r.created_unix_ns = WallNowNs();
  r.hydration_ranges = runs.size();
  r.hydration_total_blocks = pending.blocks();
  r.hydration_pending_blocks = pending.blocks();
  slot_by_id_[r.id] = slot;
  aux_by_key_[AuxKey(Kind::kHydration, vol_id, kHydrationName)] = slot;
  auto state = std::make_unique<HydrationState>(slot);
  state->loaded = true;
  state->pending = std::move(pending);
  hydrations_[vol_id] = std::move(state);
  MarkRootDirty(slot);
  return Status::OK();
}

Status Pool::AttachHydrationSource(std::string_view volume,
                                   std::shared_ptr<HydrationSource> source) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_ASSIGN_OR_RETURN(size_t vol_slot, FindVolumeSlot(volume));
  const uint64_t vol_id = records_[vol_slot].id;
  SNAPDISK_RETURN_IF_ERROR(LoadHydration(vol_id));
  HydrationState* h = FindHydration(vol_id);
  if (h == nullptr) {
    return Status::NotFound("volume '" + std::string(volume) + "' is not hydrating");
  }
  h->source = std::move(source);
  return Status::OK();
}

Result<HydrationInfo> Pool::GetHydrationInfo(std::string_view volume) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_ASSIGN_OR_RETURN(size_t vol_slot, FindVolumeSlot(volume));
  const uint64_t vol_id = records_[vol_slot].id;
  SNAPDISK_RETURN_IF_ERROR(LoadHydration(vol_id));
  HydrationInfo info;
  const HydrationState* h = FindHydration(vol_id);
  if (h == nullptr) return info;
  info.hydrating = true;
  info.source_attached = h->source != nullptr;
  info.total_bytes = records_[h->slot].hydration_total_blocks * block_bytes_;
  info.pending_bytes = h->pending.blocks() * block_bytes_;
  info.pending_ranges = h->pending.runs();
  if (h->source != nullptr) {
    info.source_fetched_bytes = h->source->fetched_bytes();
    info.source_image_bytes = h->source->image_fetch_bytes();
  }
  return info;
}

Result<uint64_t> Pool::HydrateStep(std::string_view volume, uint64_t max_bytes) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_ASSIGN_OR_RETURN(size_t vol_slot, FindVolumeSlot(volume));
  const uint64_t vol_id = records_[vol_slot].id;
  SNAPDISK_RETURN_IF_ERROR(LoadHydration(vol_id));
  const uint64_t max_blocks = std::max<uint64_t>(1, max_bytes / block_bytes_);
  uint64_t filled = 0;
  bool committed_for_room = false;
  while (filled < max_blocks) {
    // Looked up again each time: a commit (below) completes client writes,
    // which may end the hydration.
    HydrationState* h = FindHydration(vol_id);
    if (h == nullptr) break;  // nothing (more) pending
    SNAPDISK_RETURN_IF_ERROR(EnsureHydrationSource(*h, records_[vol_slot]));
    const auto [first, end] = h->pending.First();
    const uint64_t run = std::min({end - first, max_blocks - filled, kMaxFillRunBlocks});
    const Record& vol = records_[vol_slot];
    const uint64_t need = run + MetadataNeed(vol.root, run) + HydrationMetadataNeed(*h, run);
    if (Status room = CheckRoom(need); !room.ok()) {
      const uint64_t log_blocks = UnrequiredLogBlocks();
      if (!committed_for_room && (space_->freed_not_reusable_blocks() > 0 || log_blocks > 0)) {
        // As a waiting write would (RetrySpaceWaiters): commits make freed
        // blocks reusable and drop logs nobody requires.
        committed_for_room = true;
        log_pressure_ = log_pressure_ || log_blocks > 0;
        Status c = CommitLocked(/*force=*/false);
        if (c.ok() && space_->cooling_blocks() > 0) c = CommitLocked(/*force=*/true);
        if (!c.ok()) return Fail(c);
        continue;
      }
      return room.WithContext("volume '" + std::string(volume) + "': hydrating");
    }
    SNAPDISK_RETURN_IF_ERROR(FillRun(vol_slot, *h, first, run));
    filled += run;
  }
  return filled * block_bytes_;
}

// ---- The I/O paths ------------------------------------------------------------------

// How long a failed attach on demand is answered from its cached error.
constexpr int64_t kResolveRetryNs = 1'000'000'000;

Status Pool::EnsureHydrationSource(const HydrationState& h, const Record& volume) {
  if (h.source != nullptr) return Status::OK();
  const std::string unattached =
      "volume '" + volume.name + "' is hydrating and its source is not attached";
  if (!options_.hydration_source_resolver) return Status::IOError(unattached);
  const int64_t now = clock().NowNs();
  if (now < h.resolve_retry_ns) return Status::IOError(unattached + ": " + h.resolve_error);
  const std::string name = volume.name;  // the resolver may look records up
  Result<std::shared_ptr<HydrationSource>> source = options_.hydration_source_resolver(*this, name);
  if (source.ok() && *source != nullptr) {
    h.source = *std::move(source);
    return Status::OK();
  }
  h.resolve_error = source.ok() ? "none was found" : source.status().message();
  h.resolve_retry_ns = now + kResolveRetryNs;
  return Status::IOError(unattached + ": " + h.resolve_error);
}

Status Pool::ReadFromSource(const HydrationState& h, const Record& volume, uint64_t first_vbn,
                            uint64_t count, std::byte* dest) {
  const uint64_t offset = first_vbn * block_bytes_;
  const uint64_t length = std::min(count * block_bytes_, volume.size_bytes - offset);
  if (Status attached = EnsureHydrationSource(h, volume); !attached.ok()) {
    return Status::IOError(attached.message() + " (offset " + std::to_string(offset) +
                           " is still to come from it)");
  }
  Status s = h.source->Read(offset, {dest, length});
  if (!s.ok()) {
    return s.WithContext("volume '" + volume.name + "': hydration source at offset " +
                         std::to_string(offset) + " length " + std::to_string(length));
  }
  if (length < count * block_bytes_) std::memset(dest + length, 0, count * block_bytes_ - length);
  return Status::OK();
}

Status Pool::FillRun(size_t vol_slot, HydrationState& h, uint64_t first_vbn, uint64_t count,
                     const std::byte* fetched) {
  const uint64_t vol_id = records_[vol_slot].id;
  const std::string& name = records_[vol_slot].name;
  SNAPDISK_CHECK(count <= kMaxFillRunBlocks, "a fill run fits the fill buffer");
  const std::byte* data = fetched;
  if (data == nullptr) {
    if (h.fill_buffer.size() == 0) h.fill_buffer = AlignedBuffer(kMaxFillRunBlocks * block_bytes_);
    SNAPDISK_RETURN_IF_ERROR(
        ReadFromSource(h, records_[vol_slot], first_vbn, count, h.fill_buffer.data()));
    data = h.fill_buffer.data();
  }

  // Fresh blocks for the blocks that hold data; all-zero blocks stay holes.
  std::vector<MapEntry> entries(count);
  auto block_at = [&](uint64_t i) { return data + i * block_bytes_; };
  Status s;
  for (uint64_t i = 0; i < count && s.ok();) {
    if (IsAllZero(block_at(i), block_bytes_)) {
      ++i;
      continue;
    }
    uint64_t j = i + 1;
    while (j < count && !IsAllZero(block_at(j), block_bytes_)) ++j;
    while (i < j && s.ok()) {
      uint64_t got = 0;
      auto pbn = space_->AllocateRun(j - i, &got);
      if (!pbn.ok()) {
        s = pbn.status();
        break;
      }
      for (uint64_t k = 0; k < got; ++k) {
        entries[i + k] = MapEntry{*pbn + k, format::Checksum({block_at(i + k), block_bytes_})};
      }
      s = device_.Write(*pbn * block_bytes_, {block_at(i), got * block_bytes_});
      i += got;
    }
    i = j;
  }
  if (!s.ok()) {
    for (const MapEntry& e : entries) {
      if (e.pbn == 0) continue;
      if (Status r = map_->ReleaseData(e.pbn, SpaceMap::FreeKind::kReuse); !r.ok()) return Fail(r);
    }
    return s.WithContext("volume '" + name + "': hydrating offset " +
                         std::to_string(first_vbn * block_bytes_));
  }

  // Map what is still pending (all of it: nothing else runs meanwhile; see
  // the file comment), then take it out of the hydration map. From here on a
  // failure leaves the maps half changed: it fails the pool.
  bool mapped = false;
  for (uint64_t i = 0; i < count && s.ok(); ++i) {
    const uint64_t vbn = first_vbn + i;
    Record& vol = records_[vol_slot];
    if (!h.pending.Contains(vbn)) {
      if (entries[i].pbn != 0) s = map_->ReleaseData(entries[i].pbn, SpaceMap::FreeKind::kReuse);
      continue;
    }
    if (entries[i].pbn == 0) {
      auto old = map_->Lookup(vol.root, vbn);
      if (!old.ok()) {
        s = old.status();
        break;
      }
      if (old->pbn == 0) continue;  // a hole already
    }
    auto old = map_->Set(vol.root, vbn, entries[i]);
    if (!old.ok()) {
      s = old.status();
    } else if (old->pbn != 0) {
      s = map_->ReleaseData(old->pbn, SpaceMap::FreeKind::kReuse);
    }
    mapped = true;
  }
  if (mapped) MarkRootDirty(vol_slot);
  if (s.ok()) s = TakePending(vol_id, h, first_vbn, first_vbn + count);  // may end `h`
  if (!s.ok()) return Fail(s.WithContext("volume '" + records_[vol_slot].name + "': hydrating"));
  return Status::OK();
}

Status Pool::FillFetched(size_t vol_slot, uint64_t first_vbn, uint64_t count) {
  const uint64_t vol_id = records_[vol_slot].id;
  const uint64_t volume_blocks = (records_[vol_slot].size_bytes + block_bytes_ - 1) / block_bytes_;
  const uint64_t end_vbn = first_vbn + count;
  uint64_t vbn = first_vbn;
  while (vbn < end_vbn) {
    HydrationState* h = FindHydration(vol_id);
    if (h == nullptr) return Status::OK();
    const auto needed = h->pending.Overlapping(vbn, end_vbn);
    if (needed.empty()) return Status::OK();
    const uint64_t at = needed.front().first;
    // Without a source the request says why.
    if (!EnsureHydrationSource(*h, records_[vol_slot]).ok()) return Status::OK();
    auto units = h->source->FetchedWith(at * block_bytes_);
    if (!units.ok()) return Status::OK();
    for (const auto& [offset, length] : *units) {
      const uint64_t unit_first = offset / block_bytes_;
      const uint64_t unit_end =
          std::min((offset + length + block_bytes_ - 1) / block_bytes_, volume_blocks);
      // Stopped (no room, or the hydration ended): the request reads what
      // is still pending from the source (a write needs the room more).
      SNAPDISK_ASSIGN_OR_RETURN(bool more, FillPending(vol_slot, unit_first, unit_end, nullptr));
      if (!more) return Status::OK();
    }
    // Units that did not hold the block asked for (or none): the request
    // reads it as asked; on to the next.
    vbn = at + 1;
  }
  return Status::OK();
}

Result<bool> Pool::FillPending(size_t vol_slot, uint64_t first_vbn, uint64_t end_vbn,
                               const std::byte* data) {
  const uint64_t vol_id = records_[vol_slot].id;
  HydrationState* h = FindHydration(vol_id);
  if (h == nullptr) return false;
  for (const auto& [a, b] : h->pending.Overlapping(first_vbn, end_vbn)) {
    for (uint64_t x = a; x < b;) {
      h = FindHydration(vol_id);  // a fill may end the hydration
      if (h == nullptr) return false;
      const uint64_t run = std::min(b - x, kMaxFillRunBlocks);
      const Record& vol = records_[vol_slot];
      if (!CheckRoom(run + MetadataNeed(vol.root, run) + HydrationMetadataNeed(*h, run)).ok()) {
        return false;
      }
      Status filled = FillRun(vol_slot, *h, x, run,
                              data == nullptr ? nullptr : data + (x - first_vbn) * block_bytes_);
      if (filled.IsNoSpace() && CheckHealthy().ok()) return false;  // out of room after all
      SNAPDISK_RETURN_IF_ERROR(filled);
      x += run;
    }
  }
  return true;
}

bool Pool::ParkForFetch(PendingIo* io) {
  const uint64_t vol_id = io->volume->id();
  const HydrationState* h = FindHydration(vol_id);
  // Without a source the synchronous path says why.
  if (h == nullptr || h->source == nullptr || !h->source->background_fetch()) return false;
  const auto pending = h->pending.Overlapping(io->first_vbn, io->end_vbn);
  if (pending.empty()) return false;
  const uint64_t id = ++next_fetch_id_;
  fetch_waiters_[id].push_back(io);
  fetcher_->Start(HydrationFetcher::Task{id, vol_id, records_[io->volume->slot_].size_bytes,
                                         block_bytes_, pending.front().first,
                                         pending.front().second, h->source});
  return true;
}

void Pool::ProcessFetchResults() {
  if (fetcher_->in_flight() == 0) return;
  for (HydrationFetcher::Result& result : fetcher_->TakeDone()) {
    auto waiting = fetch_waiters_.extract(result.id);
    // Fill what came (a failed fetch fills nothing: the reads ask the source
    // again and fail with its error, in context). Reads keep their volume
    // open, so it exists; the hydration may have ended meanwhile.
    auto slot = slot_by_id_.find(result.volume_id);
    for (const HydrationFetcher::Run& run : result.runs) {
      if (slot == slot_by_id_.end() || !CheckHealthy().ok()) break;
      Result<bool> more =
          FillPending(slot->second, run.first_vbn, run.first_vbn + run.blocks, run.data.data());
      if (!more.ok() || !*more) break;  // the parked reads read the rest from the source
    }
    if (waiting.empty()) continue;
    for (PendingIo* io : waiting.mapped()) StartRead(io, /*may_park=*/false);
  }
}

Status Pool::HydrationWritten(const Volume& volume, uint64_t first_vbn, uint64_t count) {
  HydrationState* h = FindHydration(volume.id());
  if (h == nullptr) return Status::OK();
  return TakePending(volume.id(), *h, first_vbn, first_vbn + count);
}

Status Pool::TakePending(uint64_t volume_id, HydrationState& h, uint64_t first_vbn,
                         uint64_t end_vbn) {
  const uint64_t bits = uint64_t{8} * block_bytes_;
  const uint64_t taken = h.pending.Remove(first_vbn, end_vbn, [&](uint64_t a, uint64_t b) {
    for (uint64_t index = a / bits; index * bits < b; ++index) {
      auto [it, inserted] = h.done_bits.try_emplace(index);
      if (inserted) {
        it->second.assign(block_bytes_ / 8, 0);
        ++hydration_dirty_blocks_;
      }
      SetBits(it->second, std::max(a, index * bits) - index * bits,
              std::min(b, (index + 1) * bits) - index * bits);
    }
  });
  if (taken == 0) return Status::OK();
  Record& rec = records_[h.slot];
  rec.hydration_pending_blocks -= taken;
  SNAPDISK_CHECK(rec.hydration_pending_blocks == h.pending.blocks(),
                 "the record counts the pending blocks");
  MarkRootDirty(h.slot);
  if (!h.pending.empty()) return Status::OK();
  // Nothing left: the volume is an ordinary one from now on.
  const size_t slot = h.slot;
  SNAPDISK_RETURN_IF_ERROR(map_->Release(records_[slot].root));
  FreeSlot(slot);  // drops `h`
  SNAPDISK_CHECK(!hydrations_.count(volume_id), "the hydration state went with its record");
  return Status::OK();
}

uint64_t Pool::HydrationMetadataNeed(const HydrationState& h, uint64_t blocks) const {
  // The bitmap blocks the blocks' bits fall in, and their paths.
  return (blocks / (uint64_t{8} * block_bytes_) + 2) * (records_[h.slot].root.height + 1);
}

uint64_t Pool::HydrationMetadataNeed(const Volume& volume, uint64_t blocks) const {
  const HydrationState* h = FindHydration(volume.id());
  return h == nullptr ? 0 : HydrationMetadataNeed(*h, blocks);
}

uint64_t Pool::HydrationCommitNeed() const {
  uint64_t need = 0;
  if (hydration_dirty_blocks_ == 0) return 0;
  for (const auto& [volume_id, h] : hydrations_) {
    if (h->done_bits.empty()) continue;
    need += (h->done_bits.size() + 1) * (records_[h->slot].root.height + 1);
  }
  return need;
}

// ---- Commit -----------------------------------------------------------------------

Status Pool::CommitHydration() {
  if (hydration_dirty_blocks_ == 0) return Status::OK();
  AlignedBuffer block(block_bytes_);
  for (auto& [volume_id, h] : hydrations_) {
    if (h->done_bits.empty()) continue;
    Record& rec = records_[h->slot];
    for (const auto& [index, words] : h->done_bits) {
      SNAPDISK_ASSIGN_OR_RETURN(MapEntry old, map_->Lookup(rec.root, index));
      if (old.pbn != 0) {
        SNAPDISK_RETURN_IF_ERROR(device_.Read(old.pbn * block_bytes_, block.span()));
        if (format::Checksum(block.span()) != old.checksum) {
          return Status::Corruption("hydration map bitmap block " + std::to_string(index) +
                                    " (block " + std::to_string(old.pbn) + ") checksum mismatch");
        }
      } else {
        std::memset(block.data(), 0, block_bytes_);
      }
      for (size_t w = 0; w < words.size(); ++w) {
        format::Store64(block.data() + w * 8, format::Load64(block.data() + w * 8) | words[w]);
      }
      MapEntry fresh;
      SNAPDISK_ASSIGN_OR_RETURN(fresh.pbn, space_->AllocateMetadata());
      fresh.checksum = format::Checksum(block.span());
      SNAPDISK_RETURN_IF_ERROR(device_.Write(fresh.pbn * block_bytes_, block.span()));
      SNAPDISK_ASSIGN_OR_RETURN(MapEntry replaced, map_->Set(rec.root, index, fresh));
      if (replaced.pbn != 0) SNAPDISK_RETURN_IF_ERROR(map_->ReleaseData(replaced.pbn));
    }
    h->done_bits.clear();
    MarkRootDirty(h->slot);
  }
  hydration_dirty_blocks_ = 0;
  return Status::OK();
}

}  // namespace snapdisk
