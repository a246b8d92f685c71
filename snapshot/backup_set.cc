// Backup sets: manifest and chunk codecs, keys, and reading sets back from a
// WormStore (the contract is in snapshot/backup_set.h).
#include "snapshot/backup_set.h"

#include <openssl/evp.h>
#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <charconv>
#include <cstring>
#include <limits>
#include <map>
#include <mutex>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>

#include "engine/names.h"
#include "snapshot/restore_index.h"

namespace snapdisk {

namespace {

using OrderedJson = nlohmann::ordered_json;
using Json = nlohmann::json;

constexpr char kManifestFormat[] = "snapdisk-backup-set";
constexpr int kManifestVersion = 1;
constexpr char kChunkMagic[4] = {'S', 'D', 'C', 'K'};
constexpr uint8_t kChunkVersion = 1;
constexpr uint8_t kCodecZstd = 1;
constexpr size_t kChunkHeaderBytes = 12;
// The largest chunk a store may be configured with; decoding refuses larger
// claims so that a corrupt header cannot make us allocate gigabytes.
constexpr uint64_t kMaxChunkRawBytes = uint64_t{64} << 20;

std::string Hex(const unsigned char* bytes, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return out;
}

bool IsLowerHex(std::string_view s, size_t digits) {
  if (s.size() != digits) return false;
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

bool ParseU64(std::string_view s, uint64_t* out) {
  if (s.empty() || s.size() > 20) return false;
  auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), *out);
  return ec == std::errc() && end == s.data() + s.size();
}

std::string Seq10(uint64_t sequence) {
  std::string digits = std::to_string(sequence);
  if (digits.size() < 10) digits.insert(0, 10 - digits.size(), '0');
  return digits;
}

// "sets/<volume>/<seq:010>-<id><suffix>" -> its parts; false for other keys.
// Suffix ".json": a manifest; ".idx": a restore index's top
// (snapshot/restore_index.h).
constexpr std::string_view kManifestSuffix = ".json";
struct ManifestKeyParts {
  std::string volume;
  uint64_t sequence = 0;
  std::string id;
};
bool ParseSetKey(std::string_view key, std::string_view suffix, ManifestKeyParts* parts) {
  constexpr std::string_view kPrefix = "sets/";
  if (key.size() <= kPrefix.size() + suffix.size() || key.substr(0, kPrefix.size()) != kPrefix ||
      key.substr(key.size() - suffix.size()) != suffix) {
    return false;
  }
  std::string_view rest = key.substr(kPrefix.size(), key.size() - kPrefix.size() - suffix.size());
  const size_t slash = rest.find('/');
  if (slash == std::string_view::npos || slash == 0) return false;
  std::string_view file = rest.substr(slash + 1);
  const size_t dash = file.find('-');
  if (dash != 10 || file.size() < 12) return false;
  uint64_t sequence = 0;
  if (!ParseU64(file.substr(0, 10), &sequence) || sequence == 0) return false;
  std::string_view id = file.substr(11);
  uint64_t id_sequence = 0;
  if (!ParseU64(id.substr(1), &id_sequence) || id_sequence != sequence) return false;
  if (std::string_view("SFDIL").find(id[0]) == std::string_view::npos) return false;
  parts->volume = std::string(rest.substr(0, slash));
  parts->sequence = sequence;
  parts->id = std::string(id);
  return true;
}
bool ParseManifestKey(std::string_view key, ManifestKeyParts* parts) {
  return ParseSetKey(key, kManifestSuffix, parts);
}

// ---- JSON field access without exceptions --------------------------------

class FieldReader {
 public:
  FieldReader(const Json& object, std::string_view key) : object_(object), key_(key) {}

  Status Bad(std::string_view field, std::string_view why) const {
    return Status::Corruption("manifest '" + std::string(key_) + "': field '" + std::string(field) +
                              "' " + std::string(why));
  }
  const Json* Find(const char* field) const {
    auto it = object_.find(field);
    return it == object_.end() ? nullptr : &*it;
  }
  Status U64(const char* field, uint64_t* out) const {
    const Json* v = Find(field);
    if (v == nullptr) return Bad(field, "is missing");
    if (!v->is_number_unsigned()) return Bad(field, "is not a non-negative integer");
    *out = v->get<uint64_t>();
    return Status::OK();
  }
  Status I64(const char* field, int64_t* out) const {
    const Json* v = Find(field);
    if (v == nullptr) return Bad(field, "is missing");
    if (v->is_number_unsigned()) {
      const uint64_t u = v->get<uint64_t>();
      if (u > static_cast<uint64_t>(std::numeric_limits<int64_t>::max())) {
        return Bad(field, "is out of range");
      }
      *out = static_cast<int64_t>(u);
      return Status::OK();
    }
    if (!v->is_number_integer()) return Bad(field, "is not an integer");
    *out = v->get<int64_t>();
    return Status::OK();
  }
  Status Str(const char* field, std::string* out) const {
    const Json* v = Find(field);
    if (v == nullptr) return Bad(field, "is missing");
    if (!v->is_string()) return Bad(field, "is not a string");
    *out = v->get<std::string>();
    return Status::OK();
  }
  Status Array(const char* field, const Json** out) const {
    const Json* v = Find(field);
    if (v == nullptr) return Bad(field, "is missing");
    if (!v->is_array()) return Bad(field, "is not an array");
    *out = v;
    return Status::OK();
  }

 private:
  const Json& object_;
  std::string_view key_;
};

Status DecodeManifestJson(const Json& j, std::string_view key, BackupSet* set) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption("manifest '" + std::string(key) + "': " + why);
  };
  if (!j.is_object()) return bad("not a JSON object");
  FieldReader r(j, key);
  std::string format;
  SNAPDISK_RETURN_IF_ERROR(r.Str("format", &format));
  if (format != kManifestFormat)
    return r.Bad("format", "is not \"" + std::string(kManifestFormat) + "\"");
  uint64_t version = 0;
  SNAPDISK_RETURN_IF_ERROR(r.U64("version", &version));
  if (version != kManifestVersion) {
    return Status::Unsupported("manifest '" + std::string(key) + "': version " +
                               std::to_string(version) + " (this build reads version " +
                               std::to_string(kManifestVersion) + ")");
  }

  std::string type_name;
  SNAPDISK_RETURN_IF_ERROR(r.Str("type", &type_name));
  Result<BackupType> type = ParseBackupType(type_name);
  if (!type.ok()) return r.Bad("type", "has an unknown value '" + type_name + "'");
  set->type = *type;
  SNAPDISK_RETURN_IF_ERROR(r.Str("id", &set->id));
  SNAPDISK_RETURN_IF_ERROR(r.U64("sequence", &set->sequence));
  if (set->sequence == 0) return r.Bad("sequence", "is 0");
  if (set->id != std::string(1, BackupTypeLetter(set->type)) + std::to_string(set->sequence)) {
    return r.Bad("id", "'" + set->id + "' does not match the type and sequence");
  }
  SNAPDISK_RETURN_IF_ERROR(r.Str("volume", &set->volume));
  if (Status s = ValidateName(set->volume, "volume name"); !s.ok()) {
    return r.Bad("volume", s.message());
  }
  SNAPDISK_RETURN_IF_ERROR(r.U64("volume_id", &set->volume_id));
  SNAPDISK_RETURN_IF_ERROR(r.U64("lineage", &set->lineage));
  SNAPDISK_RETURN_IF_ERROR(r.U64("first_lsn", &set->first_lsn));
  SNAPDISK_RETURN_IF_ERROR(r.U64("last_lsn", &set->last_lsn));
  SNAPDISK_RETURN_IF_ERROR(r.Str("base", &set->base));
  const bool needs_base = set->type == BackupType::kDiff || set->type == BackupType::kIncr;
  if (needs_base && set->base.empty()) return r.Bad("base", "is empty for a " + type_name + " set");
  if ((set->type == BackupType::kFull || set->type == BackupType::kSnapshot) &&
      !set->base.empty()) {
    return r.Bad("base", "is set for a " + type_name + " set");
  }
  SNAPDISK_RETURN_IF_ERROR(r.I64("started_unix_ns", &set->started_unix_ns));
  SNAPDISK_RETURN_IF_ERROR(r.I64("finished_unix_ns", &set->finished_unix_ns));
  SNAPDISK_RETURN_IF_ERROR(r.I64("consistent_unix_ns", &set->consistent_unix_ns));
  SNAPDISK_RETURN_IF_ERROR(r.I64("first_record_unix_ns", &set->first_record_unix_ns));
  SNAPDISK_RETURN_IF_ERROR(r.I64("last_record_unix_ns", &set->last_record_unix_ns));
  uint64_t block_bytes = 0;
  SNAPDISK_RETURN_IF_ERROR(r.U64("block_bytes", &block_bytes));
  const bool pow2 = block_bytes != 0 && (block_bytes & (block_bytes - 1)) == 0;
  const bool data_set = set->type != BackupType::kLog;
  if ((data_set || block_bytes != 0) && (!pow2 || block_bytes < 512 || block_bytes > 65536)) {
    return r.Bad("block_bytes", "is not a power of two from 512 to 65536");
  }
  set->block_bytes = static_cast<uint32_t>(block_bytes);
  SNAPDISK_RETURN_IF_ERROR(r.U64("volume_size_bytes", &set->volume_size_bytes));
  if (data_set && set->volume_size_bytes == 0) return r.Bad("volume_size_bytes", "is 0");
  SNAPDISK_RETURN_IF_ERROR(r.U64("data_bytes", &set->data_bytes));
  SNAPDISK_RETURN_IF_ERROR(r.U64("stored_bytes", &set->stored_bytes));
  SNAPDISK_RETURN_IF_ERROR(r.Str("prev_sha256", &set->prev_sha256));
  if (!set->prev_sha256.empty() && !IsLowerHex(set->prev_sha256, 64)) {
    return r.Bad("prev_sha256", "is not 64 lowercase hex digits");
  }
  if (const Json* index = r.Find("restore_index"); index != nullptr) {
    if (!index->is_object()) return r.Bad("restore_index", "is not an object");
    FieldReader ir(*index, key);
    SNAPDISK_RETURN_IF_ERROR(ir.U64("pages", &set->restore_index_pages).WithContext("restore_index"));
    SNAPDISK_RETURN_IF_ERROR(
        ir.Str("sha256", &set->restore_index_sha256).WithContext("restore_index"));
    SNAPDISK_RETURN_IF_ERROR(
        ir.Str("nonce", &set->restore_index_nonce).WithContext("restore_index"));
    if (!IsLowerHex(set->restore_index_sha256, 64) || !IsLowerHex(set->restore_index_nonce, 16)) {
      return r.Bad("restore_index", "sha256 or nonce is not 64 or 16 lowercase hex digits");
    }
  }

  // Chunks.
  const Json* chunks = nullptr;
  SNAPDISK_RETURN_IF_ERROR(r.Array("chunks", &chunks));
  // A chunk may be listed more than once: a log stream whose content repeats
  // lists it at every position. Listings of one hash name the same content,
  // so their sizes agree; their keys may not (a variant put when the first
  // object expired mid-job), and either object serves.
  std::unordered_map<std::string, size_t> first_listing;
  set->chunks.clear();
  set->chunks.reserve(chunks->size());
  for (size_t i = 0; i < chunks->size(); ++i) {
    const Json& c = (*chunks)[i];
    const std::string where = "chunks[" + std::to_string(i) + "]";
    if (!c.is_object()) return bad(where + " is not an object");
    FieldReader cr(c, key);
    ChunkInfo info;
    Status s = cr.Str("hash", &info.hash);
    if (s.ok()) s = cr.U64("raw_bytes", &info.raw_bytes);
    if (s.ok()) s = cr.U64("stored_bytes", &info.stored_bytes);
    if (!s.ok()) return s.WithContext(where);
    const Json* is_new = cr.Find("new");
    if (is_new == nullptr || !is_new->is_boolean()) return bad(where + ": 'new' is not a boolean");
    info.new_in_set = is_new->get<bool>();
    if (!IsLowerHex(info.hash, 32)) return bad(where + ": hash is not 32 lowercase hex digits");
    if (info.raw_bytes == 0 || info.raw_bytes > kMaxChunkRawBytes) {
      return bad(where + ": raw_bytes " + std::to_string(info.raw_bytes) + " is not 1-64 MiB");
    }
    info.key = ChunkKey(info.hash);
    if (const Json* k = cr.Find("key"); k != nullptr) {
      if (!k->is_string()) return bad(where + ": 'key' is not a string");
      std::string chunk_key = k->get<std::string>();
      uint64_t variant = 0;
      const bool ok_key =
          chunk_key == info.key ||
          (chunk_key.size() > info.key.size() + 1 &&
           chunk_key.compare(0, info.key.size(), info.key) == 0 &&
           chunk_key[info.key.size()] == '.' &&
           ParseU64(std::string_view(chunk_key).substr(info.key.size() + 1), &variant));
      if (!ok_key) return bad(where + ": key '" + chunk_key + "' is not the chunk's key");
      info.key = std::move(chunk_key);
    }
    auto [first, is_first] = first_listing.try_emplace(info.hash, i);
    if (!is_first) {
      const ChunkInfo& earlier = set->chunks[first->second];
      if (earlier.raw_bytes != info.raw_bytes) {
        return bad(where + ": chunk " + info.hash + " has raw_bytes " +
                   std::to_string(info.raw_bytes) + ", chunks[" + std::to_string(first->second) +
                   "] says " + std::to_string(earlier.raw_bytes));
      }
    }
    set->chunks.push_back(std::move(info));
  }

  // Extents: [offset, length, chunk_index, chunk_offset], sorted, disjoint.
  const Json* extents = nullptr;
  SNAPDISK_RETURN_IF_ERROR(r.Array("extents", &extents));
  if (!data_set && !extents->empty()) return bad("a log set has extents");
  set->extents.clear();
  set->extents.reserve(extents->size());
  uint64_t end_prev = 0;
  for (size_t i = 0; i < extents->size(); ++i) {
    const Json& e = (*extents)[i];
    const std::string where = "extents[" + std::to_string(i) + "]";
    if (!e.is_array() || e.size() != 4 ||
        !std::all_of(e.begin(), e.end(), [](const Json& v) { return v.is_number_unsigned(); })) {
      return bad(where + " is not [offset, length, chunk_index, chunk_offset]");
    }
    ChunkExtent x;
    x.offset_bytes = e[0].get<uint64_t>();
    x.length_bytes = e[1].get<uint64_t>();
    const uint64_t index = e[2].get<uint64_t>();
    x.chunk_offset_bytes = e[3].get<uint64_t>();
    if (x.length_bytes == 0) return bad(where + " is empty");
    if (x.offset_bytes < end_prev) return bad(where + " overlaps or precedes the one before");
    if (x.offset_bytes > set->volume_size_bytes ||
        x.length_bytes > set->volume_size_bytes - x.offset_bytes) {
      return bad(where + " lies beyond the volume's " + std::to_string(set->volume_size_bytes) +
                 " bytes");
    }
    if (index >= set->chunks.size())
      return bad(where + " names chunk index " + std::to_string(index) + ", which does not exist");
    const ChunkInfo& chunk = set->chunks[index];
    if (x.chunk_offset_bytes > chunk.raw_bytes ||
        x.length_bytes > chunk.raw_bytes - x.chunk_offset_bytes) {
      return bad(where + " lies beyond the end of chunk " + chunk.hash);
    }
    x.chunk = chunk.hash;
    end_prev = x.offset_bytes + x.length_bytes;
    set->extents.push_back(std::move(x));
  }

  const Json* zeros = nullptr;
  SNAPDISK_RETURN_IF_ERROR(r.Array("zero_extents", &zeros));
  set->zero_extents.clear();
  set->zero_extents.reserve(zeros->size());
  end_prev = 0;
  for (size_t i = 0; i < zeros->size(); ++i) {
    const Json& e = (*zeros)[i];
    const std::string where = "zero_extents[" + std::to_string(i) + "]";
    if (!e.is_array() || e.size() != 2 || !e[0].is_number_unsigned() ||
        !e[1].is_number_unsigned()) {
      return bad(where + " is not [offset, length]");
    }
    ZeroExtent z{e[0].get<uint64_t>(), e[1].get<uint64_t>()};
    if (z.length_bytes == 0) return bad(where + " is empty");
    if (z.offset_bytes < end_prev) return bad(where + " overlaps or precedes the one before");
    if (z.offset_bytes > set->volume_size_bytes ||
        z.length_bytes > set->volume_size_bytes - z.offset_bytes) {
      return bad(where + " lies beyond the volume's " + std::to_string(set->volume_size_bytes) +
                 " bytes");
    }
    end_prev = z.offset_bytes + z.length_bytes;
    set->zero_extents.push_back(z);
  }
  // Data and zero ranges are disjoint (both lists are sorted).
  size_t zi = 0;
  for (const ChunkExtent& x : set->extents) {
    while (zi < set->zero_extents.size() &&
           set->zero_extents[zi].offset_bytes + set->zero_extents[zi].length_bytes <=
               x.offset_bytes) {
      ++zi;
    }
    if (zi < set->zero_extents.size() &&
        set->zero_extents[zi].offset_bytes < x.offset_bytes + x.length_bytes) {
      return bad("zero extent at offset " + std::to_string(set->zero_extents[zi].offset_bytes) +
                 " overlaps a data extent");
    }
  }
  return Status::OK();
}

// Process-wide sequence reservations: store -> volume -> sequence.
std::mutex& ReservationMutex() {
  static std::mutex mu;
  return mu;
}
std::map<const WormStore*, std::map<std::string, uint64_t, std::less<>>>& Reservations() {
  static auto* reservations =
      new std::map<const WormStore*, std::map<std::string, uint64_t, std::less<>>>();
  return *reservations;
}

Result<uint64_t> MaxListedSequence(WormStore& store) {
  Result<std::vector<WormObjectInfo>> objects = store.List("sets/");
  if (!objects.ok()) return objects.status().WithContext("listing backup sets");
  uint64_t max_sequence = 0;
  for (const WormObjectInfo& o : *objects) {
    ManifestKeyParts parts;
    if (ParseManifestKey(o.key, &parts)) max_sequence = std::max(max_sequence, parts.sequence);
  }
  return max_sequence;
}

uint64_t MaxReservedLocked(const WormStore& store) {
  uint64_t max_sequence = 0;
  auto it = Reservations().find(&store);
  if (it == Reservations().end()) return 0;
  for (const auto& [volume, sequence] : it->second) max_sequence = std::max(max_sequence, sequence);
  return max_sequence;
}

}  // namespace

const char* BackupTypeName(BackupType type) {
  switch (type) {
    case BackupType::kSnapshot:
      return "snapshot";
    case BackupType::kFull:
      return "full";
    case BackupType::kDiff:
      return "diff";
    case BackupType::kIncr:
      return "incr";
    case BackupType::kLog:
      return "log";
  }
  return "unknown";
}

Result<BackupType> ParseBackupType(std::string_view name) {
  for (BackupType t : {BackupType::kSnapshot, BackupType::kFull, BackupType::kDiff,
                       BackupType::kIncr, BackupType::kLog}) {
    if (name == BackupTypeName(t)) return t;
  }
  return Status::InvalidArgument("unknown backup type '" + std::string(name) +
                                 "' (use snapshot, full, diff, incr or log)");
}

char BackupTypeLetter(BackupType type) {
  switch (type) {
    case BackupType::kSnapshot:
      return 'S';
    case BackupType::kFull:
      return 'F';
    case BackupType::kDiff:
      return 'D';
    case BackupType::kIncr:
      return 'I';
    case BackupType::kLog:
      return 'L';
  }
  return '?';
}

std::string EncodeManifest(const BackupSet& set) {
  OrderedJson j;
  j["format"] = kManifestFormat;
  j["version"] = kManifestVersion;
  j["id"] = set.id;
  j["sequence"] = set.sequence;
  j["volume"] = set.volume;
  j["volume_id"] = set.volume_id;
  j["lineage"] = set.lineage;
  j["type"] = BackupTypeName(set.type);
  j["first_lsn"] = set.first_lsn;
  j["last_lsn"] = set.last_lsn;
  j["base"] = set.base;
  j["started_unix_ns"] = set.started_unix_ns;
  j["finished_unix_ns"] = set.finished_unix_ns;
  j["consistent_unix_ns"] = set.consistent_unix_ns;
  j["first_record_unix_ns"] = set.first_record_unix_ns;
  j["last_record_unix_ns"] = set.last_record_unix_ns;
  j["block_bytes"] = set.block_bytes;
  j["volume_size_bytes"] = set.volume_size_bytes;
  j["data_bytes"] = set.data_bytes;
  j["stored_bytes"] = set.stored_bytes;
  OrderedJson chunks = OrderedJson::array();
  std::unordered_map<std::string_view, uint64_t> index_of;
  index_of.reserve(set.chunks.size());
  for (const ChunkInfo& c : set.chunks) {
    OrderedJson o;
    o["hash"] = c.hash;
    o["raw_bytes"] = c.raw_bytes;
    o["stored_bytes"] = c.stored_bytes;
    o["new"] = c.new_in_set;
    if (!c.key.empty() && c.key != ChunkKey(c.hash)) o["key"] = c.key;
    index_of.emplace(c.hash, chunks.size());  // a repeat keeps its first index
    chunks.push_back(std::move(o));
  }
  j["chunks"] = std::move(chunks);
  OrderedJson extents = OrderedJson::array();
  for (const ChunkExtent& x : set.extents) {
    auto it = index_of.find(x.chunk);
    SNAPDISK_CHECK(it != index_of.end(), "manifest extent names a chunk missing from its list");
    extents.push_back(
        OrderedJson::array({x.offset_bytes, x.length_bytes, it->second, x.chunk_offset_bytes}));
  }
  j["extents"] = std::move(extents);
  OrderedJson zeros = OrderedJson::array();
  for (const ZeroExtent& z : set.zero_extents) {
    zeros.push_back(OrderedJson::array({z.offset_bytes, z.length_bytes}));
  }
  j["zero_extents"] = std::move(zeros);
  if (!set.restore_index_sha256.empty()) {
    j["restore_index"] = OrderedJson{{"pages", set.restore_index_pages},
                                     {"sha256", set.restore_index_sha256},
                                     {"nonce", set.restore_index_nonce}};
  }
  j["prev_sha256"] = set.prev_sha256;
  return j.dump();
}

Result<BackupSet> DecodeManifest(std::string_view json, std::string_view key) {
  try {
    Json j = Json::parse(json.begin(), json.end(), nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded()) {
      return Status::Corruption("manifest '" + std::string(key) + "': not valid JSON");
    }
    BackupSet set;
    SNAPDISK_RETURN_IF_ERROR(DecodeManifestJson(j, key, &set));
    set.key = std::string(key);
    return set;
  } catch (const std::exception& e) {
    // The reader checks types before every get(); this is the safety net.
    return Status::Corruption("manifest '" + std::string(key) + "': " + e.what());
  }
}

std::string ManifestKey(const BackupSet& set) {
  return "sets/" + set.volume + "/" + Seq10(set.sequence) + "-" + set.id + ".json";
}

std::string ChunkKey(std::string_view hash) {
  return "chunks/" + std::string(hash.substr(0, 2)) + "/" + std::string(hash);
}

std::string ChunkHash(std::span<const std::byte> raw) {
  const XXH128_hash_t h = XXH3_128bits(raw.data(), raw.size());
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, h);
  return Hex(canonical.digest, sizeof(canonical.digest));
}

std::string Sha256Hex(std::span<const std::byte> bytes) {
  unsigned char md[EVP_MAX_MD_SIZE];
  unsigned int md_len = 0;
  const int ok = EVP_Digest(bytes.data(), bytes.size(), md, &md_len, EVP_sha256(), nullptr);
  SNAPDISK_CHECK(ok == 1 && md_len == 32, "EVP_Digest(SHA-256) failed");
  return Hex(md, md_len);
}

void EncodeChunkInto(std::span<const std::byte> raw, int zstd_level, std::vector<std::byte>& out) {
  SNAPDISK_CHECK(raw.size() <= kMaxChunkRawBytes, "chunk larger than 64 MiB");
  // One compression context per thread: workers encode many chunks, and a
  // context costs more to set up than a small chunk costs to compress.
  struct CCtxDeleter {
    void operator()(ZSTD_CCtx* c) const { ZSTD_freeCCtx(c); }
  };
  thread_local std::unique_ptr<ZSTD_CCtx, CCtxDeleter> cctx(ZSTD_createCCtx());
  SNAPDISK_CHECK(cctx != nullptr, "ZSTD_createCCtx failed");
  out.resize(kChunkHeaderBytes + ZSTD_compressBound(raw.size()));
  std::memcpy(out.data(), kChunkMagic, 4);
  out[4] = std::byte{kChunkVersion};
  out[5] = std::byte{kCodecZstd};
  out[6] = out[7] = std::byte{0};
  const uint32_t raw_len = static_cast<uint32_t>(raw.size());
  for (int i = 0; i < 4; ++i) out[8 + i] = static_cast<std::byte>(raw_len >> (8 * i));
  const size_t n =
      ZSTD_compressCCtx(cctx.get(), out.data() + kChunkHeaderBytes, out.size() - kChunkHeaderBytes,
                        raw.data(), raw.size(), zstd_level);
  SNAPDISK_CHECK(!ZSTD_isError(n), ZSTD_getErrorName(n));
  out.resize(kChunkHeaderBytes + n);
}

std::vector<std::byte> EncodeChunk(std::span<const std::byte> raw, int zstd_level) {
  std::vector<std::byte> out;
  EncodeChunkInto(raw, zstd_level, out);
  return out;
}

Result<std::vector<std::byte>> DecodeChunk(std::span<const std::byte> object, std::string_view hash,
                                           std::string_view context) {
  auto bad = [&](const std::string& why) {
    std::string msg = "chunk " + std::string(hash);
    if (!context.empty()) msg += " (" + std::string(context) + ")";
    return Status::Corruption(msg + ": " + why);
  };
  if (object.size() < kChunkHeaderBytes) {
    return bad("object is " + std::to_string(object.size()) +
               " bytes, shorter than the 12-byte header");
  }
  if (std::memcmp(object.data(), kChunkMagic, 4) != 0) return bad("bad magic (not SDCK)");
  if (object[4] != std::byte{kChunkVersion}) {
    return bad("unknown version " + std::to_string(static_cast<int>(object[4])));
  }
  if (object[5] != std::byte{kCodecZstd}) {
    return bad("unknown codec " + std::to_string(static_cast<int>(object[5])));
  }
  if (object[6] != std::byte{0} || object[7] != std::byte{0}) return bad("reserved bytes not zero");
  uint32_t raw_len = 0;
  for (int i = 0; i < 4; ++i) raw_len |= static_cast<uint32_t>(object[8 + i]) << (8 * i);
  if (raw_len == 0 || raw_len > kMaxChunkRawBytes) {
    return bad("uncompressed length " + std::to_string(raw_len) + " is not 1-64 MiB");
  }
  const std::byte* frame = object.data() + kChunkHeaderBytes;
  const size_t frame_bytes = object.size() - kChunkHeaderBytes;
  const unsigned long long content = ZSTD_getFrameContentSize(frame, frame_bytes);
  if (content == ZSTD_CONTENTSIZE_ERROR || content == ZSTD_CONTENTSIZE_UNKNOWN) {
    return bad("zstd frame header is damaged");
  }
  if (content != raw_len) {
    return bad("zstd frame holds " + std::to_string(content) + " bytes, header says " +
               std::to_string(raw_len));
  }
  const size_t compressed = ZSTD_findFrameCompressedSize(frame, frame_bytes);
  if (ZSTD_isError(compressed)) return bad("zstd frame is truncated or damaged");
  if (compressed != frame_bytes) return bad("trailing bytes after the zstd frame");
  std::vector<std::byte> raw(raw_len);
  const size_t n = ZSTD_decompress(raw.data(), raw.size(), frame, frame_bytes);
  if (ZSTD_isError(n)) return bad(std::string("zstd: ") + ZSTD_getErrorName(n));
  if (n != raw_len)
    return bad("decompressed to " + std::to_string(n) + " bytes, expected " +
               std::to_string(raw_len));
  const std::string actual = ChunkHash(raw);
  if (actual != hash) return bad("content hash is " + actual + ", not the chunk's");
  return raw;
}

Result<std::vector<std::byte>> ReadChunk(WormStore& store, const ChunkInfo& chunk,
                                         std::string_view context) {
  Result<std::vector<std::byte>> object = store.Get(chunk.key);
  if (!object.ok()) {
    return object.status().WithContext(std::string(context) + ": reading chunk " + chunk.hash);
  }
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<std::byte> raw, DecodeChunk(*object, chunk.hash, context));
  if (raw.size() != chunk.raw_bytes) {
    return Status::Corruption(std::string(context) + ": chunk " + chunk.hash + " holds " +
                              std::to_string(raw.size()) + " bytes, the manifest says " +
                              std::to_string(chunk.raw_bytes));
  }
  return raw;
}

namespace {

// Decoded manifests by key and checksum. A WORM object's bytes never change,
// so the same key with the same XXH3-128 is the same manifest, in any store
// and any process lifetime of one: listing a volume's sets then decodes only
// those it has not seen. Every backup job starts by listing its volume's sets,
// and a volume with 5-minute log backups keeps ~2,000 segments for 7 days:
// without this each cut parsed them all again. Bounded by the entries it
// holds, weighted by their chunk and extent lists (~100 bytes each): at most
// kMaxWeight (~25 MiB); a manifest heavier than a quarter of it is never
// kept; when full, the cache starts over.
class ManifestCache {
 public:
  std::optional<BackupSet> Find(const WormObjectInfo& o) {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = sets_.find(o.key);
    if (it == sets_.end() || it->second.checksum != o.checksum) return std::nullopt;
    return it->second.set;
  }
  void Add(const WormObjectInfo& o, const BackupSet& set) {
    const uint64_t weight = 1 + set.chunks.size() + set.extents.size() + set.zero_extents.size();
    if (weight > kMaxWeight / 4) return;
    std::lock_guard<std::mutex> lock(mu_);
    if (weight_ + weight > kMaxWeight) {
      sets_.clear();
      weight_ = 0;
    }
    auto [it, added] = sets_.try_emplace(o.key, Entry{o.checksum, set, weight});
    if (!added) {
      weight_ -= it->second.weight;
      it->second = Entry{o.checksum, set, weight};
    }
    weight_ += weight;
  }

 private:
  static constexpr uint64_t kMaxWeight = uint64_t{1} << 18;
  struct Entry {
    std::string checksum;
    BackupSet set;
    uint64_t weight = 0;
  };
  std::mutex mu_;
  std::unordered_map<std::string, Entry> sets_;
  uint64_t weight_ = 0;
};

ManifestCache& Manifests() {
  static ManifestCache* cache = new ManifestCache;  // never destroyed: used until exit
  return *cache;
}

// Reads and decodes the manifest object `o`, which must sit at its set's key
// (from the cache when it holds these bytes).
Result<BackupSet> ReadManifest(WormStore& store, const WormObjectInfo& o) {
  if (std::optional<BackupSet> cached = Manifests().Find(o)) {
    cached->retain_until_unix_ns = o.retain_until_unix_ns;
    return std::move(*cached);
  }
  Result<std::vector<std::byte>> bytes = store.Get(o.key);
  if (!bytes.ok()) return bytes.status().WithContext("reading manifest '" + o.key + "'");
  const std::string_view json(reinterpret_cast<const char*>(bytes->data()), bytes->size());
  SNAPDISK_ASSIGN_OR_RETURN(BackupSet set, DecodeManifest(json, o.key));
  if (ManifestKey(set) != o.key) {
    return Status::Corruption("manifest '" + o.key + "' describes set " + set.id + " of volume '" +
                              set.volume + "', which belongs at '" + ManifestKey(set) + "'");
  }
  set.retain_until_unix_ns = o.retain_until_unix_ns;
  set.sha256 = Sha256Hex(*bytes);
  // Only what the store's own checksum vouches for (Get checked the bytes
  // against it; a backend without checksums in its listing is not cached).
  if (!o.checksum.empty()) Manifests().Add(o, set);
  return set;
}

}  // namespace

Result<std::vector<BackupSet>> ListBackupSets(WormStore& store, std::string_view volume) {
  const std::string prefix = volume.empty() ? "sets/" : "sets/" + std::string(volume) + "/";
  Result<std::vector<WormObjectInfo>> objects = store.List(prefix);
  if (!objects.ok()) return objects.status().WithContext("listing backup sets");
  std::vector<BackupSet> sets;
  for (const WormObjectInfo& o : *objects) {
    ManifestKeyParts parts;
    if (!ParseManifestKey(o.key, &parts)) continue;  // not a manifest (an index top)
    SNAPDISK_ASSIGN_OR_RETURN(BackupSet set, ReadManifest(store, o));
    sets.push_back(std::move(set));
  }
  std::sort(sets.begin(), sets.end(), [](const BackupSet& a, const BackupSet& b) {
    return a.sequence != b.sequence ? a.sequence < b.sequence : a.key < b.key;
  });
  return sets;
}

Result<WormObjectInfo> FindSetObject(WormStore& store, std::string_view id,
                                     std::string_view suffix) {
  uint64_t sequence = 0;
  if (id.size() < 2 || !ParseU64(id.substr(1), &sequence) || sequence == 0 ||
      std::string_view("SFDIL").find(id[0]) == std::string_view::npos) {
    return Status::InvalidArgument("'" + std::string(id) +
                                   "' is not a backup set id (a letter S, F, D, I or L and a "
                                   "sequence number, e.g. F3)");
  }
  Result<std::vector<WormObjectInfo>> objects = store.List("sets/");
  if (!objects.ok()) return objects.status().WithContext("listing backup sets");
  const std::string file = "/" + Seq10(sequence) + "-" + std::string(id) + std::string(suffix);
  for (WormObjectInfo& o : *objects) {
    ManifestKeyParts parts;
    if (o.key.size() >= file.size() &&
        o.key.compare(o.key.size() - file.size(), file.size(), file) == 0 &&
        ParseSetKey(o.key, suffix, &parts)) {
      return std::move(o);
    }
  }
  return Status::NotFound("no backup set '" + std::string(id) + "' in the store");
}

Result<BackupSet> FindBackupSet(WormStore& store, std::string_view id) {
  SNAPDISK_ASSIGN_OR_RETURN(WormObjectInfo o, FindSetObject(store, id, kManifestSuffix));
  return ReadManifest(store, o);
}

Result<uint64_t> NextBackupSequence(WormStore& store) {
  SNAPDISK_ASSIGN_OR_RETURN(uint64_t listed, MaxListedSequence(store));
  std::lock_guard<std::mutex> lock(ReservationMutex());
  return std::max(listed, MaxReservedLocked(store)) + 1;
}

Result<uint64_t> ReserveBackupSequence(WormStore& store, std::string_view volume,
                                       uint64_t min_sequence) {
  // Listing under the lock: a reservation made meanwhile could otherwise be
  // handed out twice.
  std::lock_guard<std::mutex> lock(ReservationMutex());
  auto& of_store = Reservations()[&store];
  if (auto it = of_store.find(volume); it != of_store.end()) {
    return Status::Busy("a backup of volume '" + std::string(volume) + "' is running (sequence " +
                        std::to_string(it->second) + "): one backup job per volume at a time");
  }
  Result<uint64_t> listed = MaxListedSequence(store);
  if (!listed.ok()) {
    if (of_store.empty()) Reservations().erase(&store);
    return listed.status();
  }
  const uint64_t sequence = std::max(std::max(*listed, MaxReservedLocked(store)) + 1, min_sequence);
  of_store.emplace(std::string(volume), sequence);
  return sequence;
}

void ReleaseBackupSequence(WormStore& store, std::string_view volume, uint64_t sequence) {
  std::lock_guard<std::mutex> lock(ReservationMutex());
  auto it = Reservations().find(&store);
  if (it == Reservations().end()) return;
  auto v = it->second.find(volume);
  if (v != it->second.end() && v->second == sequence) it->second.erase(v);
  if (it->second.empty()) Reservations().erase(it);
}

Status PutManifest(WormStore& store, BackupSet& set) {
  static std::mutex put_mutex;
  std::lock_guard<std::mutex> lock(put_mutex);
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<WormObjectInfo> objects,
                            store.List("sets/" + set.volume + "/"));
  const WormObjectInfo* prev = nullptr;
  uint64_t prev_sequence = 0;
  for (const WormObjectInfo& o : objects) {
    ManifestKeyParts parts;
    if (!ParseManifestKey(o.key, &parts) || parts.sequence >= set.sequence) continue;
    if (parts.sequence > prev_sequence) {
      prev_sequence = parts.sequence;
      prev = &o;
    }
  }
  set.prev_sha256.clear();
  if (prev != nullptr) {
    Result<std::vector<std::byte>> bytes = store.Get(prev->key);
    if (!bytes.ok()) return bytes.status().WithContext("reading the previous manifest");
    set.prev_sha256 = Sha256Hex(*bytes);
  }
  Result<std::string> index_top = PutRestoreIndexPages(store, set);
  if (!index_top.ok()) return index_top.status().WithContext("putting the restore index");
  const std::string json = EncodeManifest(set);
  const std::string key = ManifestKey(set);
  const std::span<const std::byte> bytes(reinterpret_cast<const std::byte*>(json.data()),
                                         json.size());
  SNAPDISK_RETURN_IF_ERROR(store.Put(key, bytes, set.retain_until_unix_ns));
  set.key = key;
  set.sha256 = Sha256Hex(bytes);
  // The set is visible and complete now; its index top only speeds up
  // instant restores, which read the manifest when it is missing, so a
  // failed put of it does not fail the set.
  if (!index_top->empty()) (void)PutRestoreIndexTop(store, set, *index_top);
  return Status::OK();
}

}  // namespace snapdisk
