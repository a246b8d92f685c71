// Volume attributes: small values kept in the pool as records of kind 3 whose
// tree holds the value's bytes (FORMAT.md, "attribute"). A new value is
// written to fresh blocks and swapped in, so a crash keeps the old value or
// the new one, like everything else the pool commits.
#include <cstring>

#include "engine/aligned_buffer.h"
#include "engine/names.h"
#include "engine/pool.h"

namespace snapdisk {

namespace {
constexpr uint64_t kMaxAttributeBytes = 64 * 1024;
}  // namespace

Status Pool::SetAttribute(std::string_view volume, std::string_view key, std::string_view value) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_RETURN_IF_ERROR(ValidateName(key, "attribute name"));
  if (value.size() > kMaxAttributeBytes) {
    return Status::InvalidArgument("attribute '" + std::string(key) + "' is " +
                                   std::to_string(value.size()) + " bytes; the limit is " +
                                   std::to_string(kMaxAttributeBytes));
  }
  SNAPDISK_ASSIGN_OR_RETURN(size_t vol_slot, FindVolumeSlot(volume));
  const uint64_t vol_id = records_[vol_slot].id;
  const uint64_t blocks = (value.size() + block_bytes_ - 1) / block_bytes_;
  const uint8_t height = map_->HeightFor(std::max<uint64_t>(blocks, 1));
  SNAPDISK_RETURN_IF_ERROR(CheckRoom(kCatalogOpBlocks + blocks + height * 2));

  // The new value's tree, built before anything else changes.
  TreeRoot root{{}, height};
  AlignedBuffer block(block_bytes_);
  Status s;
  for (uint64_t i = 0; i < blocks && s.ok(); ++i) {
    std::memset(block.data(), 0, block_bytes_);
    const uint64_t n = std::min<uint64_t>(block_bytes_, value.size() - i * block_bytes_);
    std::memcpy(block.data(), value.data() + i * block_bytes_, n);
    auto pbn = space_->Allocate();
    if (!pbn.ok()) {
      s = pbn.status();
      break;
    }
    const format::MapEntry e{*pbn, format::Checksum(block.span())};
    s = device_.Write(*pbn * block_bytes_, block.span());
    if (s.ok()) s = map_->Set(root, i, e).status();
    if (!s.ok()) (void)map_->ReleaseData(*pbn);
  }
  if (!s.ok()) {
    Status released = map_->Release(root);
    return released.ok() ? s : Fail(released);
  }

  const std::string aux = AuxKey(Kind::kAttribute, vol_id, key);
  auto it = aux_by_key_.find(aux);
  size_t slot;
  if (it != aux_by_key_.end()) {
    slot = it->second;
    if (Status r = map_->Release(records_[slot].root); !r.ok()) return Fail(r);
  } else {
    slot = AllocateSlot();
    Record& r = records_[slot];
    r.id = sb_.next_object_id++;
    r.parent_id = vol_id;
    r.kind = Kind::kAttribute;
    r.name = std::string(key);
    slot_by_id_[r.id] = slot;
    aux_by_key_[aux] = slot;
  }
  Record& r = records_[slot];
  r.root = root;
  r.size_bytes = value.size();
  r.created_unix_ns = WallNowNs();
  MarkRootDirty(slot);
  return Status::OK();
}

Result<std::string> Pool::GetAttribute(std::string_view volume, std::string_view key) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_ASSIGN_OR_RETURN(size_t vol_slot, FindVolumeSlot(volume));
  auto it = aux_by_key_.find(AuxKey(Kind::kAttribute, records_[vol_slot].id, key));
  if (it == aux_by_key_.end()) {
    return Status::NotFound("volume '" + std::string(volume) + "' has no attribute '" +
                            std::string(key) + "'");
  }
  const Record& r = records_[it->second];
  std::string value(r.size_bytes, '\0');
  AlignedBuffer block(block_bytes_);
  for (uint64_t i = 0; i * block_bytes_ < r.size_bytes; ++i) {
    SNAPDISK_ASSIGN_OR_RETURN(format::MapEntry e, map_->Lookup(r.root, i));
    if (e.pbn != 0) {
      SNAPDISK_RETURN_IF_ERROR(device_.Read(e.pbn * block_bytes_, block.span()));
      if (format::Checksum(block.span()) != e.checksum) {
        return Status::Corruption("attribute '" + r.name + "' of volume '" +
                                  std::string(volume) + "': block " + std::to_string(e.pbn) +
                                  " checksum mismatch");
      }
    } else {
      std::memset(block.data(), 0, block_bytes_);
    }
    const uint64_t n = std::min<uint64_t>(block_bytes_, r.size_bytes - i * block_bytes_);
    std::memcpy(value.data() + i * block_bytes_, block.data(), n);
  }
  return value;
}

Status Pool::RemoveAttribute(std::string_view volume, std::string_view key) {
  SNAPDISK_RETURN_IF_ERROR(CheckHealthy());
  SNAPDISK_ASSIGN_OR_RETURN(size_t vol_slot, FindVolumeSlot(volume));
  auto it = aux_by_key_.find(AuxKey(Kind::kAttribute, records_[vol_slot].id, key));
  if (it == aux_by_key_.end()) {
    return Status::NotFound("volume '" + std::string(volume) + "' has no attribute '" +
                            std::string(key) + "'");
  }
  const size_t slot = it->second;
  if (Status s = map_->Release(records_[slot].root); !s.ok()) return Fail(s);
  FreeSlot(slot);
  return Status::OK();
}

}  // namespace snapdisk
