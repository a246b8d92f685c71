// Backup export files (the format and contract are in snapshot/backup_export.h).
//
// Export: resolve the chain, Head every chunk object (exact sizes for
// progress, retention, and a missing object found before a byte is written),
// then stream header, manifests, chunks and trailer through a 1 MiB buffer
// into a temporary file, hashing as we go; fsync, rename, fsync the folder.
//
// Verify reads the file once, front to back, hashing every byte for the
// trailer. Open reads the headers (pread, skipping chunk payloads) and keeps
// an index: key -> payload offset, length, checksum.
#include "snapshot/backup_export.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <filesystem>
#include <map>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "disk/bytes.h"
#include "disk/unique_fd.h"

namespace snapdisk {

namespace {

constexpr char kFileMagic[16] = {'S', 'N', 'A', 'P', 'D', 'I', 'S', 'K',
                                 '-', 'E', 'X', 'P', 'O', 'R', 'T', '\0'};
constexpr char kTrailerMagic[16] = {'S', 'N', 'A', 'P', 'D', 'I', 'S', 'K',
                                    '-', 'T', 'R', 'A', 'I', 'L', 'E', 'R'};
constexpr char kSectionMagic[4] = {'S', 'D', 'X', 'S'};
constexpr size_t kHeaderBytes = 128;
constexpr size_t kHeaderCheckOffset = 120;
constexpr size_t kSectionHeaderBytes = 48;
constexpr size_t kSectionCheckOffset = 40;
constexpr size_t kTrailerBytes = 64;
constexpr uint8_t kTypeManifest = 1;
constexpr uint8_t kTypeChunk = 2;
constexpr size_t kMaxKeyBytes = 512;
constexpr size_t kMaxIdBytes = 31;
constexpr uint64_t kMaxManifests = 1'000'000;
constexpr uint64_t kMaxChunks = uint64_t{1} << 32;
constexpr uint64_t kMaxManifestBytes = uint64_t{256} << 20;
constexpr uint64_t kMinChunkObjectBytes = 12;  // the SDCK header
constexpr uint64_t kMaxChunkRawBytes = uint64_t{64} << 20;
constexpr uint64_t kMaxChunkObjectBytes = 12 + ZSTD_COMPRESSBOUND(kMaxChunkRawBytes);
constexpr size_t kWriteBufferBytes = size_t{1} << 20;
// Problems listed in a report; beyond it they are counted.
constexpr size_t kMaxProblems = 1000;

// ---- Bytes --------------------------------------------------------------------

void PutU16(uint8_t* p, uint16_t v) {
  for (int i = 0; i < 2; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutU32(uint8_t* p, uint32_t v) {
  for (int i = 0; i < 4; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
void PutU64(uint8_t* p, uint64_t v) {
  for (int i = 0; i < 8; ++i) p[i] = static_cast<uint8_t>(v >> (8 * i));
}
uint16_t GetU16(const uint8_t* p) { return static_cast<uint16_t>(p[0] | (p[1] << 8)); }
uint32_t GetU32(const uint8_t* p) {
  uint32_t v = 0;
  for (int i = 0; i < 4; ++i) v |= static_cast<uint32_t>(p[i]) << (8 * i);
  return v;
}
uint64_t GetU64(const uint8_t* p) {
  uint64_t v = 0;
  for (int i = 0; i < 8; ++i) v |= static_cast<uint64_t>(p[i]) << (8 * i);
  return v;
}

std::string Hex(const uint8_t* bytes, size_t n) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(2 * n, '0');
  for (size_t i = 0; i < n; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 15];
  }
  return out;
}

bool IsLowerHex(std::string_view s, size_t digits) {
  return s.size() == digits && std::all_of(s.begin(), s.end(), [](char c) {
           return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
         });
}

using Xxh128Digest = std::array<uint8_t, 16>;

Xxh128Digest Xxh128(const void* data, size_t n) {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, XXH3_128bits(data, n));
  Xxh128Digest out;
  std::memcpy(out.data(), canonical.digest, out.size());
  return out;
}

// XXH3-64 of a section header's first 40 bytes followed by its key.
uint64_t SectionHeaderCheck(const uint8_t* header, std::string_view key) {
  uint8_t buf[kSectionCheckOffset + kMaxKeyBytes];
  SNAPDISK_CHECK(key.size() <= kMaxKeyBytes, "section key longer than 512 bytes");
  std::memcpy(buf, header, kSectionCheckOffset);
  std::memcpy(buf + kSectionCheckOffset, key.data(), key.size());
  return XXH3_64bits(buf, kSectionCheckOffset + key.size());
}

class Sha256 {
 public:
  Sha256() : ctx_(EVP_MD_CTX_new()) {
    SNAPDISK_CHECK(ctx_ != nullptr, "EVP_MD_CTX_new failed");
    SNAPDISK_CHECK(EVP_DigestInit_ex(ctx_, EVP_sha256(), nullptr) == 1, "SHA-256 init failed");
  }
  ~Sha256() { EVP_MD_CTX_free(ctx_); }
  Sha256(const Sha256&) = delete;
  Sha256& operator=(const Sha256&) = delete;

  void Update(const void* data, size_t n) {
    if (n == 0) return;
    SNAPDISK_CHECK(EVP_DigestUpdate(ctx_, data, n) == 1, "SHA-256 update failed");
  }
  std::array<uint8_t, 32> Final() {
    std::array<uint8_t, 32> out;
    unsigned int len = 0;
    SNAPDISK_CHECK(EVP_DigestFinal_ex(ctx_, out.data(), &len) == 1 && len == 32,
                   "SHA-256 final failed");
    return out;
  }

 private:
  EVP_MD_CTX* ctx_;
};

// Keys and ids come from files that may be hostile: shown with anything
// unprintable replaced, and cut short.
std::string Printable(std::string_view s) {
  std::string out;
  const size_t n = std::min<size_t>(s.size(), 600);
  out.reserve(n);
  for (size_t i = 0; i < n; ++i) {
    const char c = s[i];
    out.push_back(c >= 0x20 && c < 0x7f ? c : '?');
  }
  if (n < s.size()) out += "...";
  return out;
}

// "chunks/<xx>/<hash>" or "chunks/<xx>/<hash>.<n>" -> hash.
bool ParseChunkKey(std::string_view key, std::string* hash) {
  constexpr std::string_view kPrefix = "chunks/";
  if (key.size() < kPrefix.size() + 3 + 32 || key.substr(0, kPrefix.size()) != kPrefix) {
    return false;
  }
  const std::string_view xx = key.substr(kPrefix.size(), 2);
  if (key[kPrefix.size() + 2] != '/') return false;
  const std::string_view h = key.substr(kPrefix.size() + 3, 32);
  if (!IsLowerHex(h, 32) || h.substr(0, 2) != xx) return false;
  const std::string_view rest = key.substr(kPrefix.size() + 3 + 32);
  if (!rest.empty()) {
    if (rest.size() < 2 || rest.size() > 21 || rest[0] != '.') return false;
    if (!std::all_of(rest.begin() + 1, rest.end(), [](char c) { return c >= '0' && c <= '9'; })) {
      return false;
    }
  }
  *hash = std::string(h);
  return true;
}

bool LooksLikeManifestKey(std::string_view key) {
  return key.size() > 10 && key.substr(0, 5) == "sets/" && key.substr(key.size() - 5) == ".json";
}

// A set id: S, F, D, I or L and 1-20 digits.
bool IsSetId(std::string_view id) {
  return id.size() >= 2 && id.size() <= 21 &&
         std::string_view("SFDIL").find(id[0]) != std::string_view::npos &&
         std::all_of(id.begin() + 1, id.end(), [](char c) { return c >= '0' && c <= '9'; });
}

const char* SectionTypeName(uint8_t type) {
  return type == kTypeManifest ? "manifest" : type == kTypeChunk ? "chunk" : "unknown";
}

// ---- Files --------------------------------------------------------------------


int64_t RealNowUnixNs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

Status WriteAll(int fd, const uint8_t* data, size_t size_bytes, uint64_t offset_bytes,
                const std::string& path) {
  size_t done = 0;
  while (done < size_bytes) {
    const ssize_t n = ::write(fd, data + done, size_bytes - done);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return Status::FromErrno(
          errno, "write " + path + " at offset " + std::to_string(offset_bytes + done));
    }
    if (n == 0) return Status::FromErrno(EIO, "write " + path + " made no progress");
    done += static_cast<size_t>(n);
  }
  return Status::OK();
}

// Reads up to `size_bytes` at `offset_bytes`; *got_bytes < size_bytes only at
// the end of the file.
Status ReadAt(int fd, void* out, size_t size_bytes, uint64_t offset_bytes, const std::string& path,
              size_t* got_bytes) {
  auto* p = static_cast<uint8_t*>(out);
  size_t done = 0;
  while (done < size_bytes) {
    const ssize_t n =
        ::pread(fd, p + done, size_bytes - done, static_cast<off_t>(offset_bytes + done));
    if (n < 0 && errno == EINTR) continue;
    if (n < 0) {
      return Status::FromErrno(
          errno, "read " + path + " at offset " + std::to_string(offset_bytes + done));
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  *got_bytes = done;
  return Status::OK();
}

// Reads exactly `size_bytes`; the caller has checked that the file holds them
// (a file that shrinks meanwhile is Corruption, not a short buffer).
Status ReadExact(int fd, void* out, size_t size_bytes, uint64_t offset_bytes,
                 const std::string& path) {
  size_t got = 0;
  SNAPDISK_RETURN_IF_ERROR(ReadAt(fd, out, size_bytes, offset_bytes, path, &got));
  if (got != size_bytes) {
    return Status::Corruption(path + ": ends at offset " + std::to_string(offset_bytes + got) +
                              " while reading " + std::to_string(size_bytes) + " bytes at " +
                              std::to_string(offset_bytes) + " (the file shrank)");
  }
  return Status::OK();
}

Status FsyncDir(const std::string& dir) {
  UniqueFd fd(::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno(errno, "open " + dir);
  if (::fsync(fd.get()) != 0) return Status::FromErrno(errno, "fsync " + dir);
  return Status::OK();
}

Result<UniqueFd> OpenForReading(const std::string& path, uint64_t* size_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC));
  if (!fd.valid()) {
    if (errno == ENOENT) return Status::NotFound(path + " does not exist");
    return Status::FromErrno(errno, "open " + path);
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0) return Status::FromErrno(errno, "stat " + path);
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(path + " is not a regular file");
  *size_bytes = static_cast<uint64_t>(st.st_size);
  return fd;
}

// Sequential writes through a buffer, hashing every byte for the trailer.
class FileWriter {
 public:
  FileWriter(int fd, std::string path) : fd_(fd), path_(std::move(path)) {
    buffer_.resize(kWriteBufferBytes);
  }

  Status Append(const void* data, size_t n) {
    const auto* p = static_cast<const uint8_t*>(data);
    sha_.Update(p, n);
    if (used_ + n > buffer_.size()) SNAPDISK_RETURN_IF_ERROR(Flush());
    if (n >= buffer_.size()) {
      SNAPDISK_RETURN_IF_ERROR(WriteAll(fd_, p, n, flushed_bytes_, path_));
      flushed_bytes_ += n;
      return Status::OK();
    }
    std::memcpy(buffer_.data() + used_, p, n);
    used_ += n;
    return Status::OK();
  }
  // Appends without hashing (the trailer itself).
  Status AppendUnhashed(const void* data, size_t n) {
    if (used_ + n > buffer_.size()) SNAPDISK_RETURN_IF_ERROR(Flush());
    SNAPDISK_CHECK(n < buffer_.size(), "unhashed append larger than the buffer");
    std::memcpy(buffer_.data() + used_, data, n);
    used_ += n;
    return Status::OK();
  }
  Status Flush() {
    SNAPDISK_RETURN_IF_ERROR(WriteAll(fd_, buffer_.data(), used_, flushed_bytes_, path_));
    flushed_bytes_ += used_;
    used_ = 0;
    return Status::OK();
  }
  uint64_t offset_bytes() const { return flushed_bytes_ + used_; }
  std::array<uint8_t, 32> Sha256Final() { return sha_.Final(); }

 private:
  int fd_;
  std::string path_;
  std::vector<uint8_t> buffer_;
  size_t used_ = 0;
  uint64_t flushed_bytes_ = 0;
  Sha256 sha_;
};

// ---- Headers --------------------------------------------------------------------

struct FileHeader {
  uint32_t version = kBackupExportVersion;
  uint64_t manifest_count = 0;
  uint64_t chunk_count = 0;
  WormStoreConfig config;
  int64_t exported_unix_ns = 0;
  std::string target_id;
};

void EncodeFileHeader(const FileHeader& h, uint8_t* out) {
  std::memset(out, 0, kHeaderBytes);
  std::memcpy(out, kFileMagic, 16);
  PutU32(out + 16, h.version);
  PutU32(out + 20, kHeaderBytes);
  PutU64(out + 24, h.manifest_count);
  PutU64(out + 32, h.chunk_count);
  PutU64(out + 40, h.config.chunk_bytes);
  PutU32(out + 48, static_cast<uint32_t>(h.config.zstd_level));
  PutU64(out + 56, static_cast<uint64_t>(h.exported_unix_ns));
  SNAPDISK_CHECK(h.target_id.size() <= kMaxIdBytes, "set id longer than 31 bytes");
  std::memcpy(out + 64, h.target_id.data(), h.target_id.size());
  PutU64(out + kHeaderCheckOffset, XXH3_64bits(out, kHeaderCheckOffset));
}

Status DecodeFileHeader(const uint8_t* in, const std::string& path, FileHeader* h) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption(path + ": file header (offset 0): " + why);
  };
  if (std::memcmp(in, kFileMagic, 16) != 0) {
    return Status::Corruption(path + ": not a snapdisk backup export (bad magic at offset 0)");
  }
  h->version = GetU32(in + 16);
  const bool check_ok = GetU64(in + kHeaderCheckOffset) == XXH3_64bits(in, kHeaderCheckOffset);
  if (h->version != kBackupExportVersion) {
    if (check_ok) {
      return Status::Unsupported(path + ": export format version " + std::to_string(h->version) +
                                 " (this build reads version " +
                                 std::to_string(kBackupExportVersion) + ")");
    }
    return bad("checksum mismatch (and version field " + std::to_string(h->version) + ")");
  }
  if (!check_ok) return bad("checksum mismatch");
  if (GetU32(in + 20) != kHeaderBytes) {
    return bad("header length " + std::to_string(GetU32(in + 20)) + ", expected 128");
  }
  if (!IsAllZero(in + 52, 4) || !IsAllZero(in + 96, 24)) return bad("reserved bytes not zero");
  h->manifest_count = GetU64(in + 24);
  h->chunk_count = GetU64(in + 32);
  if (h->manifest_count == 0 || h->manifest_count > kMaxManifests) {
    return bad("manifest count " + std::to_string(h->manifest_count) + " is not 1-1000000");
  }
  if (h->chunk_count > kMaxChunks) {
    return bad("chunk count " + std::to_string(h->chunk_count) + " is over 2^32");
  }
  h->config.chunk_bytes = GetU64(in + 40);
  h->config.zstd_level = static_cast<int>(GetU32(in + 48));
  h->exported_unix_ns = static_cast<int64_t>(GetU64(in + 56));
  const uint8_t* id = in + 64;
  const size_t id_len = static_cast<size_t>(std::find(id, id + 32, uint8_t{0}) - id);
  h->target_id.assign(reinterpret_cast<const char*>(id), std::min<size_t>(id_len, 32));
  if (id_len > kMaxIdBytes || !IsAllZero(id + id_len, 32 - id_len) || !IsSetId(h->target_id)) {
    return bad("target id '" + Printable(h->target_id) + "' is not a set id");
  }
  return Status::OK();
}

struct SectionHeader {
  uint64_t index = 0;
  uint64_t offset_bytes = 0;  // of the section
  uint8_t type = 0;
  std::string key;
  uint64_t payload_offset_bytes = 0;
  uint64_t payload_bytes = 0;
  int64_t retain_until_unix_ns = 0;
  Xxh128Digest checksum{};
  std::string chunk_hash;  // chunks: from the key
};

// "section 3 of 9 (chunk 'chunks/ab/ab...') at offset 1234"
std::string SectionName(uint64_t index, uint64_t count, uint8_t type, std::string_view key,
                        uint64_t offset_bytes) {
  std::string s = "section " + std::to_string(index) + " of " + std::to_string(count);
  if (!key.empty()) s += std::string(" (") + SectionTypeName(type) + " '" + Printable(key) + "')";
  return s + " at offset " + std::to_string(offset_bytes);
}
std::string SectionName(const SectionHeader& s, uint64_t count) {
  return SectionName(s.index, count, s.type, s.key, s.offset_bytes);
}

void EncodeSectionHeader(uint8_t type, std::string_view key, std::span<const std::byte> payload,
                         int64_t retain_until_unix_ns, uint8_t* out) {
  SNAPDISK_CHECK(!key.empty() && key.size() <= kMaxKeyBytes, "section key is not 1-512 bytes");
  std::memset(out, 0, kSectionHeaderBytes);
  std::memcpy(out, kSectionMagic, 4);
  out[4] = type;
  PutU16(out + 6, static_cast<uint16_t>(key.size()));
  PutU64(out + 8, payload.size());
  PutU64(out + 16, static_cast<uint64_t>(retain_until_unix_ns));
  const Xxh128Digest sum = Xxh128(payload.data(), payload.size());
  std::memcpy(out + 24, sum.data(), sum.size());
  PutU64(out + kSectionCheckOffset, SectionHeaderCheck(out, key));
}

// Reads and checks the header of section `index` at `offset_bytes`. Its raw
// bytes (header and key) are appended to *raw when given (for hashing).
// Corruption naming the section on any fault; a fault here ends a walk of the
// file (the lengths that follow cannot be trusted).
Status ReadSectionHeader(int fd, const std::string& path, uint64_t file_bytes,
                         uint64_t offset_bytes, uint64_t index, const FileHeader& fh,
                         SectionHeader* out, std::vector<uint8_t>* raw) {
  const uint64_t count = fh.manifest_count + fh.chunk_count;
  auto bad = [&](const std::string& name, const std::string& why) {
    return Status::Corruption(path + ": " + name + ": " + why);
  };
  const std::string bare = SectionName(index, count, 0, {}, offset_bytes);
  if (offset_bytes >= file_bytes) {
    return Status::Corruption(path + ": the file ends at offset " + std::to_string(file_bytes) +
                              ", before section " + std::to_string(index) + " of " +
                              std::to_string(count) + " (truncated)");
  }
  if (file_bytes - offset_bytes < kSectionHeaderBytes) {
    return bad(bare, "the file ends at offset " + std::to_string(file_bytes) +
                         " inside the section header (truncated)");
  }
  uint8_t h[kSectionHeaderBytes];
  SNAPDISK_RETURN_IF_ERROR(ReadExact(fd, h, sizeof(h), offset_bytes, path));
  if (std::memcmp(h, kSectionMagic, 4) != 0) return bad(bare, "bad section magic (not SDXS)");
  const uint16_t key_bytes = GetU16(h + 6);
  if (key_bytes == 0 || key_bytes > kMaxKeyBytes) {
    return bad(bare, "key length " + std::to_string(key_bytes) + " is not 1-512");
  }
  if (file_bytes - offset_bytes - kSectionHeaderBytes < key_bytes) {
    return bad(bare, "the file ends at offset " + std::to_string(file_bytes) +
                         " inside the section's key (truncated)");
  }
  std::string key(key_bytes, '\0');
  SNAPDISK_RETURN_IF_ERROR(
      ReadExact(fd, key.data(), key_bytes, offset_bytes + kSectionHeaderBytes, path));
  if (GetU64(h + kSectionCheckOffset) != SectionHeaderCheck(h, key)) {
    return bad(bare, "section header checksum mismatch");
  }
  out->index = index;
  out->offset_bytes = offset_bytes;
  out->type = h[4];
  out->key = std::move(key);
  out->payload_offset_bytes = offset_bytes + kSectionHeaderBytes + key_bytes;
  out->payload_bytes = GetU64(h + 8);
  out->retain_until_unix_ns = static_cast<int64_t>(GetU64(h + 16));
  std::memcpy(out->checksum.data(), h + 24, 16);
  out->chunk_hash.clear();
  const std::string name = SectionName(*out, count);
  if (out->type != kTypeManifest && out->type != kTypeChunk) {
    return bad(name, "unknown section type " + std::to_string(out->type));
  }
  if (h[5] != 0) return bad(name, "reserved byte not zero");
  const uint8_t expected = index < fh.manifest_count ? kTypeManifest : kTypeChunk;
  if (out->type != expected) {
    return bad(name, std::string("is a ") + SectionTypeName(out->type) + " section where the " +
                         "header's counts (" + std::to_string(fh.manifest_count) +
                         " manifests, then " + std::to_string(fh.chunk_count) + " chunks) put a " +
                         SectionTypeName(expected));
  }
  uint64_t min_bytes = 1, max_bytes = kMaxManifestBytes;
  if (out->type == kTypeManifest) {
    if (!LooksLikeManifestKey(out->key)) return bad(name, "the key is not a manifest key");
  } else {
    if (!ParseChunkKey(out->key, &out->chunk_hash)) return bad(name, "the key is not a chunk key");
    min_bytes = kMinChunkObjectBytes;
    max_bytes = kMaxChunkObjectBytes;
  }
  if (out->payload_bytes < min_bytes || out->payload_bytes > max_bytes) {
    return bad(name, "payload length " + std::to_string(out->payload_bytes) + " is not " +
                         std::to_string(min_bytes) + "-" + std::to_string(max_bytes));
  }
  if (out->payload_bytes > file_bytes - out->payload_offset_bytes) {
    return bad(name, "the payload of " + std::to_string(out->payload_bytes) +
                         " bytes runs past the end of the file at offset " +
                         std::to_string(file_bytes) + " (truncated)");
  }
  if (raw != nullptr) {
    raw->assign(h, h + kSectionHeaderBytes);
    raw->insert(raw->end(), out->key.begin(), out->key.end());
  }
  return Status::OK();
}

// Checks the trailer at `offset_bytes` except its SHA-256 (returned in *sha).
Status CheckTrailer(const uint8_t* t, const std::string& path, uint64_t offset_bytes,
                    uint64_t section_count, std::array<uint8_t, 32>* sha) {
  auto bad = [&](const std::string& why) {
    return Status::Corruption(path + ": trailer at offset " + std::to_string(offset_bytes) + ": " +
                              why);
  };
  if (std::memcmp(t, kTrailerMagic, 16) != 0) return bad("bad trailer magic");
  if (GetU64(t + 16) != section_count) {
    return bad("section count " + std::to_string(GetU64(t + 16)) + ", the header says " +
               std::to_string(section_count));
  }
  if (GetU64(t + 24) != offset_bytes) {
    return bad("records its offset as " + std::to_string(GetU64(t + 24)));
  }
  std::memcpy(sha->data(), t + 32, 32);
  return Status::OK();
}

// ---- Sets -----------------------------------------------------------------------

ExportedSet Summarize(const BackupSet& s) {
  ExportedSet e;
  e.id = s.id;
  e.type = s.type;
  e.volume = s.volume;
  e.volume_id = s.volume_id;
  e.lineage = s.lineage;
  e.base = s.base;
  e.first_lsn = s.first_lsn;
  e.last_lsn = s.last_lsn;
  e.consistent_unix_ns = s.consistent_unix_ns;
  e.volume_size_bytes = s.volume_size_bytes;
  e.data_bytes = s.data_bytes;
  e.stored_bytes = s.stored_bytes;
  e.chunk_count = s.chunks.size();
  for (const ChunkInfo& c : s.chunks) e.chunk_raw_bytes += c.raw_bytes;
  e.retain_until_unix_ns = s.retain_until_unix_ns;
  e.sha256 = s.sha256;
  return e;
}

bool NeedsBase(BackupType type) { return type == BackupType::kDiff || type == BackupType::kIncr; }

// The target and what it stands on, oldest first.
Result<std::vector<BackupSet>> ResolveExportChain(WormStore& store, std::string_view id) {
  SNAPDISK_ASSIGN_OR_RETURN(BackupSet target, FindBackupSet(store, id));
  std::vector<BackupSet> chain;
  chain.push_back(std::move(target));
  while (NeedsBase(chain.back().type)) {
    const BackupSet& at = chain.back();
    if (chain.size() > kMaxManifests) {
      return Status::Corruption("the chain of " + chain.front().id + " is over 1000000 sets long");
    }
    Result<BackupSet> base = FindBackupSet(store, at.base);
    if (!base.ok()) {
      if (base.status().IsNotFound() || base.status().IsInvalidArgument()) {
        return Status::NotFound("set " + at.id + " is based on '" + at.base +
                                "', which is not in the store: the chain of " + chain.front().id +
                                " cannot be exported whole");
      }
      return base.status().WithContext("reading the chain of " + chain.front().id);
    }
    auto broken = [&](const std::string& why) {
      return Status::Corruption("chain of " + chain.front().id + ": " + at.id + " on " + base->id +
                                ": " + why);
    };
    if (base->sequence >= at.sequence) return broken("the base is not older");
    if (base->volume_id != at.volume_id || base->lineage != at.lineage) {
      return broken("another volume or lineage");
    }
    if (at.type == BackupType::kDiff && base->type != BackupType::kFull) {
      return broken("a diff's base is not a full");
    }
    if (base->type != BackupType::kFull && !NeedsBase(base->type)) {
      return broken("the base is not a physical backup");
    }
    if (at.first_lsn != base->last_lsn + 1) return broken("LSNs do not follow on");
    chain.push_back(std::move(base).value());
  }
  std::reverse(chain.begin(), chain.end());
  return chain;
}

// Removes the temporary file unless kept.
struct TempFileGuard {
  std::string path;
  bool keep = false;
  ~TempFileGuard() {
    if (!keep && !path.empty()) ::unlink(path.c_str());
  }
};

Status RenameIntoPlace(const std::string& from, const std::string& to, bool overwrite) {
  if (overwrite) {
    if (::rename(from.c_str(), to.c_str()) != 0) {
      return Status::FromErrno(errno, "rename " + from + " to " + to);
    }
    return Status::OK();
  }
  int rc = ::renameat2(AT_FDCWD, from.c_str(), AT_FDCWD, to.c_str(), RENAME_NOREPLACE);
  if (rc != 0 && (errno == EINVAL || errno == ENOSYS)) {
    // A file system without RENAME_NOREPLACE: a hard link is just as exclusive.
    rc = ::link(from.c_str(), to.c_str());
    if (rc == 0) ::unlink(from.c_str());
  }
  if (rc != 0 && errno == EEXIST) {
    return Status::AlreadyExists(to + " exists (appeared during the export); it was left alone");
  }
  if (rc != 0) return Status::FromErrno(errno, "rename " + from + " to " + to);
  return Status::OK();
}

void AddProblem(ExportReport& report, uint64_t* unlisted, uint64_t offset_bytes, std::string what) {
  if (report.problems.size() < kMaxProblems) {
    report.problems.push_back(ExportProblem{offset_bytes, std::move(what)});
  } else {
    ++*unlisted;
  }
}

// ---- Reader ---------------------------------------------------------------------

class ExportFileReader;

// The read-only WormStore over an open export file.
class ExportStoreView final : public WormStore {
 public:
  explicit ExportStoreView(ExportFileReader& reader) : reader_(reader) {}

  const WormStoreConfig& config() const override;
  int64_t NowUnixNs() const override { return RealNowUnixNs(); }
  Status Put(std::string_view key, std::span<const std::byte>, int64_t) override {
    return ReadOnly("put", key);
  }
  Result<std::vector<std::byte>> Get(std::string_view key) override;
  Result<std::vector<std::byte>> GetRange(std::string_view key, uint64_t offset_bytes,
                                          uint64_t length_bytes) override;
  Result<WormObjectInfo> Head(std::string_view key) override;
  Result<std::vector<WormObjectInfo>> List(std::string_view prefix) override;
  Status ExtendRetention(std::string_view key, int64_t) override {
    return ReadOnly("extend the retention of", key);
  }
  Status Delete(std::string_view key) override { return ReadOnly("delete", key); }
  Result<WormExpireReport> Expire() override { return ReadOnly("expire objects in", ""); }
  Result<WormVerifyReport> Verify(const WormProgress& progress) override;

 private:
  Status ReadOnly(std::string_view what, std::string_view key) const;
  ExportFileReader& reader_;
};

class ExportFileReader final : public BackupExportReader {
 public:
  struct Entry {
    uint64_t index = 0;
    uint64_t offset_bytes = 0;  // the section's
    uint8_t type = 0;
    uint64_t payload_offset_bytes = 0;
    uint64_t payload_bytes = 0;
    int64_t retain_until_unix_ns = 0;
    Xxh128Digest checksum{};
  };
  using Index = std::map<std::string, Entry, std::less<>>;

  static Result<std::unique_ptr<BackupExportReader>> Open(const std::string& path);

  const std::string& path() const override { return path_; }
  const std::string& target_id() const override { return header_.target_id; }
  int64_t exported_unix_ns() const override { return header_.exported_unix_ns; }
  const std::vector<BackupSet>& sets() const override { return sets_; }
  Result<BackupSet> FindSet(std::string_view id) const override {
    for (const BackupSet& s : sets_) {
      if (s.id == id) return s;
    }
    return Status::NotFound("no backup set '" + Printable(id) + "' in " + path_);
  }
  Result<std::vector<std::byte>> Get(std::string_view hash) const override {
    auto it = key_by_hash_.find(std::string(hash));
    if (it == key_by_hash_.end()) {
      return Status::NotFound("no chunk " + Printable(hash) + " in " + path_);
    }
    SNAPDISK_ASSIGN_OR_RETURN(std::vector<std::byte> object, GetObject(it->second));
    return DecodeChunk(object, hash, path_);
  }
  Result<std::vector<std::byte>> GetObject(std::string_view key) const override {
    auto it = index_.find(key);
    if (it == index_.end()) {
      return Status::NotFound("no object '" + Printable(key) + "' in " + path_);
    }
    return ReadPayload(it->first, it->second);
  }
  WormStore& store() override { return view_; }

  const FileHeader& header() const { return header_; }
  const Index& index() const { return index_; }
  uint64_t section_count() const { return header_.manifest_count + header_.chunk_count; }

  Result<std::vector<std::byte>> ReadPayload(std::string_view key, const Entry& e) const {
    std::vector<std::byte> bytes(e.payload_bytes);
    SNAPDISK_RETURN_IF_ERROR(
        ReadExact(fd_.get(), bytes.data(), bytes.size(), e.payload_offset_bytes, path_));
    if (Xxh128(bytes.data(), bytes.size()) != e.checksum) {
      return Status::Corruption(path_ + ": " +
                                SectionName(e.index, section_count(), e.type, key, e.offset_bytes) +
                                ": payload checksum mismatch");
    }
    return bytes;
  }

 private:
  explicit ExportFileReader(std::string path) : path_(std::move(path)), view_(*this) {}

  std::string path_;
  UniqueFd fd_;
  FileHeader header_;
  std::vector<BackupSet> sets_;
  Index index_;
  std::unordered_map<std::string, std::string> key_by_hash_;  // chunk hash -> its key
  ExportStoreView view_;
};

Result<std::unique_ptr<BackupExportReader>> ExportFileReader::Open(const std::string& path) {
  std::unique_ptr<ExportFileReader> r(new ExportFileReader(path));
  uint64_t file_bytes = 0;
  SNAPDISK_ASSIGN_OR_RETURN(r->fd_, OpenForReading(path, &file_bytes));
  const int fd = r->fd_.get();
  uint8_t h[kHeaderBytes];
  size_t got = 0;
  SNAPDISK_RETURN_IF_ERROR(ReadAt(fd, h, sizeof(h), 0, path, &got));
  if (got < sizeof(kFileMagic) || std::memcmp(h, kFileMagic, sizeof(kFileMagic)) != 0) {
    return Status::Corruption(path + ": not a snapdisk backup export (bad magic at offset 0)");
  }
  if (file_bytes < kHeaderBytes + kTrailerBytes || got < sizeof(h)) {
    return Status::Corruption(path + ": " + std::to_string(file_bytes) +
                              " bytes, too short for a backup export (header and trailer alone "
                              "take 192; truncated)");
  }
  SNAPDISK_RETURN_IF_ERROR(DecodeFileHeader(h, path, &r->header_));
  const uint64_t count = r->section_count();
  uint64_t offset = kHeaderBytes;
  std::unordered_set<std::string> set_ids;
  SectionHeader s;
  for (uint64_t i = 0; i < count; ++i) {
    SNAPDISK_RETURN_IF_ERROR(
        ReadSectionHeader(fd, path, file_bytes, offset, i, r->header_, &s, nullptr));
    Entry e{i,
            s.offset_bytes,
            s.type,
            s.payload_offset_bytes,
            s.payload_bytes,
            s.retain_until_unix_ns,
            s.checksum};
    auto [it, inserted] = r->index_.try_emplace(s.key, e);
    if (!inserted) {
      return Status::Corruption(path + ": " + SectionName(s, count) + ": key appears twice");
    }
    if (s.type == kTypeManifest) {
      SNAPDISK_ASSIGN_OR_RETURN(std::vector<std::byte> json, r->ReadPayload(s.key, e));
      Result<BackupSet> set = DecodeManifest(
          std::string_view(reinterpret_cast<const char*>(json.data()), json.size()), s.key);
      if (!set.ok()) return set.status().WithContext(path + ": " + SectionName(s, count));
      if (ManifestKey(*set) != s.key) {
        return Status::Corruption(path + ": " + SectionName(s, count) + ": holds set " + set->id +
                                  " of volume '" + set->volume + "', which belongs at '" +
                                  ManifestKey(*set) + "'");
      }
      if (!set_ids.insert(set->id).second) {
        return Status::Corruption(path + ": " + SectionName(s, count) + ": set " + set->id +
                                  " appears twice");
      }
      set->retain_until_unix_ns = s.retain_until_unix_ns;
      set->sha256 = Sha256Hex(json);
      r->sets_.push_back(std::move(set).value());
    } else {
      r->key_by_hash_.try_emplace(s.chunk_hash, s.key);  // keys sort the plain one first
    }
    offset = s.payload_offset_bytes + s.payload_bytes;
  }
  if (file_bytes - offset < kTrailerBytes) {
    return Status::Corruption(path + ": the file ends at offset " + std::to_string(file_bytes) +
                              ", inside the 64-byte trailer at " + std::to_string(offset) +
                              " (truncated)");
  }
  uint8_t t[kTrailerBytes];
  SNAPDISK_RETURN_IF_ERROR(ReadExact(fd, t, sizeof(t), offset, path));
  std::array<uint8_t, 32> sha;
  SNAPDISK_RETURN_IF_ERROR(CheckTrailer(t, path, offset, count, &sha));
  if (file_bytes != offset + kTrailerBytes) {
    return Status::Corruption(path + ": " + std::to_string(file_bytes - offset - kTrailerBytes) +
                              " bytes follow the trailer at offset " + std::to_string(offset));
  }
  if (!r->FindSet(r->header_.target_id).ok()) {
    return Status::Corruption(path + ": the target set " + r->header_.target_id +
                              " is not in the file");
  }
  return std::unique_ptr<BackupExportReader>(std::move(r));
}

const WormStoreConfig& ExportStoreView::config() const { return reader_.header().config; }

Status ExportStoreView::ReadOnly(std::string_view what, std::string_view key) const {
  std::string msg = "cannot " + std::string(what);
  if (!key.empty()) msg += " '" + Printable(key) + "'";
  return Status::PermissionDenied(msg + ": " + reader_.path() +
                                  " is a backup export file, read-only");
}

Result<std::vector<std::byte>> ExportStoreView::Get(std::string_view key) {
  return reader_.GetObject(key);
}

// The whole object, checked against its section checksum, then the range.
Result<std::vector<std::byte>> ExportStoreView::GetRange(std::string_view key,
                                                         uint64_t offset_bytes,
                                                         uint64_t length_bytes) {
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<std::byte> object, reader_.GetObject(key));
  SNAPDISK_RETURN_IF_ERROR(CheckGetRange(key, object.size(), offset_bytes, length_bytes));
  return std::vector<std::byte>(object.begin() + static_cast<ptrdiff_t>(offset_bytes),
                                object.begin() + static_cast<ptrdiff_t>(offset_bytes + length_bytes));
}

Result<WormObjectInfo> ExportStoreView::Head(std::string_view key) {
  auto it = reader_.index().find(key);
  if (it == reader_.index().end()) {
    return Status::NotFound("no object '" + Printable(key) + "' in " + reader_.path());
  }
  WormObjectInfo info;
  info.key = it->first;
  info.size_bytes = it->second.payload_bytes;
  info.checksum = Hex(it->second.checksum.data(), it->second.checksum.size());
  info.created_unix_ns = reader_.exported_unix_ns();
  info.retain_until_unix_ns = it->second.retain_until_unix_ns;
  return info;
}

Result<std::vector<WormObjectInfo>> ExportStoreView::List(std::string_view prefix) {
  std::vector<WormObjectInfo> out;
  for (auto it = reader_.index().lower_bound(prefix);
       it != reader_.index().end() && it->first.compare(0, prefix.size(), prefix) == 0; ++it) {
    SNAPDISK_ASSIGN_OR_RETURN(WormObjectInfo info, Head(it->first));
    out.push_back(std::move(info));
  }
  return out;
}

Result<WormVerifyReport> ExportStoreView::Verify(const WormProgress& progress) {
  WormVerifyReport report;
  uint64_t total = 0;
  for (const auto& [key, e] : reader_.index()) total += e.payload_bytes;
  for (const auto& [key, e] : reader_.index()) {
    Result<std::vector<std::byte>> bytes = reader_.ReadPayload(key, e);
    if (!bytes.ok()) {
      if (!bytes.status().IsCorruption()) return bytes.status();
      report.problems.push_back(WormProblem{key, bytes.status().message()});
    }
    ++report.objects;
    report.bytes += e.payload_bytes;
    if (progress && !progress(report.bytes, total)) {
      return Status::Cancelled("verify of " + reader_.path() + " cancelled");
    }
  }
  return report;
}

}  // namespace

// ---- Export ---------------------------------------------------------------------

Status ExportBackupSet(WormStore& store, std::string_view id, const std::string& path,
                       const ExportOptions& options, ExportReport* written) {
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<BackupSet> chain, ResolveExportChain(store, id));
  const BackupSet& target = chain.back();
  SNAPDISK_CHECK(target.id.size() <= kMaxIdBytes, "a decoded set id longer than 31 bytes");

  const std::filesystem::path fs_path(path);
  const std::string name = fs_path.filename().string();
  if (name.empty() || name == "." || name == "..") {
    return Status::InvalidArgument("'" + path + "' does not name a file");
  }
  const std::string dir = fs_path.has_parent_path() ? fs_path.parent_path().string() : ".";
  struct stat st;
  if (::stat(dir.c_str(), &st) != 0 || !S_ISDIR(st.st_mode)) {
    return Status::NotFound("directory '" + dir + "' for " + path + " does not exist");
  }
  if (::stat(path.c_str(), &st) == 0) {
    if (S_ISDIR(st.st_mode)) return Status::InvalidArgument(path + " is a directory");
    if (!options.overwrite) {
      return Status::AlreadyExists(path + " exists (overwrite to replace it); it was left alone");
    }
  } else if (errno != ENOENT) {
    return Status::FromErrno(errno, "stat " + path);
  }

  // Manifests are copied as stored (their SHA-256 is what links a volume's
  // chain); read again when written, one at a time.
  uint64_t total_bytes = 0;
  for (const BackupSet& set : chain) {
    Result<WormObjectInfo> info = store.Head(set.key);
    if (!info.ok()) return info.status().WithContext("manifest '" + set.key + "'");
    if (info->size_bytes > kMaxManifestBytes) {
      return Status::Unsupported("manifest '" + set.key + "' is " +
                                 std::to_string(info->size_bytes) +
                                 " bytes, over the export format's 256 MiB");
    }
    total_bytes += info->size_bytes;
  }

  // Every chunk object once, by key; Head finds a missing one before a byte
  // is written, and gives exact sizes and the retention.
  struct PlannedChunk {
    std::string hash;
    std::string set_id;  // the first (oldest) set that uses it, for messages
    uint64_t size_bytes = 0;
    int64_t retain_until_unix_ns = 0;
  };
  std::map<std::string, PlannedChunk> chunks;
  std::vector<ExportedSet> summaries;
  for (BackupSet& set : chain) {
    for (const ChunkInfo& c : set.chunks) {
      chunks.try_emplace(c.key, PlannedChunk{c.hash, set.id, 0, 0});
    }
    summaries.push_back(Summarize(set));
    // Not needed from here on: keep the export's memory to the chunk list.
    std::vector<ChunkInfo>().swap(set.chunks);
    std::vector<ChunkExtent>().swap(set.extents);
    std::vector<ZeroExtent>().swap(set.zero_extents);
  }
  if (chunks.size() > kMaxChunks) {
    return Status::Unsupported("set " + target.id + " needs " + std::to_string(chunks.size()) +
                               " chunks, over the export format's 2^32");
  }
  for (auto& [key, c] : chunks) {
    Result<WormObjectInfo> info = store.Head(key);
    if (!info.ok()) {
      if (info.status().IsNotFound()) {
        return Status::NotFound("chunk object '" + key + "' of set " + c.set_id +
                                " is not in the store");
      }
      return info.status().WithContext("chunk object '" + key + "' of set " + c.set_id);
    }
    if (info->size_bytes < kMinChunkObjectBytes || info->size_bytes > kMaxChunkObjectBytes) {
      return Status::Corruption("chunk object '" + key + "' of set " + c.set_id + " is " +
                                std::to_string(info->size_bytes) + " bytes, not a chunk's size");
    }
    c.size_bytes = info->size_bytes;
    c.retain_until_unix_ns = info->retain_until_unix_ns;
    total_bytes += info->size_bytes;
  }

  uint64_t done_bytes = 0;
  auto report_progress = [&]() {
    if (!options.progress) return true;
    total_bytes = std::max(total_bytes, done_bytes);
    return options.progress(done_bytes, total_bytes);
  };
  const Status cancelled =
      Status::Cancelled("export of " + target.id + " to " + path + " cancelled");
  if (!report_progress()) return cancelled;

  // The temporary file, beside the target so the rename stays in one file system.
  TempFileGuard temp;
  static std::atomic<uint64_t> temp_counter{0};
  temp.path = (dir == "." && !fs_path.has_parent_path() ? std::string() : dir + "/") + "." + name +
              "." + std::to_string(::getpid()) + "." + std::to_string(temp_counter++) +
              ".export-tmp";
  UniqueFd fd(::open(temp.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  if (!fd.valid() && errno == EEXIST) {
    // A leftover of a crashed process that had our pid.
    ::unlink(temp.path.c_str());
    fd = UniqueFd(::open(temp.path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644));
  }
  if (!fd.valid()) {
    const int err = errno;
    temp.path.clear();  // not ours to remove
    return Status::FromErrno(err, "create " + path + "'s temporary file");
  }
  FileWriter out(fd.get(), temp.path);

  FileHeader header;
  header.manifest_count = chain.size();
  header.chunk_count = chunks.size();
  header.config = store.config();
  header.exported_unix_ns = store.NowUnixNs();
  header.target_id = target.id;
  uint8_t header_bytes[kHeaderBytes];
  EncodeFileHeader(header, header_bytes);
  SNAPDISK_RETURN_IF_ERROR(out.Append(header_bytes, sizeof(header_bytes)));

  auto put_section = [&](uint8_t type, std::string_view key, std::span<const std::byte> payload,
                         int64_t retain_until_unix_ns) -> Status {
    uint8_t h[kSectionHeaderBytes];
    EncodeSectionHeader(type, key, payload, retain_until_unix_ns, h);
    SNAPDISK_RETURN_IF_ERROR(out.Append(h, sizeof(h)));
    SNAPDISK_RETURN_IF_ERROR(out.Append(key.data(), key.size()));
    SNAPDISK_RETURN_IF_ERROR(out.Append(payload.data(), payload.size()));
    done_bytes += payload.size();
    return Status::OK();
  };

  uint64_t chunk_stored_bytes = 0;
  for (const BackupSet& set : chain) {
    Result<std::vector<std::byte>> bytes = store.Get(set.key);
    if (!bytes.ok()) return bytes.status().WithContext("reading manifest '" + set.key + "'");
    if (Sha256Hex(*bytes) != set.sha256) {
      return Status::Corruption("manifest '" + set.key + "' changed while it was being exported");
    }
    SNAPDISK_RETURN_IF_ERROR(put_section(kTypeManifest, set.key, *bytes, set.retain_until_unix_ns));
    if (!report_progress()) return cancelled;
  }
  for (const auto& [key, c] : chunks) {
    Result<std::vector<std::byte>> object = store.Get(key);
    if (!object.ok()) {
      return object.status().WithContext("reading chunk object '" + key + "' of set " + c.set_id);
    }
    if (object->size() > kMaxChunkObjectBytes) {
      return Status::Corruption("chunk object '" + key + "' of set " + c.set_id + " is " +
                                std::to_string(object->size()) + " bytes, not a chunk's size");
    }
    if (options.check_chunks) {
      Result<std::vector<std::byte>> raw = DecodeChunk(*object, c.hash, "set " + c.set_id);
      if (!raw.ok()) return raw.status();
    }
    SNAPDISK_RETURN_IF_ERROR(put_section(kTypeChunk, key, *object, c.retain_until_unix_ns));
    chunk_stored_bytes += object->size();
    if (!report_progress()) return cancelled;
  }

  const uint64_t trailer_offset = out.offset_bytes();
  const std::array<uint8_t, 32> sha = out.Sha256Final();
  uint8_t trailer[kTrailerBytes];
  std::memcpy(trailer, kTrailerMagic, 16);
  PutU64(trailer + 16, header.manifest_count + header.chunk_count);
  PutU64(trailer + 24, trailer_offset);
  std::memcpy(trailer + 32, sha.data(), sha.size());
  SNAPDISK_RETURN_IF_ERROR(out.AppendUnhashed(trailer, sizeof(trailer)));
  SNAPDISK_RETURN_IF_ERROR(out.Flush());
  if (::fsync(fd.get()) != 0) return Status::FromErrno(errno, "fsync " + temp.path);
  if (::close(fd.Release()) != 0) return Status::FromErrno(errno, "close " + temp.path);
  SNAPDISK_RETURN_IF_ERROR(RenameIntoPlace(temp.path, path, options.overwrite));
  temp.keep = true;  // it is `path` now
  SNAPDISK_RETURN_IF_ERROR(FsyncDir(dir));

  if (written != nullptr) {
    ExportReport r;
    r.path = path;
    r.target_id = target.id;
    r.version = kBackupExportVersion;
    r.file_bytes = trailer_offset + kTrailerBytes;
    r.exported_unix_ns = header.exported_unix_ns;
    r.config = header.config;
    r.sets = std::move(summaries);
    r.manifest_count = header.manifest_count;
    r.chunk_count = header.chunk_count;
    r.chunk_stored_bytes = chunk_stored_bytes;
    r.sha256 = Hex(sha.data(), sha.size());
    *written = std::move(r);
  }
  return Status::OK();
}

// ---- Verify ---------------------------------------------------------------------

Result<ExportReport> VerifyBackupExport(const std::string& path, const WormProgress& progress,
                                        ExportReport* damaged) {
  uint64_t file_bytes = 0;
  SNAPDISK_ASSIGN_OR_RETURN(UniqueFd fd, OpenForReading(path, &file_bytes));
  ExportReport report;
  report.path = path;
  report.file_bytes = file_bytes;
  uint64_t unlisted = 0;

  auto finish = [&]() -> Result<ExportReport> {
    if (unlisted > 0) {
      report.problems.push_back(
          ExportProblem{file_bytes, std::to_string(unlisted) + " more problems not listed"});
    }
    if (report.problems.empty()) return report;
    std::string msg = report.problems.front().what;
    const uint64_t more = report.problems.size() - 1 + (unlisted > 0 ? unlisted - 1 : 0);
    if (more > 0) {
      msg += " (and " + std::to_string(more) + (more == 1 ? " more problem)" : " more problems)");
    }
    if (damaged != nullptr) *damaged = report;
    return Status::Corruption(msg);
  };
  // A fault that ends the walk: a Corruption becomes the report's last
  // problem; anything else (I/O) is returned as it is.
  auto stop = [&](const Status& s, uint64_t offset_bytes) -> Result<ExportReport> {
    if (!s.IsCorruption()) return s;
    AddProblem(report, &unlisted, offset_bytes, s.message());
    return finish();
  };
  auto cancelled = [&]() { return Status::Cancelled("verify of " + path + " cancelled"); };

  if (file_bytes < kHeaderBytes) {
    if (file_bytes < 16) {
      return stop(Status::Corruption(path + ": " + std::to_string(file_bytes) +
                                     " bytes, not a snapdisk backup export"),
                  0);
    }
    uint8_t magic[16];
    SNAPDISK_RETURN_IF_ERROR(ReadExact(fd.get(), magic, sizeof(magic), 0, path));
    if (std::memcmp(magic, kFileMagic, 16) != 0) {
      return stop(
          Status::Corruption(path + ": not a snapdisk backup export (bad magic at offset 0)"), 0);
    }
    return stop(
        Status::Corruption(path + ": the file ends at offset " + std::to_string(file_bytes) +
                           " inside the 128-byte header (truncated)"),
        file_bytes);
  }
  uint8_t h[kHeaderBytes];
  SNAPDISK_RETURN_IF_ERROR(ReadExact(fd.get(), h, sizeof(h), 0, path));
  FileHeader header;
  if (Status s = DecodeFileHeader(h, path, &header); !s.ok()) return stop(s, 0);
  report.target_id = header.target_id;
  report.version = header.version;
  report.exported_unix_ns = header.exported_unix_ns;
  report.config = header.config;
  report.manifest_count = header.manifest_count;
  report.chunk_count = header.chunk_count;

  Sha256 sha;
  sha.Update(h, sizeof(h));
  const uint64_t count = header.manifest_count + header.chunk_count;
  uint64_t offset = kHeaderBytes;
  if (progress && !progress(offset, file_bytes)) return cancelled();

  std::unordered_set<std::string> keys;
  std::map<std::string, std::string> chunk_keys;  // key -> hash: the chunks present
  // Chunk key -> the first set that references it, and where its manifest is.
  std::unordered_map<std::string, std::pair<std::string, uint64_t>> referenced;
  std::unordered_set<std::string> set_ids;
  bool every_manifest_read = true;  // else "used by no set" and bases are not judged
  std::vector<uint8_t> raw;
  std::vector<std::byte> payload;
  SectionHeader s;
  for (uint64_t i = 0; i < count; ++i) {
    if (Status st = ReadSectionHeader(fd.get(), path, file_bytes, offset, i, header, &s, &raw);
        !st.ok()) {
      return stop(st, offset);
    }
    sha.Update(raw.data(), raw.size());
    const std::string name = path + ": " + SectionName(s, count);
    payload.resize(s.payload_bytes);
    if (Status st =
            ReadExact(fd.get(), payload.data(), payload.size(), s.payload_offset_bytes, path);
        !st.ok()) {
      return stop(st, s.payload_offset_bytes);
    }
    sha.Update(payload.data(), payload.size());
    offset = s.payload_offset_bytes + s.payload_bytes;

    if (!keys.insert(s.key).second) {
      AddProblem(report, &unlisted, s.offset_bytes, name + ": key appears twice");
    }
    if (Xxh128(payload.data(), payload.size()) != s.checksum) {
      AddProblem(report, &unlisted, s.offset_bytes, name + ": payload checksum mismatch");
      if (s.type == kTypeChunk) chunk_keys.emplace(s.key, s.chunk_hash);  // present, if damaged
      if (s.type == kTypeManifest) every_manifest_read = false;
    } else if (s.type == kTypeManifest) {
      Result<BackupSet> set = DecodeManifest(
          std::string_view(reinterpret_cast<const char*>(payload.data()), payload.size()), s.key);
      if (!set.ok()) {
        every_manifest_read = false;
        AddProblem(report, &unlisted, s.offset_bytes, name + ": " + set.status().message());
      } else if (ManifestKey(*set) != s.key) {
        every_manifest_read = false;
        AddProblem(report, &unlisted, s.offset_bytes,
                   name + ": holds set " + set->id + " of volume '" + set->volume +
                       "', which belongs at '" + ManifestKey(*set) + "'");
      } else {
        if (!set_ids.insert(set->id).second) {
          AddProblem(report, &unlisted, s.offset_bytes,
                     name + ": set " + set->id + " appears twice");
        }
        for (const ChunkInfo& c : set->chunks) {
          referenced.try_emplace(c.key, set->id, s.offset_bytes);
        }
        set->retain_until_unix_ns = s.retain_until_unix_ns;
        set->sha256 = Sha256Hex(payload);
        report.sets.push_back(Summarize(*set));
      }
    } else {
      chunk_keys.emplace(s.key, s.chunk_hash);
      report.chunk_stored_bytes += s.payload_bytes;
      Result<std::vector<std::byte>> decoded = DecodeChunk(payload, s.chunk_hash, {});
      if (!decoded.ok()) {
        AddProblem(report, &unlisted, s.offset_bytes, name + ": " + decoded.status().message());
      }
    }
    if (progress && !progress(offset, file_bytes)) return cancelled();
  }
  payload.clear();
  payload.shrink_to_fit();

  // The trailer.
  if (file_bytes - offset < kTrailerBytes) {
    const std::string where = std::to_string(offset);
    return stop(
        Status::Corruption(
            path + (file_bytes == offset
                        ? ": the 64-byte trailer at offset " + where + " is missing (truncated)"
                        : ": the file ends at offset " + std::to_string(file_bytes) +
                              ", inside the 64-byte trailer at " + where + " (truncated)")),
        offset);
  }
  uint8_t t[kTrailerBytes];
  SNAPDISK_RETURN_IF_ERROR(ReadExact(fd.get(), t, sizeof(t), offset, path));
  std::array<uint8_t, 32> recorded;
  if (Status st = CheckTrailer(t, path, offset, count, &recorded); !st.ok()) {
    AddProblem(report, &unlisted, offset, st.message());
  } else {
    const std::array<uint8_t, 32> actual = sha.Final();
    report.sha256 = Hex(recorded.data(), recorded.size());
    if (actual != recorded) {
      AddProblem(report, &unlisted, offset,
                 path + ": trailer at offset " + std::to_string(offset) + ": SHA-256 " +
                     report.sha256 + " does not match the file's " +
                     Hex(actual.data(), actual.size()));
    }
  }
  if (file_bytes > offset + kTrailerBytes) {
    AddProblem(report, &unlisted, offset + kTrailerBytes,
               path + ": " + std::to_string(file_bytes - offset - kTrailerBytes) +
                   " bytes follow the trailer (at offset " +
                   std::to_string(offset + kTrailerBytes) + ")");
  }

  // Standalone: every reference resolves inside the file.
  for (const auto& [key, by] : referenced) {
    if (!chunk_keys.contains(key)) {
      AddProblem(report, &unlisted, by.second,
                 path + ": set " + by.first + " uses chunk object '" + key +
                     "', which is not in the file");
    }
  }
  if (every_manifest_read) {
    for (const auto& [key, hash] : chunk_keys) {
      if (!referenced.contains(key)) {
        AddProblem(report, &unlisted, 0, path + ": chunk object '" + key + "' is used by no set");
      }
    }
    std::unordered_map<std::string_view, const ExportedSet*> by_id;
    for (const ExportedSet& set : report.sets) by_id.emplace(set.id, &set);
    for (const ExportedSet& set : report.sets) {
      if (!NeedsBase(set.type)) continue;
      auto it = by_id.find(set.base);
      if (it == by_id.end()) {
        AddProblem(report, &unlisted, 0,
                   path + ": set " + set.id + " is based on " + set.base +
                       ", which is not in the file: it cannot be restored from the file alone");
        continue;
      }
      const ExportedSet& base = *it->second;
      std::string why;
      if (base.volume_id != set.volume_id || base.lineage != set.lineage) {
        why = "another volume or lineage";
      } else if (set.type == BackupType::kDiff && base.type != BackupType::kFull) {
        why = "a diff's base is not a full";
      } else if (base.type != BackupType::kFull && !NeedsBase(base.type)) {
        why = "the base is not a physical backup";
      } else if (set.first_lsn != base.last_lsn + 1) {
        why = "LSNs do not follow on (first_lsn " + std::to_string(set.first_lsn) +
              ", the base's last_lsn " + std::to_string(base.last_lsn) + ")";
      }
      if (!why.empty()) {
        AddProblem(report, &unlisted, 0,
                   path + ": set " + set.id + " on its base " + base.id + ": " + why);
      }
    }
  }
  if (every_manifest_read && !set_ids.contains(header.target_id)) {
    AddProblem(report, &unlisted, 0,
               path + ": the target set " + header.target_id + " is not in the file");
  }
  if (progress && !progress(file_bytes, file_bytes)) return cancelled();
  return finish();
}

Result<std::unique_ptr<BackupExportReader>> OpenBackupExport(const std::string& path) {
  return ExportFileReader::Open(path);
}

namespace {

// Several export files read as one store: each object from the first file
// that holds it (a set in two files is the same object, by its key).
class ExportFilesStore final : public WormStore {
 public:
  explicit ExportFilesStore(std::vector<std::unique_ptr<BackupExportReader>> readers)
      : readers_(std::move(readers)) {}

  const WormStoreConfig& config() const override { return readers_.front()->store().config(); }
  int64_t NowUnixNs() const override { return RealNowUnixNs(); }
  Status Put(std::string_view key, std::span<const std::byte>, int64_t) override {
    return ReadOnly("put", key);
  }
  Result<std::vector<std::byte>> Get(std::string_view key) override {
    return First(key, [&](WormStore& s) { return s.Get(key); });
  }
  Result<std::vector<std::byte>> GetRange(std::string_view key, uint64_t offset_bytes,
                                          uint64_t length_bytes) override {
    return First(key, [&](WormStore& s) { return s.GetRange(key, offset_bytes, length_bytes); });
  }
  Result<WormObjectInfo> Head(std::string_view key) override {
    return First(key, [&](WormStore& s) { return s.Head(key); });
  }
  Result<std::vector<WormObjectInfo>> List(std::string_view prefix) override {
    std::map<std::string, WormObjectInfo> merged;
    for (auto& r : readers_) {
      SNAPDISK_ASSIGN_OR_RETURN(std::vector<WormObjectInfo> listed, r->store().List(prefix));
      for (WormObjectInfo& info : listed) merged.try_emplace(info.key, std::move(info));
    }
    std::vector<WormObjectInfo> out;
    out.reserve(merged.size());
    for (auto& [key, info] : merged) out.push_back(std::move(info));
    return out;
  }
  Status ExtendRetention(std::string_view key, int64_t) override {
    return ReadOnly("extend the retention of", key);
  }
  Status Delete(std::string_view key) override { return ReadOnly("delete", key); }
  Result<WormExpireReport> Expire() override { return ReadOnly("expire objects in", ""); }
  Result<WormVerifyReport> Verify(const WormProgress& progress) override {
    WormVerifyReport all;
    for (auto& r : readers_) {
      SNAPDISK_ASSIGN_OR_RETURN(WormVerifyReport one, r->store().Verify(progress));
      all.objects += one.objects;
      all.bytes += one.bytes;
      all.problems.insert(all.problems.end(), one.problems.begin(), one.problems.end());
    }
    return all;
  }

 private:
  template <typename Read>
  auto First(std::string_view key, const Read& read) -> decltype(read(std::declval<WormStore&>())) {
    for (auto& r : readers_) {
      auto got = read(r->store());
      if (!got.status().IsNotFound()) return got;
    }
    return Status::NotFound("no object '" + Printable(key) + "' in " + Files());
  }
  std::string Files() const {
    std::string names;
    for (const auto& r : readers_) names += (names.empty() ? "" : ", ") + r->path();
    return names;
  }
  Status ReadOnly(std::string_view what, std::string_view key) const {
    std::string msg = "cannot " + std::string(what);
    if (!key.empty()) msg += " '" + Printable(key) + "'";
    return Status::PermissionDenied(msg + ": backup export files are read-only (" + Files() + ")");
  }

  std::vector<std::unique_ptr<BackupExportReader>> readers_;
};

}  // namespace

Result<std::unique_ptr<WormStore>> OpenBackupExports(const std::vector<std::string>& paths) {
  if (paths.empty()) return Status::InvalidArgument("no export file given");
  std::vector<std::unique_ptr<BackupExportReader>> readers;
  for (const std::string& path : paths) {
    SNAPDISK_ASSIGN_OR_RETURN(std::unique_ptr<BackupExportReader> r, OpenBackupExport(path));
    readers.push_back(std::move(r));
  }
  return std::unique_ptr<WormStore>(new ExportFilesStore(std::move(readers)));
}

}  // namespace snapdisk
