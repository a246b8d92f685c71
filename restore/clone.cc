// Restore inside a pool: clone (a snapshot to a new volume) and rollback (a
// volume back to one of its snapshots). Pool methods; the contract is in
// engine/pool.h.
#include <string>

#include "engine/names.h"
#include "engine/pool.h"

namespace snapdisk {

Result<VolumeInfo> Pool::Clone(std::string_view volume, std::string_view snapshot,
                               std::string_view new_volume) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_RETURN_IF_ERROR(ValidateName(new_volume, "volume name"));
  SNAPDISK_ASSIGN_OR_RETURN(size_t vol_slot, FindVolumeSlot(volume));
  SNAPDISK_ASSIGN_OR_RETURN(size_t snap_slot, FindSnapshotSlot(records_[vol_slot].id, snapshot));
  if (volume_by_name_.count(std::string(new_volume))) {
    return Status::AlreadyExists("volume '" + std::string(new_volume) + "' already exists");
  }
  SNAPDISK_RETURN_IF_ERROR(CheckRoom(kCatalogOpBlocks));
  const Record snap = records_[snap_slot];  // a copy: NewVolumeRecord may grow records_
  size_t slot;
  SNAPDISK_RETURN_IF_ERROR(
      NewVolumeRecord(new_volume, snap.size_bytes, snap.profile, snap.root, snap.id, &slot));
  records_[slot].lsn = snap.lsn;
  Status s = map_->Share(snap.root);
  if (!s.ok()) return Fail(s);
  return MakeVolumeInfo(records_[slot]);
}

Status Pool::Rollback(std::string_view volume, std::string_view snapshot) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_ASSIGN_OR_RETURN(size_t vol_slot, FindVolumeSlot(volume));
  Record& vol = records_[vol_slot];
  SNAPDISK_ASSIGN_OR_RETURN(size_t snap_slot, FindSnapshotSlot(vol.id, snapshot));
  SNAPDISK_RETURN_IF_ERROR(CheckIdle(vol));
  SNAPDISK_RETURN_IF_ERROR(CheckRoom(kCatalogOpBlocks));
  const Record& snap = records_[snap_slot];
  TreeRoot old_root = vol.root;
  TreeRoot new_root = snap.root;
  Status s = map_->Share(new_root);
  // A volume grown since the snapshot keeps its size; the new part reads zeros.
  if (s.ok()) s = map_->Grow(new_root, std::max(new_root.height, old_root.height));
  if (s.ok()) s = map_->Release(old_root);
  if (!s.ok()) return Fail(s);
  vol.root = new_root;
  vol.lsn = snap.lsn;
  vol.lineage = NewLineageId();
  MarkRootDirty(vol_slot);
  return Status::OK();
}

}  // namespace snapdisk
