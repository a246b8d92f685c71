// Restore indexes (the contract and formats are in snapshot/restore_index.h).
#include "snapshot/restore_index.h"

#include <algorithm>
#include <cstdio>
#include <cstring>
#include <random>
#include <nlohmann/json.hpp>
#include <unordered_map>

namespace snapdisk {

namespace {

using Json = nlohmann::json;
using OrderedJson = nlohmann::ordered_json;

constexpr char kTopFormat[] = "snapdisk-restore-index";
constexpr int kTopVersion = 1;
constexpr char kPageMagic[4] = {'S', 'D', 'I', 'X'};
constexpr uint8_t kPageVersion = 1;
constexpr size_t kPageHeaderBytes = 16;
constexpr size_t kHashDigits = 32;

// "sets/<volume>/<seq>-<id>.json" -> "index/<volume>/<seq>-<id>/<nonce>/<page:06>".
std::string PageKey(std::string_view manifest_key, std::string_view nonce, size_t page) {
  constexpr std::string_view kSets = "sets/";
  constexpr std::string_view kJson = ".json";
  std::string digits = std::to_string(page);
  if (digits.size() < 6) digits.insert(0, 6 - digits.size(), '0');
  return "index/" +
         std::string(manifest_key.substr(kSets.size(),
                                         manifest_key.size() - kSets.size() - kJson.size())) +
         "/" + std::string(nonce) + "/" + digits;
}

std::string NewNonce() {
  std::random_device random;
  const uint64_t n = (uint64_t{random()} << 32) ^ random();
  char hex[17];
  std::snprintf(hex, sizeof hex, "%016llx", static_cast<unsigned long long>(n));
  return hex;
}

// ---- Page encoding ------------------------------------------------------------------

class PageWriter {
 public:
  void U16(uint16_t v) { Raw(&v, sizeof v); }
  void U32(uint32_t v) { Raw(&v, sizeof v); }
  void U64(uint64_t v) { Raw(&v, sizeof v); }
  void Bytes(std::string_view s) { Raw(s.data(), s.size()); }
  void Raw(const void* p, size_t n) {
    const auto* b = static_cast<const std::byte*>(p);
    out_.insert(out_.end(), b, b + n);
  }
  std::vector<std::byte>& out() { return out_; }

 private:
  std::vector<std::byte> out_;  // little endian: this code runs on x86-64 and arm64 only
};

class PageReader {
 public:
  explicit PageReader(std::span<const std::byte> in) : in_(in) {}
  bool U16(uint16_t* v) { return Raw(v, sizeof *v); }
  bool U32(uint32_t* v) { return Raw(v, sizeof *v); }
  bool U64(uint64_t* v) { return Raw(v, sizeof *v); }
  bool Bytes(size_t n, std::string* s) {
    if (in_.size() - pos_ < n) return false;
    s->assign(reinterpret_cast<const char*>(in_.data() + pos_), n);
    pos_ += n;
    return true;
  }
  bool Raw(void* p, size_t n) {
    if (in_.size() - pos_ < n) return false;
    std::memcpy(p, in_.data() + pos_, n);
    pos_ += n;
    return true;
  }
  bool at_end() const { return pos_ == in_.size(); }

 private:
  std::span<const std::byte> in_;
  size_t pos_ = 0;
};

std::vector<std::byte> EncodePage(const BackupSet& set, size_t first, size_t end,
                                  const std::unordered_map<std::string, size_t>& chunk_of) {
  std::vector<uint32_t> page_chunk(set.chunks.size(), UINT32_MAX);
  std::vector<size_t> chunks;  // the set's chunk indexes, in page order
  std::vector<uint32_t> extent_chunk;
  extent_chunk.reserve(end - first);
  for (size_t i = first; i < end; ++i) {
    const size_t c = chunk_of.at(set.extents[i].chunk);
    if (page_chunk[c] == UINT32_MAX) {
      page_chunk[c] = static_cast<uint32_t>(chunks.size());
      chunks.push_back(c);
    }
    extent_chunk.push_back(page_chunk[c]);
  }
  PageWriter w;
  w.Raw(kPageMagic, sizeof kPageMagic);
  const uint8_t header_rest[4] = {kPageVersion, 0, 0, 0};
  w.Raw(header_rest, sizeof header_rest);
  w.U32(static_cast<uint32_t>(chunks.size()));
  w.U32(static_cast<uint32_t>(end - first));
  for (size_t c : chunks) {
    const ChunkInfo& info = set.chunks[c];
    w.Bytes(info.hash);
    w.U64(info.raw_bytes);
    w.U64(info.stored_bytes);
    const std::string key = info.key.empty() ? ChunkKey(info.hash) : info.key;
    w.U16(static_cast<uint16_t>(key.size()));
    w.Bytes(key);
  }
  for (size_t i = first; i < end; ++i) {
    const ChunkExtent& e = set.extents[i];
    w.U64(e.offset_bytes);
    w.U64(e.length_bytes);
    w.U32(extent_chunk[i - first]);
    w.U64(e.chunk_offset_bytes);
  }
  return std::move(w.out());
}

Result<RestoreIndexPage> DecodePage(std::span<const std::byte> bytes, const RestoreIndex& index,
                                    size_t page) {
  const RestoreIndexPageRef& ref = index.pages[page];
  auto bad = [&](const std::string& why) {
    return Status::Corruption("restore index of set " + index.id + ", page " +
                              std::to_string(page) + ": " + why);
  };
  PageReader r(bytes);
  char magic[4];
  uint8_t header_rest[4];
  uint32_t chunk_count = 0;
  uint32_t extent_count = 0;
  if (!r.Raw(magic, 4) || !r.Raw(header_rest, 4) || !r.U32(&chunk_count) ||
      !r.U32(&extent_count)) {
    return bad("shorter than its header");
  }
  if (std::memcmp(magic, kPageMagic, 4) != 0) return bad("no SDIX magic");
  if (header_rest[0] != kPageVersion) {
    return bad("version " + std::to_string(header_rest[0]) + " (this build reads 1)");
  }
  if (extent_count != ref.extents) {
    return bad("holds " + std::to_string(extent_count) + " extents, the top says " +
               std::to_string(ref.extents));
  }
  if (chunk_count > extent_count) return bad("more chunks than extents");
  RestoreIndexPage out;
  out.chunks.resize(chunk_count);
  for (ChunkInfo& c : out.chunks) {
    uint16_t key_bytes = 0;
    if (!r.Bytes(kHashDigits, &c.hash) || !r.U64(&c.raw_bytes) || !r.U64(&c.stored_bytes) ||
        !r.U16(&key_bytes) || !r.Bytes(key_bytes, &c.key)) {
      return bad("truncated in its chunk table");
    }
    if (c.key.rfind(ChunkKey(c.hash), 0) != 0) return bad("chunk key '" + c.key + "' is not its hash's");
  }
  out.extents.resize(extent_count);
  uint64_t previous_end = ref.first_offset_bytes;
  for (RestoreIndexPage::Extent& e : out.extents) {
    if (!r.U64(&e.offset_bytes) || !r.U64(&e.length_bytes) || !r.U32(&e.chunk) ||
        !r.U64(&e.chunk_offset_bytes)) {
      return bad("truncated in its extents");
    }
    const uint64_t end = e.offset_bytes + e.length_bytes;
    if (e.length_bytes == 0 || end < e.offset_bytes || e.offset_bytes < previous_end ||
        end > ref.end_offset_bytes || e.chunk >= chunk_count) {
      return bad("extent at " + std::to_string(e.offset_bytes) +
                 " is empty, out of order, outside the page or names no chunk");
    }
    const ChunkInfo& c = out.chunks[e.chunk];
    if (e.chunk_offset_bytes > c.raw_bytes || e.length_bytes > c.raw_bytes - e.chunk_offset_bytes) {
      return bad("extent at " + std::to_string(e.offset_bytes) + " lies outside chunk " + c.hash);
    }
    previous_end = end;
  }
  if (!r.at_end()) return bad("has bytes after its last extent");
  if (!out.extents.empty() && (out.extents.front().offset_bytes != ref.first_offset_bytes ||
                               previous_end != ref.end_offset_bytes)) {
    return bad("its extents do not span what the top says");
  }
  return out;
}

// ---- Top encoding ------------------------------------------------------------------

std::string EncodeTop(const BackupSet& set, const std::vector<RestoreIndexPageRef>& pages) {
  OrderedJson j;
  j["format"] = kTopFormat;
  j["version"] = kTopVersion;
  j["id"] = set.id;
  j["sequence"] = set.sequence;
  j["volume"] = set.volume;
  j["volume_id"] = set.volume_id;
  j["lineage"] = set.lineage;
  j["type"] = BackupTypeName(set.type);
  j["block_bytes"] = set.block_bytes;
  j["volume_size_bytes"] = set.volume_size_bytes;
  j["consistent_unix_ns"] = set.consistent_unix_ns;
  j["last_lsn"] = set.last_lsn;
  j["extents"] = set.extents.size();
  j["data_bytes"] = set.data_bytes;
  j["nonce"] = set.restore_index_nonce;
  OrderedJson table = OrderedJson::array();
  for (const RestoreIndexPageRef& p : pages) {
    table.push_back(
        OrderedJson::array({p.first_offset_bytes, p.end_offset_bytes, p.extents, p.hash}));
  }
  j["pages"] = std::move(table);
  return j.dump();
}

Result<RestoreIndex> DecodeTop(std::string_view text, std::string_view key) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption("restore index '" + std::string(key) + "': " + why);
  };
  const Json j = Json::parse(text, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) return bad("is not a JSON object");
  auto u64 = [&](const char* field, uint64_t* out) -> Status {
    auto it = j.find(field);
    if (it == j.end() || !it->is_number_unsigned()) {
      return bad(std::string("field '") + field + "' is not a non-negative integer");
    }
    *out = it->get<uint64_t>();
    return Status::OK();
  };
  auto str = [&](const char* field, std::string* out) -> Status {
    auto it = j.find(field);
    if (it == j.end() || !it->is_string()) return bad(std::string("field '") + field + "' is not a string");
    *out = it->get<std::string>();
    return Status::OK();
  };
  std::string format;
  uint64_t version = 0;
  SNAPDISK_RETURN_IF_ERROR(str("format", &format));
  SNAPDISK_RETURN_IF_ERROR(u64("version", &version));
  if (format != kTopFormat) return bad("is not a " + std::string(kTopFormat));
  if (version != kTopVersion) {
    return Status::Unsupported("restore index '" + std::string(key) + "': version " +
                               std::to_string(version) + " (this build reads 1)");
  }
  RestoreIndex index;
  std::string type;
  uint64_t block_bytes = 0;
  uint64_t consistent = 0;
  SNAPDISK_RETURN_IF_ERROR(str("id", &index.id));
  SNAPDISK_RETURN_IF_ERROR(u64("sequence", &index.sequence));
  SNAPDISK_RETURN_IF_ERROR(str("volume", &index.volume));
  SNAPDISK_RETURN_IF_ERROR(str("type", &type));
  SNAPDISK_RETURN_IF_ERROR(u64("block_bytes", &block_bytes));
  SNAPDISK_RETURN_IF_ERROR(u64("volume_size_bytes", &index.volume_size_bytes));
  SNAPDISK_RETURN_IF_ERROR(u64("consistent_unix_ns", &consistent));
  SNAPDISK_RETURN_IF_ERROR(u64("last_lsn", &index.last_lsn));
  SNAPDISK_RETURN_IF_ERROR(u64("extents", &index.extents));
  // Optional: tops written before they existed lack them.
  if (j.contains("data_bytes")) {
    uint64_t data_bytes = 0;
    SNAPDISK_RETURN_IF_ERROR(u64("data_bytes", &data_bytes));
    index.data_bytes = data_bytes;
  }
  if (j.contains("volume_id")) SNAPDISK_RETURN_IF_ERROR(u64("volume_id", &index.volume_id));
  if (j.contains("lineage")) SNAPDISK_RETURN_IF_ERROR(u64("lineage", &index.lineage));
  SNAPDISK_RETURN_IF_ERROR(str("nonce", &index.nonce));
  if (index.nonce.size() != 16 || index.nonce.find_first_not_of("0123456789abcdef") != std::string::npos) {
    return bad("nonce is not 16 lowercase hex digits");
  }
  Result<BackupType> parsed = ParseBackupType(type);
  if (!parsed.ok() || !HasRestoreIndex(*parsed)) return bad("type '" + type + "' has no index");
  index.type = *parsed;
  if (block_bytes == 0 || block_bytes > 65536 || (block_bytes & (block_bytes - 1)) != 0) {
    return bad("block_bytes is not a power of two up to 65536");
  }
  index.block_bytes = static_cast<uint32_t>(block_bytes);
  index.consistent_unix_ns = static_cast<int64_t>(consistent);
  auto pages = j.find("pages");
  if (pages == j.end() || !pages->is_array()) return bad("field 'pages' is not an array");
  uint64_t previous_end = 0;
  uint64_t extents = 0;
  for (const Json& p : *pages) {
    const std::string where = "page " + std::to_string(index.pages.size());
    if (!p.is_array() || p.size() != 4 || !p[0].is_number_unsigned() ||
        !p[1].is_number_unsigned() || !p[2].is_number_unsigned() || !p[3].is_string()) {
      return bad(where + " is not [first, end, extents, hash]");
    }
    RestoreIndexPageRef ref;
    ref.first_offset_bytes = p[0].get<uint64_t>();
    ref.end_offset_bytes = p[1].get<uint64_t>();
    const uint64_t count = p[2].get<uint64_t>();
    ref.hash = p[3].get<std::string>();
    if (count == 0 || count > kRestoreIndexPageExtents || ref.hash.size() != kHashDigits ||
        ref.first_offset_bytes < previous_end || ref.end_offset_bytes <= ref.first_offset_bytes ||
        ref.end_offset_bytes > index.volume_size_bytes) {
      return bad(where + " is empty, too big, out of order or outside the volume");
    }
    ref.extents = static_cast<uint32_t>(count);
    previous_end = ref.end_offset_bytes;
    extents += count;
    index.pages.push_back(std::move(ref));
  }
  if (extents != index.extents) return bad("its pages do not hold 'extents' extents");
  return index;
}

}  // namespace

bool HasRestoreIndex(BackupType type) {
  return type == BackupType::kSnapshot || type == BackupType::kFull;
}

std::string RestoreIndexTopKey(const BackupSet& set) {
  std::string key = ManifestKey(set);
  key.replace(key.size() - 5, 5, ".idx");  // ".json" -> ".idx"
  return key;
}

std::vector<std::string> RestoreIndexKeys(const BackupSet& set) {
  std::vector<std::string> keys;
  if (set.restore_index_sha256.empty()) return keys;
  keys.push_back(RestoreIndexTopKey(set));
  const std::string manifest = ManifestKey(set);
  for (uint64_t p = 0; p < set.restore_index_pages; ++p) {
    keys.push_back(PageKey(manifest, set.restore_index_nonce, p));
  }
  return keys;
}

Result<std::string> PutRestoreIndexPages(WormStore& store, BackupSet& set) {
  set.restore_index_pages = 0;
  set.restore_index_sha256.clear();
  set.restore_index_nonce.clear();
  if (!HasRestoreIndex(set.type)) return std::string();
  set.restore_index_nonce = NewNonce();
  std::unordered_map<std::string, size_t> chunk_of;
  chunk_of.reserve(set.chunks.size());
  for (size_t i = 0; i < set.chunks.size(); ++i) chunk_of.emplace(set.chunks[i].hash, i);
  const std::string manifest = ManifestKey(set);
  std::vector<RestoreIndexPageRef> pages;
  for (size_t first = 0; first < set.extents.size(); first += kRestoreIndexPageExtents) {
    const size_t end = std::min(set.extents.size(), first + kRestoreIndexPageExtents);
    const std::vector<std::byte> page = EncodePage(set, first, end, chunk_of);
    RestoreIndexPageRef ref;
    ref.first_offset_bytes = set.extents[first].offset_bytes;
    ref.end_offset_bytes = set.extents[end - 1].offset_bytes + set.extents[end - 1].length_bytes;
    ref.extents = static_cast<uint32_t>(end - first);
    ref.hash = ChunkHash(page);
    SNAPDISK_RETURN_IF_ERROR(store.Put(PageKey(manifest, set.restore_index_nonce, pages.size()),
                                       page, set.retain_until_unix_ns));
    pages.push_back(std::move(ref));
  }
  std::string top = EncodeTop(set, pages);
  set.restore_index_pages = pages.size();
  set.restore_index_sha256 =
      Sha256Hex({reinterpret_cast<const std::byte*>(top.data()), top.size()});
  return top;
}

Status PutRestoreIndexTop(WormStore& store, const BackupSet& set, const std::string& top) {
  return store.Put(RestoreIndexTopKey(set),
                   {reinterpret_cast<const std::byte*>(top.data()), top.size()},
                   set.retain_until_unix_ns);
}

Result<RestoreIndex> FindRestoreIndex(WormStore& store, std::string_view id) {
  SNAPDISK_ASSIGN_OR_RETURN(WormObjectInfo o, FindSetObject(store, id, ".idx"));
  Result<std::vector<std::byte>> bytes = store.Get(o.key);
  if (!bytes.ok()) return bytes.status().WithContext("reading restore index '" + o.key + "'");
  const std::string_view text(reinterpret_cast<const char*>(bytes->data()), bytes->size());
  SNAPDISK_ASSIGN_OR_RETURN(RestoreIndex index, DecodeTop(text, o.key));
  if (index.id != id) {
    return Status::Corruption("restore index '" + o.key + "' describes set " + index.id);
  }
  index.key = o.key;
  index.sha256 = Sha256Hex(*bytes);
  return index;
}

Result<RestoreIndexPage> ReadRestoreIndexPage(WormStore& store, const RestoreIndex& index,
                                              size_t page) {
  if (page >= index.pages.size()) {
    return Status::InvalidArgument("restore index of set " + index.id + " has " +
                                   std::to_string(index.pages.size()) + " pages, not " +
                                   std::to_string(page + 1));
  }
  // The manifest key the page keys derive from: the top's with ".json".
  const std::string manifest = index.key.substr(0, index.key.size() - 4) + ".json";
  const std::string key = PageKey(manifest, index.nonce, page);
  Result<std::vector<std::byte>> bytes = store.Get(key);
  if (!bytes.ok()) return bytes.status().WithContext("reading restore index page '" + key + "'");
  if (ChunkHash(*bytes) != index.pages[page].hash) {
    return Status::Corruption("restore index of set " + index.id + ", page " +
                              std::to_string(page) + " ('" + key +
                              "'): its hash is not the one the top records");
  }
  return DecodePage(*bytes, index, page);
}

Status CheckRestoreIndex(const RestoreIndex& index, const BackupSet& set) {
  if (set.restore_index_sha256.empty()) {
    return Status::Corruption("set " + set.id + "'s manifest records no restore index, yet '" +
                              index.key + "' exists");
  }
  if (set.restore_index_sha256 != index.sha256 || set.restore_index_pages != index.pages.size() ||
      set.restore_index_nonce != index.nonce) {
    return Status::Corruption("restore index '" + index.key + "' (sha256 " + index.sha256 + ", " +
                              std::to_string(index.pages.size()) + " pages) is not the one set " +
                              set.id + "'s manifest records (sha256 " + set.restore_index_sha256 +
                              ", " + std::to_string(set.restore_index_pages) + " pages)");
  }
  if (index.id != set.id || index.volume != set.volume ||
      index.volume_size_bytes != set.volume_size_bytes || index.extents != set.extents.size()) {
    return Status::Corruption("restore index '" + index.key + "' does not describe set " + set.id);
  }
  return Status::OK();
}

}  // namespace snapdisk
