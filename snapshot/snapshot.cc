// Snapshots of a volume: create, delete, list and diff (Pool methods; the
// contract is in engine/pool.h).
#include <algorithm>
#include <string>

#include "engine/hydration.h"
#include "engine/names.h"
#include "engine/pool.h"

namespace snapdisk {

using format::MapEntry;

Result<SnapshotInfo> Pool::CreateSnapshot(std::string_view volume, std::string_view name) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_RETURN_IF_ERROR(ValidateName(name, "snapshot name"));
  SNAPDISK_ASSIGN_OR_RETURN(size_t vol_slot, FindVolumeSlot(volume));
  const uint64_t vol_id = records_[vol_slot].id;
  // A snapshot shares the volume's map, where blocks still pending hydration
  // are holes: it would read zeros for them (and so would a backup taken
  // from it). Refused until the volume is hydrated.
  SNAPDISK_ASSIGN_OR_RETURN(HydrationInfo hydration, GetHydrationInfo(volume));
  if (hydration.hydrating) {
    return Status::Busy("volume '" + std::string(volume) + "' is still being hydrated from " +
                        "its backup (" + std::to_string(hydration.pending_bytes) +
                        " bytes pending); snapshot it once the restore has filled it");
  }
  if (snapshot_by_key_.count(SnapshotKey(vol_id, name))) {
    return Status::AlreadyExists("snapshot '" + std::string(volume) + "@" + std::string(name) +
                                 "' already exists");
  }
  SNAPDISK_RETURN_IF_ERROR(CheckRoom(kCatalogOpBlocks));
  const size_t slot = AllocateSlot();
  const Record& vol = records_[vol_slot];  // after AllocateSlot: records_ may have moved
  Record& snap = records_[slot];
  snap.id = sb_.next_object_id++;
  snap.parent_id = vol.id;
  snap.kind = Kind::kSnapshot;
  snap.profile = vol.profile;
  snap.name = std::string(name);
  snap.size_bytes = vol.size_bytes;
  snap.root = vol.root;
  snap.created_unix_ns = WallNowNs();
  snap.lsn = vol.lsn;
  snap.lineage = vol.lineage;
  slot_by_id_[snap.id] = slot;
  snapshot_by_key_[SnapshotKey(vol_id, name)] = slot;
  MarkRootDirty(slot);
  Status s = map_->Share(snap.root);
  if (!s.ok()) return Fail(s);
  return MakeSnapshotInfo(records_[slot]);
}

Status Pool::DeleteSnapshot(std::string_view volume, std::string_view name, Release release) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_ASSIGN_OR_RETURN(size_t vol_slot, FindVolumeSlot(volume));
  SNAPDISK_ASSIGN_OR_RETURN(size_t slot, FindSnapshotSlot(records_[vol_slot].id, name));
  SNAPDISK_RETURN_IF_ERROR(CheckIdle(records_[slot]));
  volumes_.erase(records_[slot].id);
  if (release == Release::kInBackground) {
    map_->ReleaseLater(records_[slot].root);  // Poll and the next commit free it
  } else if (Status s = map_->Release(records_[slot].root); !s.ok()) {
    return Fail(s);
  }
  FreeSlot(slot);
  return Status::OK();
}

Result<Volume*> Pool::OpenSnapshot(std::string_view volume, std::string_view name) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_ASSIGN_OR_RETURN(size_t vol_slot, FindVolumeSlot(volume));
  SNAPDISK_ASSIGN_OR_RETURN(size_t slot, FindSnapshotSlot(records_[vol_slot].id, name));
  auto& handle = volumes_[records_[slot].id];
  if (!handle) handle.reset(new Volume(*this, records_[slot].id, slot));  // no QoS: reads of a copy
  return handle.get();
}

Result<std::vector<SnapshotInfo>> Pool::ListSnapshots(std::string_view volume, bool with_usage) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_ASSIGN_OR_RETURN(size_t vol_slot, FindVolumeSlot(volume));
  const uint64_t vol_id = records_[vol_slot].id;
  std::vector<const Record*> snaps;
  for (const Record& r : records_) {
    if (r.id != 0 && r.kind == Kind::kSnapshot && r.parent_id == vol_id) snaps.push_back(&r);
  }
  std::sort(snaps.begin(), snaps.end(),
            [](const Record* a, const Record* b) { return a->id < b->id; });
  std::vector<SnapshotInfo> out;
  out.reserve(snaps.size());
  for (const Record* r : snaps) {
    SnapshotInfo info = MakeSnapshotInfo(*r);
    if (with_usage) {
      SNAPDISK_RETURN_IF_ERROR(
          map_->ForEachDataSharing(r->root, [&](uint64_t, const MapEntry&, bool exclusive) {
            (exclusive ? info.exclusive_bytes : info.shared_bytes) += block_bytes_;
            return Status::OK();
          }));
    }
    out.push_back(std::move(info));
  }
  cache_->Trim();
  return out;
}

Result<std::vector<Extent>> Pool::Diff(std::string_view volume, std::string_view from,
                                       std::string_view to) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_ASSIGN_OR_RETURN(size_t vol_slot, FindVolumeSlot(volume));
  const Record& vol = records_[vol_slot];
  TreeRoot from_root{{}, 1};
  if (!from.empty()) {
    SNAPDISK_ASSIGN_OR_RETURN(size_t s, FindSnapshotSlot(vol.id, from));
    from_root = records_[s].root;
  }
  TreeRoot to_root = vol.root;
  uint64_t size = vol.size_bytes;
  if (!to.empty()) {
    SNAPDISK_ASSIGN_OR_RETURN(size_t s, FindSnapshotSlot(vol.id, to));
    to_root = records_[s].root;
    size = records_[s].size_bytes;
  }
  std::vector<Extent> out;
  SNAPDISK_RETURN_IF_ERROR(map_->Diff(from_root, to_root, [&](uint64_t vbn, const MapEntry& in_to) {
    const uint64_t offset = vbn * block_bytes_;
    if (offset >= size) return Status::OK();
    const uint64_t length = std::min<uint64_t>(block_bytes_, size - offset);
    const bool zero = in_to.pbn == 0;
    if (!out.empty() && out.back().zero == zero &&
        out.back().offset_bytes + out.back().length_bytes == offset) {
      out.back().length_bytes += length;
    } else {
      out.push_back(Extent{offset, length, zero});
    }
    return Status::OK();
  }));
  cache_->Trim();
  return out;
}

}  // namespace snapdisk
