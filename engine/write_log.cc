// The write log of each volume (Pool, "The write log"; FORMAT.md, "write log").
//
// Why references and not copies: every write already lands in fresh blocks
// (redirect on write), so the log only needs to keep those blocks alive until
// its segment is shipped — one more reference count and one leaf entry in the
// log's tree per block, no second copy of the data. The log tree is an
// ordinary tree of the pool, so commit, crash recovery and fsck cover it like
// any volume.
#include <algorithm>
#include <cstring>

#include "engine/aligned_buffer.h"
#include "engine/pool.h"
#include "engine/volume.h"

namespace snapdisk {

namespace {

using format::MapEntry;

constexpr uint32_t kLogRecordBytes = 64;
// Record blocks live from this VBN of a log tree up; log data blocks below.
constexpr uint64_t kLogRecordBase = uint64_t{1} << 31;
constexpr uint8_t kLogEnabled = 1;
constexpr uint8_t kLogRequired = 2;
constexpr const char* kLogName = "log";

uint8_t EncodeOp(VolumeOp op) {
  switch (op) {
    case VolumeOp::kWrite:
      return 1;
    case VolumeOp::kTrim:
      return 2;
    default:
      return 3;
  }
}

void EncodeLogRecord(const Pool::LogRecord& r, std::byte* p) {
  std::memset(p, 0, kLogRecordBytes);
  format::Store64(p + 0, r.index);
  format::Store64(p + 8, r.lsn);
  format::Store64(p + 16, r.lineage);
  format::Store64(p + 24, static_cast<uint64_t>(r.time_unix_ns));
  format::Store64(p + 32, r.offset_bytes);
  format::Store64(p + 40, r.length_bytes);
  format::Store64(p + 48, r.first_log_block);
  p[56] = static_cast<std::byte>(EncodeOp(r.op));
}

Result<Pool::LogRecord> DecodeLogRecord(const std::byte* p, uint64_t want_index,
                                        const std::string& volume) {
  Pool::LogRecord r;
  r.index = format::Load64(p + 0);
  r.lsn = format::Load64(p + 8);
  r.lineage = format::Load64(p + 16);
  r.time_unix_ns = static_cast<int64_t>(format::Load64(p + 24));
  r.offset_bytes = format::Load64(p + 32);
  r.length_bytes = format::Load64(p + 40);
  r.first_log_block = format::Load64(p + 48);
  const uint8_t op = static_cast<uint8_t>(p[56]);
  if (r.index != want_index || op < 1 || op > 3) {
    return Status::Corruption("write log of volume '" + volume + "': record " +
                              std::to_string(want_index) + " is damaged");
  }
  r.op = op == 1 ? VolumeOp::kWrite : op == 2 ? VolumeOp::kTrim : VolumeOp::kWriteZeroes;
  return r;
}

}  // namespace

// ---- Records in the catalog ----------------------------------------------

void Pool::NewLogRecord(uint64_t volume_id) {
  const size_t slot = AllocateSlot();
  Record& r = records_[slot];
  r.id = sb_.next_object_id++;
  r.parent_id = volume_id;
  r.kind = Kind::kLog;
  r.name = kLogName;
  r.root = TreeRoot{{}, map_->HeightFor(2 * kLogRecordBase)};
  r.created_unix_ns = WallNowNs();
  r.log_flags = kLogEnabled;
  slot_by_id_[r.id] = slot;
  aux_by_key_[AuxKey(Kind::kLog, volume_id, kLogName)] = slot;
  log_slot_by_volume_[volume_id] = slot;
  MarkRootDirty(slot);
}

Status Pool::DeleteAuxRecords(uint64_t volume_id) {
  for (size_t slot = 0; slot < records_.size(); ++slot) {
    Record& r = records_[slot];
    if (r.id == 0 || r.parent_id != volume_id) continue;
    if (r.kind != Kind::kAttribute && r.kind != Kind::kLog && r.kind != Kind::kHydration) {
      continue;
    }
    SNAPDISK_RETURN_IF_ERROR(map_->Release(r.root));
    FreeSlot(slot);
  }
  return Status::OK();
}

Result<size_t> Pool::FindLogSlot(std::string_view volume) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_ASSIGN_OR_RETURN(size_t vol_slot, FindVolumeSlot(volume));
  auto it = log_slot_by_volume_.find(records_[vol_slot].id);
  if (it == log_slot_by_volume_.end()) {
    return Status::Corruption("volume '" + std::string(volume) + "' has no write log record");
  }
  return it->second;
}

// ---- The write path --------------------------------------------------------

uint64_t Pool::LogMetadataNeed(const Volume& volume, uint64_t blocks) const {
  auto it = log_slot_by_volume_.find(volume.id());
  if (it == log_slot_by_volume_.end()) return 0;
  const Record& log = records_[it->second];
  if ((log.log_flags & kLogEnabled) == 0) return 0;
  return MetadataNeed(log.root, blocks);
}

Status Pool::AppendLog(const Volume& volume, VolumeOp op, uint64_t offset_bytes,
                       uint64_t length_bytes, const std::vector<MapEntry>* blocks) {
  auto it = log_slot_by_volume_.find(volume.id());
  if (it == log_slot_by_volume_.end()) return Status::OK();  // a snapshot handle
  const size_t slot = it->second;
  Record& log = records_[slot];
  if ((log.log_flags & kLogEnabled) == 0) return Status::OK();
  const Record& vol = records_[volume.slot_];
  LogRecord rec;
  rec.index = log.log_next_index;
  rec.lsn = vol.lsn;
  rec.lineage = vol.lineage;
  rec.time_unix_ns = WallNowNs();
  rec.op = op;
  rec.offset_bytes = offset_bytes;
  rec.length_bytes = length_bytes;
  rec.first_log_block = log.log_next_block;
  if (blocks != nullptr) {
    if (log.log_next_block + blocks->size() >= kLogRecordBase) {
      return Status::NoSpace("write log of volume '" + vol.name + "' is full (" +
                             std::to_string(log.log_next_block) + " blocks unshipped)");
    }
    for (size_t i = 0; i < blocks->size(); ++i) {
      const MapEntry& e = (*blocks)[i];
      SNAPDISK_RETURN_IF_ERROR(space_->Increment(e.pbn));
      SNAPDISK_ASSIGN_OR_RETURN(MapEntry old, map_->Set(log.root, log.log_next_block + i, e));
      SNAPDISK_CHECK(old.pbn == 0, "log data blocks are appended, never replaced");
    }
    log.log_next_block += blocks->size();
    const uint64_t limit_blocks = options_.log_unshipped_limit_bytes / block_bytes_;
    if ((log.log_flags & kLogRequired) == 0 &&
        log.log_next_block - log.log_first_block > limit_blocks) {
      logs_over_limit_.try_emplace(slot, log.log_next_block - limit_blocks * 3 / 4);
    }
  }
  ++log.log_next_index;
  log_pending_[slot].push_back(rec);
  ++log_pending_records_;
  MarkRootDirty(slot);
  return Status::OK();
}

// ---- Commit ----------------------------------------------------------------

uint64_t Pool::UnrequiredLogBlocks() const {
  uint64_t blocks = 0;
  for (const auto& [volume_id, slot] : log_slot_by_volume_) {
    const Record& log = records_[slot];
    if ((log.log_flags & kLogRequired) == 0) blocks += log.log_next_block - log.log_first_block;
  }
  return blocks;
}

// Drops the oldest records of the log in `slot` whose data starts below
// `target_block` (records' first blocks grow with their index, so a binary
// search finds the cut), noting them as dropped unshipped.
Status Pool::DropLogBelow(size_t slot, uint64_t target_block) {
  const Record& log = records_[slot];
  uint64_t lo = log.log_first_index, hi = log.log_next_index;
  while (lo < hi) {
    const uint64_t mid = lo + (hi - lo) / 2;
    SNAPDISK_ASSIGN_OR_RETURN(LogRecord r, ReadLogRecord(slot, mid));
    if (r.first_log_block >= target_block) {
      hi = mid;
    } else {
      lo = mid + 1;
    }
  }
  if (lo > log.log_first_index) {
    const uint64_t through = lo - 1;
    SNAPDISK_RETURN_IF_ERROR(DropLogThrough(slot, through));
    records_[slot].log_dropped_through = through;
  }
  return Status::OK();
}

Status Pool::DropLogsOverLimit(uint64_t max_blocks) {
  for (auto it = logs_over_limit_.begin(); it != logs_over_limit_.end();) {
    const Record& log = records_[it->first];
    const bool live = log.id != 0 && log.kind == Kind::kLog && (log.log_flags & kLogRequired) == 0;
    const uint64_t first_before = log.log_first_index;
    if (live && log.log_first_index < log.log_next_index && log.log_first_block < it->second) {
      SNAPDISK_RETURN_IF_ERROR(
          DropLogBelow(it->first, std::min(it->second, log.log_first_block + max_blocks)));
      // More next time, as long as each slice drops something (a log emptied
      // meanwhile, by a shipment or turned off, starts its blocks over).
      if (log.log_first_index > first_before && log.log_first_index < log.log_next_index &&
          log.log_first_block < it->second) {
        return Status::OK();
      }
    }
    it = logs_over_limit_.erase(it);
  }
  return Status::OK();
}

Status Pool::CommitLogs() {
  // Under space pressure, logs nobody requires keep nothing.
  const uint64_t limit_blocks =
      log_pressure_ ? 0 : options_.log_unshipped_limit_bytes / block_bytes_;
  log_pressure_ = false;
  for (const auto& [volume_id, slot] : log_slot_by_volume_) {
    const Record& log = records_[slot];
    if ((log.log_flags & kLogRequired) != 0) continue;
    if (log.log_next_block - log.log_first_block <= limit_blocks) continue;
    // Over the limit with nobody to ship it, and Poll has not dropped enough
    // yet: drop the oldest records until a quarter of the limit is free
    // again. (With a limit of 0 every record goes.)
    SNAPDISK_RETURN_IF_ERROR(DropLogBelow(slot, log.log_next_block - limit_blocks * 3 / 4));
  }

  const uint32_t per_block = block_bytes_ / kLogRecordBytes;
  AlignedBuffer block(block_bytes_);
  for (auto& [slot, pending] : log_pending_) {
    if (pending.empty()) continue;
    Record& log = records_[slot];
    size_t i = 0;
    while (i < pending.size()) {
      const uint64_t block_index = (pending[i].index - 1) / per_block;
      const uint64_t vbn = kLogRecordBase + block_index;
      std::memset(block.data(), 0, block_bytes_);
      SNAPDISK_ASSIGN_OR_RETURN(MapEntry old, map_->Lookup(log.root, vbn));
      if (old.pbn != 0) {  // the block already holds this block's older records
        SNAPDISK_RETURN_IF_ERROR(device_.Read(old.pbn * block_bytes_, block.span()));
        if (format::Checksum(block.span()) != old.checksum) {
          return Status::Corruption("write log record block " + std::to_string(block_index) +
                                    " (block " + std::to_string(old.pbn) + ") checksum mismatch");
        }
      }
      for (; i < pending.size() && (pending[i].index - 1) / per_block == block_index; ++i) {
        EncodeLogRecord(pending[i],
                        block.data() + ((pending[i].index - 1) % per_block) * kLogRecordBytes);
      }
      MapEntry fresh;
      SNAPDISK_ASSIGN_OR_RETURN(fresh.pbn, space_->AllocateMetadata());
      fresh.checksum = format::Checksum(block.span());
      SNAPDISK_RETURN_IF_ERROR(device_.Write(fresh.pbn * block_bytes_, block.span()));
      SNAPDISK_ASSIGN_OR_RETURN(MapEntry replaced, map_->Set(log.root, vbn, fresh));
      if (replaced.pbn != 0) SNAPDISK_RETURN_IF_ERROR(map_->ReleaseData(replaced.pbn));
    }
    pending.clear();
    MarkRootDirty(slot);
  }
  log_pending_records_ = 0;
  return Status::OK();
}

// ---- Reading and dropping --------------------------------------------------

Result<Pool::LogRecord> Pool::ReadLogRecord(size_t log_slot, uint64_t index) {
  const Record& log = records_[log_slot];
  SNAPDISK_CHECK(index >= log.log_first_index && index < log.log_next_index,
                 "log record index out of range");
  auto pending = log_pending_.find(log_slot);
  if (pending != log_pending_.end() && !pending->second.empty() &&
      index >= pending->second.front().index) {
    return pending->second[index - pending->second.front().index];
  }
  const uint32_t per_block = block_bytes_ / kLogRecordBytes;
  const uint64_t block_index = (index - 1) / per_block;
  auto vol = slot_by_id_.find(log.parent_id);
  const std::string volume = vol == slot_by_id_.end() ? "?" : records_[vol->second].name;
  SNAPDISK_ASSIGN_OR_RETURN(MapEntry e, map_->Lookup(log.root, kLogRecordBase + block_index));
  if (e.pbn == 0) {
    return Status::Corruption("write log of volume '" + volume + "': record block " +
                              std::to_string(block_index) + " is missing");
  }
  AlignedBuffer block(block_bytes_);
  SNAPDISK_RETURN_IF_ERROR(device_.Read(e.pbn * block_bytes_, block.span()));
  if (format::Checksum(block.span()) != e.checksum) {
    return Status::Corruption("write log of volume '" + volume + "': record block " +
                              std::to_string(block_index) + " (block " + std::to_string(e.pbn) +
                              ") checksum mismatch");
  }
  return DecodeLogRecord(block.data() + ((index - 1) % per_block) * kLogRecordBytes, index,
                         volume);
}

Status Pool::DropLogThrough(size_t log_slot, uint64_t through_index) {
  Record& log = records_[log_slot];
  through_index = std::min(through_index, log.log_next_index - 1);
  if (through_index < log.log_first_index) return Status::OK();
  const uint64_t new_first = through_index + 1;
  uint64_t new_first_block = log.log_next_block;
  if (new_first < log.log_next_index) {
    SNAPDISK_ASSIGN_OR_RETURN(LogRecord next, ReadLogRecord(log_slot, new_first));
    new_first_block = next.first_log_block;
  }
  SNAPDISK_RETURN_IF_ERROR(CheckRoom(4 * MetadataNeed(log.root, 1), /*freeing=*/true));
  // From here on a failure leaves the tree half changed: it fails the pool.
  Status s;
  if (new_first_block > log.log_first_block) {
    // Shipped blocks the volume overwrote since are free now: keep them in the
    // file for the next writes (as an overwrite would have), don't punch.
    s = map_->Unmap(log.root, log.log_first_block, new_first_block - log.log_first_block,
                    SpaceMap::FreeKind::kReuse);
  }
  // Record blocks wholly below the new first record.
  const uint32_t per_block = block_bytes_ / kLogRecordBytes;
  const uint64_t first_block = (log.log_first_index - 1) / per_block;
  const uint64_t keep_block = (new_first - 1) / per_block;
  if (s.ok() && keep_block > first_block) {
    s = map_->Unmap(log.root, kLogRecordBase + first_block, keep_block - first_block);
  }
  if (!s.ok()) return Fail(s);
  auto pending = log_pending_.find(log_slot);
  if (pending != log_pending_.end()) {
    auto& v = pending->second;
    auto keep = std::find_if(v.begin(), v.end(),
                             [&](const LogRecord& r) { return r.index >= new_first; });
    log_pending_records_ -= static_cast<uint64_t>(keep - v.begin());
    v.erase(v.begin(), keep);
  }
  log.log_first_index = new_first;
  log.log_first_block = new_first_block;
  if (log.log_first_index == log.log_next_index) {
    // Empty: log data blocks start over (record indexes never do).
    log.log_first_block = log.log_next_block = 0;
  }
  MarkRootDirty(log_slot);
  return Status::OK();
}

// ---- Public API ------------------------------------------------------------

Result<Pool::LogInfo> Pool::GetLogInfo(std::string_view volume) {
  SNAPDISK_ASSIGN_OR_RETURN(size_t slot, FindLogSlot(volume));
  const Record& log = records_[slot];
  LogInfo info;
  info.enabled = (log.log_flags & kLogEnabled) != 0;
  info.required = (log.log_flags & kLogRequired) != 0;
  info.first_index = log.log_first_index < log.log_next_index ? log.log_first_index : 0;
  info.next_index = log.log_next_index;
  info.dropped_through = log.log_dropped_through;
  info.records = log.log_next_index - log.log_first_index;
  info.referenced_bytes = (log.log_next_block - log.log_first_block) * block_bytes_;
  return info;
}

Status Pool::SetLogEnabled(std::string_view volume, bool enabled) {
  SNAPDISK_ASSIGN_OR_RETURN(size_t slot, FindLogSlot(volume));
  Record& log = records_[slot];
  if (!enabled && (log.log_flags & kLogRequired) != 0) {
    return Status::PermissionDenied("the write log of volume '" + std::string(volume) +
                                    "' cannot be turned off while it has a backup policy");
  }
  if (enabled == ((log.log_flags & kLogEnabled) != 0)) return Status::OK();
  if (!enabled) {
    const uint64_t last = log.log_next_index - 1;
    SNAPDISK_RETURN_IF_ERROR(DropLogThrough(slot, last));
    records_[slot].log_dropped_through = last;
  }
  Record& r = records_[slot];
  r.log_flags = static_cast<uint8_t>(enabled ? (r.log_flags | kLogEnabled)
                                             : (r.log_flags & ~kLogEnabled));
  MarkRecordDirty(slot);
  return Status::OK();
}

Status Pool::SetLogRequired(std::string_view volume, bool required) {
  SNAPDISK_ASSIGN_OR_RETURN(size_t slot, FindLogSlot(volume));
  Record& log = records_[slot];
  if (required && (log.log_flags & kLogEnabled) == 0) {
    // Turning it on now: a gap since the log was off is already recorded in
    // log_dropped_through.
    log.log_flags |= kLogEnabled;
  }
  log.log_flags = static_cast<uint8_t>(required ? (log.log_flags | kLogRequired)
                                                : (log.log_flags & ~kLogRequired));
  MarkRecordDirty(slot);
  return Status::OK();
}

Result<std::vector<Pool::LogRecord>> Pool::ReadLog(std::string_view volume, uint64_t from_index,
                                                   size_t max_records) {
  SNAPDISK_ASSIGN_OR_RETURN(size_t slot, FindLogSlot(volume));
  const Record& log = records_[slot];
  std::vector<LogRecord> out;
  const uint64_t first = std::max(from_index, log.log_first_index);
  const uint64_t end = first >= log.log_next_index ? first
                       : first + std::min<uint64_t>(max_records, log.log_next_index - first);
  if (first >= end) return out;
  out.reserve(end - first);
  // Whole record blocks at a time; the pending tail from memory.
  const uint32_t per_block = block_bytes_ / kLogRecordBytes;
  auto pending = log_pending_.find(slot);
  const uint64_t pending_first = pending != log_pending_.end() && !pending->second.empty()
                                     ? pending->second.front().index
                                     : log.log_next_index;
  AlignedBuffer block(block_bytes_);
  uint64_t loaded_block = UINT64_MAX;
  const std::string& name = records_[slot_by_id_.at(log.parent_id)].name;
  for (uint64_t index = first; index < end; ++index) {
    if (index >= pending_first) {
      out.push_back(pending->second[index - pending_first]);
      continue;
    }
    const uint64_t block_index = (index - 1) / per_block;
    if (block_index != loaded_block) {
      SNAPDISK_ASSIGN_OR_RETURN(MapEntry e, map_->Lookup(log.root, kLogRecordBase + block_index));
      if (e.pbn == 0) {
        return Status::Corruption("write log of volume '" + name + "': record block " +
                                  std::to_string(block_index) + " is missing");
      }
      SNAPDISK_RETURN_IF_ERROR(device_.Read(e.pbn * block_bytes_, block.span()));
      if (format::Checksum(block.span()) != e.checksum) {
        return Status::Corruption("write log of volume '" + name + "': record block " +
                                  std::to_string(block_index) + " (block " +
                                  std::to_string(e.pbn) + ") checksum mismatch");
      }
      loaded_block = block_index;
    }
    SNAPDISK_ASSIGN_OR_RETURN(
        LogRecord r,
        DecodeLogRecord(block.data() + ((index - 1) % per_block) * kLogRecordBytes, index, name));
    out.push_back(r);
  }
  return out;
}

Status Pool::ReadLogData(std::string_view volume, const LogRecord& record,
                         std::span<std::byte> out) {
  SNAPDISK_ASSIGN_OR_RETURN(size_t slot, FindLogSlot(volume));
  const Record& log = records_[slot];
  if (record.op != VolumeOp::kWrite) {
    return Status::InvalidArgument("log record " + std::to_string(record.index) +
                                   " is not a write: it has no data");
  }
  if (out.size() != record.length_bytes) {
    return Status::InvalidArgument("buffer of " + std::to_string(out.size()) +
                                   " bytes for a record of " +
                                   std::to_string(record.length_bytes));
  }
  if (record.index < log.log_first_index || record.index >= log.log_next_index) {
    return Status::NotFound("log record " + std::to_string(record.index) + " of volume '" +
                            std::string(volume) + "' is no longer kept");
  }
  const uint64_t head = record.offset_bytes % block_bytes_;
  const uint64_t blocks = (head + record.length_bytes + block_bytes_ - 1) / block_bytes_;
  // Runs of physically consecutive blocks are read at once (writes allocate
  // runs, so a record's blocks usually are one).
  std::vector<MapEntry> entries(blocks);
  for (uint64_t i = 0; i < blocks; ++i) {
    SNAPDISK_ASSIGN_OR_RETURN(entries[i], map_->Lookup(log.root, record.first_log_block + i));
    if (entries[i].pbn == 0) {
      return Status::Corruption("write log of volume '" + std::string(volume) + "': data of LSN " +
                                std::to_string(record.lsn) + " is missing");
    }
  }
  constexpr uint64_t kMaxRunBlocks = 256;
  AlignedBuffer buf(std::min(blocks, kMaxRunBlocks) * block_bytes_);
  uint64_t copied = 0;
  for (uint64_t i = 0; i < blocks;) {
    uint64_t j = i + 1;
    while (j < blocks && j - i < kMaxRunBlocks && entries[j].pbn == entries[j - 1].pbn + 1) ++j;
    const uint64_t run = j - i;
    SNAPDISK_RETURN_IF_ERROR(
        device_.Read(entries[i].pbn * block_bytes_, buf.span().first(run * block_bytes_)));
    for (uint64_t k = 0; k < run; ++k) {
      const std::byte* b = buf.data() + k * block_bytes_;
      if (format::Checksum({b, block_bytes_}) != entries[i + k].checksum) {
        return Status::Corruption("write log of volume '" + std::string(volume) +
                                  "': data of LSN " + std::to_string(record.lsn) + " (block " +
                                  std::to_string(entries[i + k].pbn) + ") checksum mismatch");
      }
      const uint64_t from = (i + k == 0) ? head : 0;
      const uint64_t n = std::min<uint64_t>(block_bytes_ - from, record.length_bytes - copied);
      std::memcpy(out.data() + copied, b + from, n);
      copied += n;
    }
    i = j;
  }
  return Status::OK();
}

Status Pool::DropLog(std::string_view volume, uint64_t through_index) {
  SNAPDISK_ASSIGN_OR_RETURN(size_t slot, FindLogSlot(volume));
  return DropLogThrough(slot, through_index);
}

}  // namespace snapdisk
