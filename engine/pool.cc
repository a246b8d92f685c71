#include "engine/pool.h"

#include <algorithm>
#include <chrono>
#include <mutex>
#include <random>
#include <string>

#include "engine/hydration_fetcher.h"
#include "engine/hydration_map.h"
#include "engine/names.h"
#include "engine/pending_io.h"
#include "engine/volume.h"

namespace snapdisk {

using format::MapEntry;

namespace {
constexpr uint32_t kRecordBytes = format::kCatalogRecordBytes;

void EncodeRecord(const Pool::Record& r, std::byte* p) {
  std::memset(p, 0, kRecordBytes);
  if (r.id == 0) return;
  format::Store64(p + 0, r.id);
  format::Store64(p + 8, r.parent_id);
  p[16] = static_cast<std::byte>(r.kind);
  p[17] = static_cast<std::byte>(
      r.profile == EssdLevel::kUnlimited ? 0 : static_cast<uint8_t>(r.profile) + 1);
  p[18] = static_cast<std::byte>(r.name.size());
  p[19] = static_cast<std::byte>(r.root.height);
  format::Store64(p + 24, r.size_bytes);
  format::Store64(p + 32, r.root.entry.pbn);
  format::Store64(p + 40, r.root.entry.checksum);
  format::Store64(p + 48, static_cast<uint64_t>(r.created_unix_ns));
  format::Store64(p + 56, r.lsn);
  format::Store64(p + 64, r.lineage);
  std::memcpy(p + 72, r.name.data(), r.name.size());
  if (r.kind == Pool::Kind::kLog) {
    format::Store64(p + 200, r.log_next_index);
    format::Store64(p + 208, r.log_first_index);
    format::Store64(p + 216, r.log_dropped_through);
    format::Store64(p + 224, r.log_next_block);
    format::Store64(p + 232, r.log_first_block);
    p[240] = static_cast<std::byte>(r.log_flags);
  } else if (r.kind == Pool::Kind::kHydration) {
    format::Store64(p + 200, r.hydration_ranges);
    format::Store64(p + 208, r.hydration_total_blocks);
    format::Store64(p + 216, r.hydration_pending_blocks);
  }
}

Result<Pool::Record> DecodeRecord(const std::byte* p, size_t slot) {
  Pool::Record r;
  r.id = format::Load64(p + 0);
  if (r.id == 0) return r;
  auto bad = [&](const char* what) {
    return Status::Corruption("catalog record " + std::to_string(slot) + ": " + what);
  };
  r.parent_id = format::Load64(p + 8);
  const uint8_t kind = static_cast<uint8_t>(p[16]);
  if (kind < 1 || kind > 5) return bad("unknown kind");
  r.kind = static_cast<Pool::Kind>(kind);
  const uint8_t profile = static_cast<uint8_t>(p[17]);
  if (profile > 4) return bad("unknown profile");
  r.profile = profile == 0 ? EssdLevel::kUnlimited : static_cast<EssdLevel>(profile - 1);
  const uint8_t name_len = static_cast<uint8_t>(p[18]);
  r.root.height = static_cast<uint8_t>(p[19]);
  if (name_len == 0 || name_len > format::kMaxNameBytes) return bad("bad name length");
  if (r.root.height == 0 || r.root.height > format::kMaxTreeHeight) return bad("bad tree height");
  r.size_bytes = format::Load64(p + 24);
  r.root.entry.pbn = format::Load64(p + 32);
  r.root.entry.checksum = format::Load64(p + 40);
  r.created_unix_ns = static_cast<int64_t>(format::Load64(p + 48));
  r.lsn = format::Load64(p + 56);
  r.lineage = format::Load64(p + 64);
  r.name.assign(reinterpret_cast<const char*>(p + 72), name_len);
  if (!ValidateName(r.name, "name").ok()) return bad("bad name");
  if (r.kind == Pool::Kind::kLog) {
    r.log_next_index = format::Load64(p + 200);
    r.log_first_index = format::Load64(p + 208);
    r.log_dropped_through = format::Load64(p + 216);
    r.log_next_block = format::Load64(p + 224);
    r.log_first_block = format::Load64(p + 232);
    r.log_flags = static_cast<uint8_t>(p[240]);
    if (r.log_first_index == 0 || r.log_first_index > r.log_next_index ||
        r.log_first_block > r.log_next_block) {
      return bad("bad write log state");
    }
  } else if (r.kind == Pool::Kind::kHydration) {
    r.hydration_ranges = format::Load64(p + 200);
    r.hydration_total_blocks = format::Load64(p + 208);
    r.hydration_pending_blocks = format::Load64(p + 216);
    if (r.hydration_ranges == 0 || r.hydration_pending_blocks == 0 ||
        r.hydration_pending_blocks > r.hydration_total_blocks) {
      return bad("bad hydration map state");
    }
  }
  return r;
}

int64_t RealWallNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::system_clock::now().time_since_epoch())
      .count();
}

}  // namespace

Pool::Pool(BlockDevice& device, const PoolOptions& options, uint32_t block_bytes,
           const format::SpaceMapGeometry& geometry, uint64_t pool_blocks)
    : device_(device), options_(options), block_bytes_(block_bytes), pool_blocks_(pool_blocks) {
  cache_ = std::make_unique<BlockCache>(block_bytes, options.cache_bytes);
  space_ = std::make_unique<SpaceMap>(device, *cache_, geometry, block_bytes, pool_blocks);
  map_ = std::make_unique<BlockMap>(device, *cache_, *space_, block_bytes);
  fetcher_ = std::make_unique<HydrationFetcher>();
}

Pool::~Pool() {
  if (!closed_ && failure_.ok()) (void)Close();
  volumes_.clear();
}

int64_t Pool::WallNowNs() const {
  return options_.wall_clock_ns ? options_.wall_clock_ns() : RealWallNs();
}

Result<std::unique_ptr<Pool>> Pool::Create(BlockDevice& device, const PoolOptions& options) {
  if (!format::IsValidBlockSize(options.block_bytes)) {
    return Status::InvalidArgument("block size " + std::to_string(options.block_bytes) +
                                   " is not a power of two from 4K to 64K");
  }
  if (options.block_bytes % device.sector_size_bytes() != 0) {
    return Status::InvalidArgument("block size is not a multiple of the device's sector size");
  }
  const uint64_t pool_blocks = device.size_bytes() / options.block_bytes;
  SNAPDISK_ASSIGN_OR_RETURN(auto geometry,
                            format::ComputeSpaceMapGeometry(pool_blocks, options.block_bytes));
  std::unique_ptr<Pool> pool(new Pool(device, options, options.block_bytes, geometry, pool_blocks));
  format::Superblock& sb = pool->sb_;
  sb.block_bytes = options.block_bytes;
  sb.generation = 0;
  sb.pool_blocks = pool_blocks;
  sb.first_data_block = geometry.first_data_block;
  sb.high_water = geometry.first_data_block;
  sb.catalog_height = 1;
  sb.next_object_id = 1;
  sb.created_unix_ns = static_cast<uint64_t>(pool->WallNowNs());
  pool->space_->Load(sb);
  pool->catalog_root_ = TreeRoot{{}, 1};
  // Wipe every place a superblock slot can be (slot A at 0, slot B at one
  // block of any block size) first: an older pool on the same device, of any
  // block size, must not win over the new one.
  AlignedBuffer zeros(format::kMinBlockBytes);
  SNAPDISK_RETURN_IF_ERROR(device.Write(0, zeros.span()));
  for (uint64_t bs = format::kMinBlockBytes; bs <= format::kMaxBlockBytes; bs *= 2) {
    if (bs + zeros.size() <= device.size_bytes()) {
      SNAPDISK_RETURN_IF_ERROR(device.Write(bs, zeros.span()));
    }
  }
  pool->force_commit_ = true;
  SNAPDISK_RETURN_IF_ERROR(pool->Commit());
  return pool;
}

Result<std::unique_ptr<Pool>> Pool::Open(BlockDevice& device, const PoolOptions& options) {
  // Slot A is at byte 0; slot B at one block, and the block size is in the
  // superblock, so a torn slot A means trying each possible block size.
  std::optional<format::Superblock> best;
  Status first_error;
  Status read_error;
  AlignedBuffer buf(format::kMaxBlockBytes);
  const uint32_t read_bytes = std::max<uint32_t>(device.sector_size_bytes(), 4096);
  auto try_slot = [&](uint64_t offset, uint32_t expect_block_bytes) {
    if (offset + read_bytes > device.size_bytes()) return;
    Status s = device.Read(offset, buf.span().first(read_bytes));
    if (!s.ok()) {
      // A slot we cannot read may hold the newest state: opening the other
      // one would silently roll the pool back. Only a slot that reads fine
      // but is invalid may be skipped.
      if (read_error.ok()) read_error = s;
      return;
    }
    auto sb = format::DecodeSuperblock(buf.span().first(read_bytes));
    if (!sb.ok()) {
      if (first_error.ok()) first_error = sb.status();
      return;
    }
    if (expect_block_bytes != 0 && sb->block_bytes != expect_block_bytes) return;
    if (!best || sb->generation > best->generation) best = *sb;
  };
  try_slot(0, 0);
  if (best) {
    try_slot(best->block_bytes, best->block_bytes);
  } else {
    for (uint32_t bs = format::kMinBlockBytes; bs <= format::kMaxBlockBytes; bs *= 2) {
      try_slot(bs, bs);
    }
  }
  if (!read_error.ok()) {
    return read_error.WithContext(device.name() + ": reading a superblock");
  }
  if (!best) {
    if (first_error.IsUnsupported()) return first_error;
    return Status::Corruption(device.name() +
                              ": not a snapdisk pool, or both superblocks are damaged (" +
                              first_error.message() + ")");
  }
  const format::Superblock sb = *best;
  // A superblock fits in one sector, and sector writes are atomic, so a crash
  // never leaves a half-written one: a slot that holds something but is not a
  // valid superblock has been damaged. Say so (the open itself goes on with
  // the newest valid slot, which may be the previous commit).
  std::vector<std::string> warnings;
  for (int slot = 0; slot < 2; ++slot) {
    const uint64_t offset = format::kSuperblockPbn[slot] * sb.block_bytes;
    if (!device.Read(offset, buf.span().first(read_bytes)).ok()) continue;
    const auto bytes = buf.span().first(format::kSuperblockBytes);
    const bool blank =
        std::all_of(bytes.begin(), bytes.end(), [](std::byte b) { return b == std::byte{0}; });
    if (blank || format::DecodeSuperblock(buf.span().first(read_bytes)).ok()) continue;
    warnings.push_back("superblock slot " + std::string(slot == 0 ? "A" : "B") + " (block " +
                       std::to_string(format::kSuperblockPbn[slot]) +
                       ") is damaged; the pool opened at generation " +
                       std::to_string(sb.generation) + " from the other slot");
  }
  if (sb.pool_blocks * sb.block_bytes > device.size_bytes()) {
    return Status::Corruption(device.name() + ": pool is truncated: it needs " +
                              std::to_string(sb.pool_blocks * sb.block_bytes) +
                              " bytes, the device has " + std::to_string(device.size_bytes()));
  }
  auto geometry = format::ComputeSpaceMapGeometry(sb.pool_blocks, sb.block_bytes);
  if (!geometry.ok() || geometry->first_data_block != sb.first_data_block ||
      geometry->height != sb.space_map_height) {
    return Status::Corruption(device.name() + ": superblock geometry is inconsistent");
  }
  std::unique_ptr<Pool> pool(new Pool(device, options, sb.block_bytes, *geometry, sb.pool_blocks));
  pool->sb_ = sb;
  pool->open_warnings_ = std::move(warnings);
  pool->space_->Load(sb);
  pool->catalog_root_ = TreeRoot{sb.catalog_root, sb.catalog_height};
  Status s = pool->LoadCatalog();
  if (!s.ok()) {
    pool->closed_ = true;  // nothing to commit
    return s.WithContext(device.name());
  }
  return pool;
}

Status Pool::LoadCatalog() {
  const uint32_t per_block = block_bytes_ / kRecordBytes;
  AlignedBuffer block(block_bytes_);
  SNAPDISK_RETURN_IF_ERROR(map_->ForEachData(catalog_root_, [&](uint64_t vbn, const MapEntry& e) {
    SNAPDISK_RETURN_IF_ERROR(device_.Read(e.pbn * block_bytes_, block.span()));
    if (format::Checksum(block.span()) != e.checksum) {
      return Status::Corruption("catalog block " + std::to_string(vbn) + " at block " +
                                std::to_string(e.pbn) + ": checksum mismatch");
    }
    if (records_.size() < (vbn + 1) * per_block) records_.resize((vbn + 1) * per_block);
    for (uint32_t i = 0; i < per_block; ++i) {
      const size_t slot = vbn * per_block + i;
      SNAPDISK_ASSIGN_OR_RETURN(records_[slot],
                                DecodeRecord(block.data() + i * kRecordBytes, slot));
    }
    return Status::OK();
  }));
  for (size_t slot = 0; slot < records_.size(); ++slot) {
    const Record& r = records_[slot];
    if (r.id == 0) {
      free_slots_.push_back(slot);
      continue;
    }
    if (!slot_by_id_.emplace(r.id, slot).second) {
      return Status::Corruption("catalog: id " + std::to_string(r.id) + " appears twice");
    }
    if (r.kind == Kind::kVolume) {
      if (!volume_by_name_.emplace(r.name, slot).second) {
        return Status::Corruption("catalog: volume name '" + r.name + "' appears twice");
      }
    } else if (r.kind == Kind::kSnapshot) {
      snapshot_by_key_.emplace(SnapshotKey(r.parent_id, r.name), slot);
    } else {
      aux_by_key_.emplace(AuxKey(r.kind, r.parent_id, r.name), slot);
      if (r.kind == Kind::kLog) log_slot_by_volume_[r.parent_id] = slot;
      // Loaded when the volume is opened (Open reads no more than the catalog).
      if (r.kind == Kind::kHydration) {
        hydrations_[r.parent_id] = std::make_unique<HydrationState>(slot);
      }
    }
  }
  std::reverse(free_slots_.begin(), free_slots_.end());  // lowest slot first
  return Status::OK();
}

std::string Pool::SnapshotKey(uint64_t volume_id, std::string_view name) {
  return std::to_string(volume_id) + "/" + std::string(name);
}

std::string Pool::AuxKey(Kind kind, uint64_t volume_id, std::string_view name) {
  return std::to_string(static_cast<int>(kind)) + ":" + std::to_string(volume_id) + "/" +
         std::string(name);
}

size_t Pool::AllocateSlot() {
  size_t slot;
  if (!free_slots_.empty()) {
    slot = free_slots_.back();
    free_slots_.pop_back();
  } else {
    slot = records_.size();
    records_.emplace_back();
  }
  return slot;
}

void Pool::FreeSlot(size_t slot) {
  Record& r = records_[slot];
  slot_by_id_.erase(r.id);
  if (r.kind == Kind::kVolume) {
    volume_by_name_.erase(r.name);
  } else if (r.kind == Kind::kSnapshot) {
    snapshot_by_key_.erase(SnapshotKey(r.parent_id, r.name));
  } else {
    aux_by_key_.erase(AuxKey(r.kind, r.parent_id, r.name));
    if (r.kind == Kind::kLog) {
      log_slot_by_volume_.erase(r.parent_id);
      logs_over_limit_.erase(slot);
      if (auto it = log_pending_.find(slot); it != log_pending_.end()) {
        log_pending_records_ -= it->second.size();
        log_pending_.erase(it);
      }
    } else if (r.kind == Kind::kHydration) {
      if (auto it = hydrations_.find(r.parent_id); it != hydrations_.end()) {
        hydration_dirty_blocks_ -= it->second->done_bits.size();
        hydrations_.erase(it);
      }
    }
  }
  r = Record{};
  free_slots_.push_back(slot);
  MarkRecordDirty(slot);
}

void Pool::MarkRecordDirty(size_t slot) {
  dirty_record_blocks_.insert(slot / (block_bytes_ / kRecordBytes));
}

void Pool::MarkRootDirty(size_t slot) {
  dirty_roots_.insert(slot);
  MarkRecordDirty(slot);
}

Status Pool::WriteCatalog() {
  const uint32_t per_block = block_bytes_ / kRecordBytes;
  AlignedBuffer block(block_bytes_);
  for (uint64_t vbn : dirty_record_blocks_) {
    bool empty = true;
    for (uint32_t i = 0; i < per_block; ++i) {
      const size_t slot = vbn * per_block + i;
      const Record free_record;
      const Record& r = slot < records_.size() ? records_[slot] : free_record;
      EncodeRecord(r, block.data() + i * kRecordBytes);
      empty = empty && r.id == 0;
    }
    MapEntry fresh;
    if (!empty) {
      SNAPDISK_ASSIGN_OR_RETURN(fresh.pbn, space_->AllocateMetadata());
      fresh.checksum = format::Checksum(block.span());
      SNAPDISK_RETURN_IF_ERROR(device_.Write(fresh.pbn * block_bytes_, block.span()));
    }
    SNAPDISK_RETURN_IF_ERROR(map_->Grow(catalog_root_, map_->HeightFor(vbn + 1)));
    SNAPDISK_ASSIGN_OR_RETURN(MapEntry old, map_->Set(catalog_root_, vbn, fresh));
    if (old.pbn != 0) SNAPDISK_RETURN_IF_ERROR(map_->ReleaseData(old.pbn));
  }
  dirty_record_blocks_.clear();
  return Status::OK();
}

Status Pool::Fail(Status why) {
  // The call that failed the pool reports what happened (its own code); every
  // later call gets IOError: the pool must be reopened, and a NoSpace there
  // must not invite a caller to free space and retry.
  if (!failure_.ok()) return failure_;
  failure_ = Status::IOError("pool failed (reopen it): " + why.ToString());
  return why.WithContext("pool failed (reopen it)");
}

Status Pool::CheckHealthy() const {
  if (closed_) return Status::InvalidArgument("pool is closed");
  if (!unreported_failure_.ok()) {
    // A commit nobody called failed the pool (see CommitInBackground): the
    // next caller hears what happened, later ones that the pool failed.
    Status first = std::move(unreported_failure_);
    unreported_failure_ = Status::OK();
    return first;
  }
  return failure_;
}

void Pool::CommitInBackground() {
  if (!failure_.ok()) return;
  Status s = Commit();
  if (!s.ok()) unreported_failure_ = s;
}

Status Pool::Commit() {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  Status s = CommitLocked(/*force=*/false);
  if (!s.ok()) return Fail(s);
  return s;
}

Status Pool::CommitLocked(bool force) {
  DrainDevice();
  SNAPDISK_RETURN_IF_ERROR(failure_);
  // Background deletions first: the counts committed must match the trees.
  SNAPDISK_RETURN_IF_ERROR(map_->ReleaseSome(SIZE_MAX));
  // Cooling blocks (freed by the last commit) are released by the next one:
  // commit even when nothing else changed, so freed space shows up.
  // (Pending log records mark their log's root dirty.)
  const bool changed = force || force_commit_ || log_pressure_ || !dirty_roots_.empty() ||
                       !dirty_record_blocks_.empty() || space_->dirty_blocks() > 0 ||
                       space_->cooling_blocks() > 0;
  if (!changed) return device_.Flush();  // nothing new, but completed writes must be durable
  force_commit_ = false;
  SNAPDISK_RETURN_IF_ERROR(CommitLogs());
  SNAPDISK_RETURN_IF_ERROR(CommitHydration());
  map_->BeginCommit();
  for (size_t slot : dirty_roots_) {
    if (records_[slot].id == 0) continue;
    SNAPDISK_RETURN_IF_ERROR(map_->WriteDirty(records_[slot].root));
  }
  dirty_roots_.clear();
  SNAPDISK_RETURN_IF_ERROR(WriteCatalog());
  SNAPDISK_RETURN_IF_ERROR(map_->WriteDirty(catalog_root_));
  SNAPDISK_RETURN_IF_ERROR(space_->WriteDirty());
  SNAPDISK_RETURN_IF_ERROR(device_.Flush());

  format::Superblock next = sb_;
  next.generation = sb_.generation + 1;
  next.catalog_root = catalog_root_.entry;
  next.catalog_height = catalog_root_.height;
  space_->Store(&next);
  AlignedBuffer block(block_bytes_);
  format::EncodeSuperblock(next, block.span());
  SNAPDISK_RETURN_IF_ERROR(
      device_.Write(format::kSuperblockPbn[next.generation % 2] * block_bytes_, block.span()));
  SNAPDISK_RETURN_IF_ERROR(device_.Flush());
  sb_ = next;

  // The new state is durable: blocks it freed may be reused and punched out.
  std::vector<uint64_t> freed = space_->CommitDone();
  for (size_t i = 0; i < freed.size();) {
    size_t j = i + 1;
    while (j < freed.size() && freed[j] == freed[j - 1] + 1) ++j;
    // Punching is an optimization: a failure leaves garbage in free blocks,
    // never in the pool's state.
    (void)device_.Discard(freed[i] * block_bytes_, (j - i) * block_bytes_);
    i = j;
  }
  cache_->Trim();
  return Status::OK();
}

Status Pool::Close() {
  if (closed_) return Status::OK();
  Status s = Commit();
  closed_ = true;
  return s;
}

PoolInfo Pool::Info() const {
  PoolInfo info;
  info.block_bytes = block_bytes_;
  info.pool_bytes = pool_blocks_ * block_bytes_;
  info.metadata_bytes = space_->first_data_block() * block_bytes_;
  info.used_bytes = space_->blocks_in_use() * block_bytes_;
  info.free_bytes = space_->free_blocks() * block_bytes_;
  info.generation = sb_.generation;
  for (const Record& r : records_) {
    info.volumes += r.id != 0 && r.kind == Kind::kVolume;
    info.snapshots += r.id != 0 && r.kind == Kind::kSnapshot;
  }
  info.cache_bytes = cache_->cached_bytes();
  info.warnings = open_warnings_;
  return info;
}

// ---- Catalog lookups -------------------------------------------------------

Result<size_t> Pool::FindVolumeSlot(std::string_view name) const {
  auto it = volume_by_name_.find(std::string(name));
  if (it == volume_by_name_.end()) {
    return Status::NotFound("volume '" + std::string(name) + "' does not exist");
  }
  return it->second;
}

Result<size_t> Pool::FindSnapshotSlot(uint64_t volume_id, std::string_view name) const {
  auto it = snapshot_by_key_.find(SnapshotKey(volume_id, name));
  if (it == snapshot_by_key_.end()) {
    const auto vol = slot_by_id_.find(volume_id);
    const std::string vol_name = vol == slot_by_id_.end() ? "?" : records_[vol->second].name;
    return Status::NotFound("snapshot '" + vol_name + "@" + std::string(name) + "' does not exist");
  }
  return it->second;
}

uint64_t Pool::CountSnapshots(uint64_t volume_id) const {
  uint64_t n = 0;
  for (const Record& r : records_)
    n += r.id != 0 && r.kind == Kind::kSnapshot && r.parent_id == volume_id;
  return n;
}

VolumeInfo Pool::MakeVolumeInfo(const Record& r) const {
  VolumeInfo info;
  info.name = r.name;
  info.id = r.id;
  info.size_bytes = r.size_bytes;
  info.profile = r.profile;
  info.created_unix_ns = r.created_unix_ns;
  info.snapshots = CountSnapshots(r.id);
  info.lsn = r.lsn;
  info.lineage = r.lineage;
  if (r.parent_id != 0) {
    auto snap = slot_by_id_.find(r.parent_id);
    if (snap != slot_by_id_.end()) {
      const Record& s = records_[snap->second];
      auto vol = slot_by_id_.find(s.parent_id);
      info.origin =
          (vol == slot_by_id_.end() ? std::string("?") : records_[vol->second].name) + "@" + s.name;
    }
  }
  return info;
}

SnapshotInfo Pool::MakeSnapshotInfo(const Record& r) const {
  SnapshotInfo info;
  auto vol = slot_by_id_.find(r.parent_id);
  info.volume = vol == slot_by_id_.end() ? "" : records_[vol->second].name;
  info.name = r.name;
  info.id = r.id;
  info.size_bytes = r.size_bytes;
  info.created_unix_ns = r.created_unix_ns;
  info.lsn = r.lsn;
  return info;
}

Volume* Pool::LiveVolume(uint64_t id) const {
  auto it = volumes_.find(id);
  return it == volumes_.end() ? nullptr : it->second.get();
}

Status Pool::CheckIdle(const Record& volume) const {
  const Volume* v = LiveVolume(volume.id);
  if (v == nullptr) return Status::OK();
  const std::string what = volume.kind == Kind::kVolume ? "volume '" + volume.name + "'"
                                                        : "snapshot '" + volume.name + "'";
  if (v->in_use()) return Status::Busy(what + " is in use (open by a client)");
  if (v->in_flight() > 0) {
    return Status::Busy(what + " has " + std::to_string(v->in_flight()) + " requests in flight");
  }
  return Status::OK();
}

// ---- Volumes ---------------------------------------------------------------

Status Pool::ValidateVolumeSize(uint64_t size_bytes, EssdLevel profile) const {
  if (size_bytes == 0 || size_bytes % 512 != 0) {
    return Status::InvalidArgument("volume size " + std::to_string(size_bytes) +
                                   " is not a positive multiple of 512 bytes");
  }
  const uint64_t capacity = (pool_blocks_ - space_->first_data_block()) * block_bytes_;
  if (size_bytes > capacity) {
    return Status::InvalidArgument("volume size " + std::to_string(size_bytes) +
                                   " bytes is larger than the pool's capacity of " +
                                   std::to_string(capacity) + " bytes");
  }
  if (profile != EssdLevel::kUnlimited) {
    SNAPDISK_RETURN_IF_ERROR(EssdProfile::For(profile, size_bytes).status());
  }
  return Status::OK();
}

// A lineage id unique beyond this pool: the store keys a volume's backup
// chains by (name, lineage), and a volume of the same name in another pool
// (one restored after a disk failure, say) must never continue a chain that
// is not its own. Random, 1 to 2^53 - 1 (exact as a JSON number anywhere).
uint64_t Pool::NewLineageId() {
  static std::mutex mu;
  static std::mt19937_64 rng{std::random_device{}()};
  std::lock_guard<std::mutex> lock(mu);
  return 1 + rng() % ((uint64_t{1} << 53) - 1);
}

Status Pool::NewVolumeRecord(std::string_view name, uint64_t size_bytes, EssdLevel profile,
                             const TreeRoot& root, uint64_t parent_id, size_t* slot_out) {
  const size_t slot = AllocateSlot();
  Record& r = records_[slot];
  r.id = sb_.next_object_id++;
  r.parent_id = parent_id;
  r.kind = Kind::kVolume;
  r.profile = profile;
  r.name = std::string(name);
  r.size_bytes = size_bytes;
  r.root = root;
  r.created_unix_ns = WallNowNs();
  r.lineage = NewLineageId();
  slot_by_id_[r.id] = slot;
  volume_by_name_[r.name] = slot;
  MarkRootDirty(slot);
  *slot_out = slot;
  NewLogRecord(r.id);  // may move records_: `r` is dead from here
  return Status::OK();
}

Result<VolumeInfo> Pool::CreateVolume(std::string_view name, uint64_t size_bytes,
                                      EssdLevel profile) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_RETURN_IF_ERROR(ValidateName(name, "volume name"));
  if (volume_by_name_.count(std::string(name))) {
    return Status::AlreadyExists("volume '" + std::string(name) + "' already exists");
  }
  SNAPDISK_RETURN_IF_ERROR(ValidateVolumeSize(size_bytes, profile));
  SNAPDISK_RETURN_IF_ERROR(CheckRoom(kCatalogOpBlocks));
  const uint64_t blocks = (size_bytes + block_bytes_ - 1) / block_bytes_;
  size_t slot;
  SNAPDISK_RETURN_IF_ERROR(
      NewVolumeRecord(name, size_bytes, profile, TreeRoot{{}, map_->HeightFor(blocks)}, 0, &slot));
  return MakeVolumeInfo(records_[slot]);
}

Status Pool::DeleteVolume(std::string_view name) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_ASSIGN_OR_RETURN(size_t slot, FindVolumeSlot(name));
  Record& r = records_[slot];
  SNAPDISK_RETURN_IF_ERROR(CheckIdle(r));
  if (uint64_t n = CountSnapshots(r.id); n > 0) {
    return Status::Busy("volume '" + r.name + "' has " + std::to_string(n) +
                        " snapshots; delete them first");
  }
  volumes_.erase(r.id);
  Status s = DeleteAuxRecords(r.id);
  if (s.ok()) s = map_->Release(records_[slot].root);
  if (!s.ok()) return Fail(s);
  FreeSlot(slot);
  return Status::OK();
}

Status Pool::GrowVolume(std::string_view name, uint64_t new_size_bytes) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_ASSIGN_OR_RETURN(size_t slot, FindVolumeSlot(name));
  Record& r = records_[slot];
  if (new_size_bytes < r.size_bytes) {
    return Status::InvalidArgument("volume '" + r.name + "' is " + std::to_string(r.size_bytes) +
                                   " bytes; a volume can grow but not shrink");
  }
  SNAPDISK_RETURN_IF_ERROR(ValidateVolumeSize(new_size_bytes, r.profile));
  SNAPDISK_RETURN_IF_ERROR(CheckRoom(kCatalogOpBlocks));
  const uint64_t blocks = (new_size_bytes + block_bytes_ - 1) / block_bytes_;
  Status s = map_->Grow(r.root, map_->HeightFor(blocks));
  if (!s.ok()) return Fail(s);
  r.size_bytes = new_size_bytes;
  MarkRootDirty(slot);
  if (Volume* v = LiveVolume(r.id)) v->ConfigureQos();  // figures follow the capacity
  return Status::OK();
}

std::vector<VolumeInfo> Pool::ListVolumes() const {
  std::vector<VolumeInfo> out;
  for (const Record& r : records_) {
    if (r.id != 0 && r.kind == Kind::kVolume) out.push_back(MakeVolumeInfo(r));
  }
  std::sort(out.begin(), out.end(),
            [](const VolumeInfo& a, const VolumeInfo& b) { return a.name < b.name; });
  return out;
}

Result<VolumeInfo> Pool::GetVolume(std::string_view name) const {
  SNAPDISK_ASSIGN_OR_RETURN(size_t slot, FindVolumeSlot(name));
  return MakeVolumeInfo(records_[slot]);
}

Result<Volume*> Pool::OpenVolume(std::string_view name) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_ASSIGN_OR_RETURN(size_t slot, FindVolumeSlot(name));
  const uint64_t id = records_[slot].id;
  if (!volumes_.count(id)) SNAPDISK_RETURN_IF_ERROR(LoadHydration(id));  // before any I/O
  auto& handle = volumes_[id];
  if (!handle) {
    handle.reset(new Volume(*this, id, slot));
    handle->ConfigureQos();
  }
  return handle.get();
}

}  // namespace snapdisk
