// The directory backend of WormStore (contract in engine/worm_store.h).
//
// Layout of a store directory DIR:
//   DIR/store.json     config and format version; written once, read-only
//   DIR/audit.log      the history (engine/audit_log.h); line 1 chains from
//                      the SHA-256 of store.json
//   DIR/objects/<key>  one read-only file per object; '/' in keys are folders
//   DIR/tmp/<h>.tmp    a put in flight: <h> is the XXH3-128 of its key
//   DIR/.lock          flock'd while the store is open
//
// The audit log is the source of truth: open replays it into the in-memory
// index (key -> size, checksum, times); the files are checked against it.
//
// Put, and why it is crash-safe with one sync of its own and two shared:
//   1. write tmp/<h>.tmp (mode 0444 from the start) and fdatasync it;
//   2. commit, batched with concurrent puts (CommitPut): fsync tmp/ so the
//      temp files' names are durable, then append their "put" lines and
//      fdatasync the log;
//   3. rename the temp file to objects/<key>, not synced.
// A crash before 2 leaves an unlogged temp file: open deletes it, and the put
// never returned. After 2 the bytes are durable under a durable name, so open
// finishes any put whose object is missing by renaming its temp file (after
// checking size and checksum); that is also why the rename needs no sync.
// The tmp/ sync is what lets open tell a crashed put from a removed object: a
// logged put with neither file is damage, never an interrupted put, so
// recovery never hides tampering.
//
// Expire logs an "expire" line per object, unlinks the files, syncs their
// folders and then logs "expire_done"; open finishes the unlinks of any
// "expire" lines after the last "expire_done". Expire and RemoveDirStore
// first check the audit chain and refuse while it is damaged: retention read
// from an edited log must not delete anything.
#include <dirent.h>
#include <fcntl.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>
#include <xxhash.h>

#include <algorithm>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <ctime>
#include <deque>
#include <filesystem>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <set>
#include <unordered_map>
#include <unordered_set>
#include <utility>

#include "disk/clock.h"
#include "disk/unique_fd.h"
#include "engine/aligned_buffer.h"
#include "engine/audit_log.h"
#include "engine/worm_store.h"

namespace snapdisk {

namespace {

using Json = nlohmann::ordered_json;

constexpr std::string_view kFormatName = "snapdisk-worm-dir";
constexpr int kFormatVersion = 1;
constexpr size_t kMaxKeyBytes = 512;
constexpr size_t kMaxComponentBytes = 255;  // NAME_MAX: a component is a file name
constexpr size_t kMaxConfigBytes = 64 << 10;
constexpr size_t kIoChunkBytes = 1 << 20;
constexpr uint64_t kMinChunkBytes = uint64_t{64} << 10;
constexpr uint64_t kMaxChunkBytes = uint64_t{64} << 20;

// ---- Small helpers ----------------------------------------------------------


int64_t RealNowUnixNs() {
  struct timespec ts;
  ::clock_gettime(CLOCK_REALTIME, &ts);
  return static_cast<int64_t>(ts.tv_sec) * 1'000'000'000 + ts.tv_nsec;
}

// "2025-01-02T03:04:05Z" (fractions shown only when there are any).

std::string Hex128(XXH128_hash_t hash) {
  XXH128_canonical_t canonical;
  XXH128_canonicalFromHash(&canonical, hash);
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(32, '0');
  for (size_t i = 0; i < 16; ++i) {
    out[2 * i] = kDigits[canonical.digest[i] >> 4];
    out[2 * i + 1] = kDigits[canonical.digest[i] & 0xf];
  }
  return out;
}

bool ParseHex128(std::string_view hex, XXH128_hash_t* out) {
  if (hex.size() != 32) return false;
  XXH128_canonical_t canonical;
  for (size_t i = 0; i < 16; ++i) {
    int v = 0;
    for (size_t j = 0; j < 2; ++j) {
      const char c = hex[2 * i + j];
      int d;
      if (c >= '0' && c <= '9') {
        d = c - '0';
      } else if (c >= 'a' && c <= 'f') {
        d = c - 'a' + 10;
      } else {
        return false;
      }
      v = v * 16 + d;
    }
    canonical.digest[i] = static_cast<unsigned char>(v);
  }
  *out = XXH128_hashFromCanonical(&canonical);
  return true;
}

bool SameHash(XXH128_hash_t a, XXH128_hash_t b) { return XXH128_isEqual(a, b) != 0; }

// A key fit for a message even when it is not a valid key: quoted, with
// control and non-ASCII bytes escaped, and cut to a readable length.
std::string QuoteKey(std::string_view key) {
  constexpr size_t kShown = 80;
  std::string out = "\"";
  for (size_t i = 0; i < key.size() && i < kShown; ++i) {
    const unsigned char c = static_cast<unsigned char>(key[i]);
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      char esc[8];
      std::snprintf(esc, sizeof esc, "\\x%02x", c);
      out += esc;
    } else {
      out += static_cast<char>(c);
    }
  }
  if (key.size() > kShown) out += "...";
  out += '"';
  return out;
}

Status ValidateKey(std::string_view key) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument("bad key " + QuoteKey(key) + ": " + why);
  };
  if (key.empty()) return bad("empty");
  if (key.size() > kMaxKeyBytes) {
    return bad(std::to_string(key.size()) + " characters, more than " +
               std::to_string(kMaxKeyBytes));
  }
  for (char c : key) {
    const bool ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-' || c == '/';
    if (!ok) return bad("only A-Z a-z 0-9 . _ - and / are allowed");
  }
  if (key.front() == '/' || key.back() == '/') return bad("starts or ends with '/'");
  size_t start = 0;
  while (start <= key.size()) {
    size_t end = key.find('/', start);
    if (end == std::string_view::npos) end = key.size();
    const std::string_view part = key.substr(start, end - start);
    if (part.empty()) return bad("empty component ('//')");
    if (part == "." || part == "..") return bad("'.' or '..' component");
    if (part.size() > kMaxComponentBytes) {
      return bad("a component longer than " + std::to_string(kMaxComponentBytes) +
                 " characters (the directory backend stores each as a file name)");
    }
    start = end + 1;
  }
  return Status::OK();
}

Status ValidateConfig(const WormStoreConfig& config) {
  const uint64_t c = config.chunk_bytes;
  if (c < kMinChunkBytes || c > kMaxChunkBytes || (c & (c - 1)) != 0) {
    return Status::InvalidArgument("chunk_bytes " + std::to_string(c) +
                                   " is not a power of two from 64 KiB to 64 MiB");
  }
  if (config.zstd_level < 1 || config.zstd_level > 19) {
    return Status::InvalidArgument("zstd_level " + std::to_string(config.zstd_level) +
                                   " is not from 1 to 19");
  }
  return Status::OK();
}

// The same code as `status` with `note` added to its message.
Status WithNote(const Status& status, const std::string& note) {
  const std::string msg = status.message() + note;
  switch (status.code()) {
    case StatusCode::kOk:
      return Status::OK();
    case StatusCode::kNotFound:
      return Status::NotFound(msg);
    case StatusCode::kInvalidArgument:
      return Status::InvalidArgument(msg);
    case StatusCode::kCorruption:
      return Status::Corruption(msg);
    case StatusCode::kNoSpace:
      return Status::NoSpace(msg);
    case StatusCode::kBusy:
      return Status::Busy(msg);
    case StatusCode::kUnsupported:
      return Status::Unsupported(msg);
    case StatusCode::kAlreadyExists:
      return Status::AlreadyExists(msg);
    case StatusCode::kCancelled:
      return Status::Cancelled(msg);
    case StatusCode::kPermissionDenied:
      return Status::PermissionDenied(msg);
    case StatusCode::kIOError:
      break;
  }
  return Status::IOError(msg);
}

std::string NormalizeDir(const std::string& dir) {
  std::string out = dir;
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

std::string ParentDir(const std::string& path) {
  const size_t slash = path.rfind('/');
  if (slash == std::string::npos) return ".";
  if (slash == 0) return "/";
  return path.substr(0, slash);
}

Status WriteAll(int fd, const std::byte* data, size_t size_bytes, const std::string& path) {
  size_t done = 0;
  while (done < size_bytes) {
    // Bounded writes: a single write() of more than 2 GiB is short anyway.
    const size_t want = std::min<size_t>(size_bytes - done, size_t{1} << 30);
    const ssize_t n = ::write(fd, data + done, want);
    if (n < 0 && errno == EINTR) continue;
    if (n < 0)
      return Status::FromErrno(errno, "write " + path + " at offset " + std::to_string(done));
    if (n == 0) return Status::FromErrno(EIO, "write " + path + " made no progress");
    done += static_cast<size_t>(n);
  }
  return Status::OK();
}

// Reads exactly `size_bytes` at `offset_bytes`; a file that ends early is
// reported through *got_bytes, not as an error.
Status ReadAt(int fd, std::byte* out, size_t size_bytes, uint64_t offset_bytes,
              const std::string& path, size_t* got_bytes) {
  size_t done = 0;
  while (done < size_bytes) {
    const ssize_t n =
        ::pread(fd, out + done, size_bytes - done, static_cast<off_t>(offset_bytes + done));
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

Result<std::string> ReadSmallFile(const std::string& path, size_t max_bytes) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NOFOLLOW));
  if (!fd.valid()) {
    if (errno == ENOENT) return Status::NotFound(path + " does not exist");
    return Status::FromErrno(errno, "open " + path);
  }
  std::string text(max_bytes + 1, '\0');
  size_t got = 0;
  SNAPDISK_RETURN_IF_ERROR(
      ReadAt(fd.get(), reinterpret_cast<std::byte*>(text.data()), text.size(), 0, path, &got));
  if (got > max_bytes) {
    return Status::Corruption(path + " is larger than " + std::to_string(max_bytes) + " bytes");
  }
  text.resize(got);
  return text;
}

Status FsyncPath(const std::string& path) {
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!fd.valid()) return Status::FromErrno(errno, "open " + path);
  if (::fsync(fd.get()) != 0) return Status::FromErrno(errno, "fsync " + path);
  return Status::OK();
}

// Objects of at least this size are written with O_DIRECT (WriteDirect).
constexpr size_t kDirectWriteMinBytes = size_t{64} << 10;

// Writes `data` to `fd` (opened with O_DIRECT, empty) from a per-thread
// aligned buffer, padded to 4 KiB, then truncates the file to data.size().
// The bytes go from that buffer to the device: no copy into page-cache pages,
// which a profile of a full backup showed costing as much CPU as a third of
// its compression. EINVAL: the file system refused the direct write.
Status WriteDirect(int fd, std::span<const std::byte> data, const std::string& path) {
  thread_local AlignedBuffer buffer;
  const size_t padded = (data.size() + AlignedBuffer::kAlignment - 1) /
                        AlignedBuffer::kAlignment * AlignedBuffer::kAlignment;
  if (buffer.size() < padded) buffer = AlignedBuffer(padded);
  std::memcpy(buffer.data(), data.data(), data.size());
  std::memset(buffer.data() + data.size(), 0, padded - data.size());
  SNAPDISK_RETURN_IF_ERROR(WriteAll(fd, buffer.data(), padded, path));
  if (::ftruncate(fd, static_cast<off_t>(data.size())) != 0) {
    return Status::FromErrno(errno, "truncate " + path);
  }
  return Status::OK();
}

// Creates `path` read-only, writes `data` and fdatasyncs it. Mode 0444 from
// the start (the creating fd may still write) saves a chmod, and the mode is
// part of the inode the later directory sync makes durable. Large objects go
// around the page cache (WriteDirect) where the file system allows it.
Status WriteReadOnlyFile(const std::string& path, std::span<const std::byte> data, bool full_sync) {
  const bool direct = data.size() >= kDirectWriteMinBytes;
  auto create = [&](int extra_flags) {
    int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | extra_flags, 0444);
    if (fd < 0 && errno == EEXIST) {
      // A leftover of a put that failed before its log line: never logged, so
      // nothing refers to it.
      ::unlink(path.c_str());
      fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC | extra_flags, 0444);
    }
    return fd;
  };
  int raw = direct ? create(O_DIRECT) : create(0);
  bool written_direct = false;
  Status s;
  if (raw >= 0 && direct) {
    s = WriteDirect(raw, data, path);
    written_direct = s.ok();
    if (!s.ok() && s.code() == StatusCode::kInvalidArgument) {
      ::close(raw);  // no O_DIRECT here (tmpfs, some FUSE): the buffered write
      ::unlink(path.c_str());
      raw = create(0);
      s = Status::OK();
    }
  } else if (raw < 0 && direct && errno == EINVAL) {
    raw = create(0);
  }
  if (raw < 0) return Status::FromErrno(errno, "create " + path);
  UniqueFd fd(raw);
  if (s.ok() && !written_direct) s = WriteAll(fd.get(), data.data(), data.size(), path);
  if (s.ok() && (full_sync ? ::fsync(fd.get()) : ::fdatasync(fd.get())) != 0) {
    s = Status::FromErrno(errno, "sync " + path);
  }
  // After a successful sync, close has nothing left to report.
  if (!s.ok()) ::unlink(path.c_str());
  return s;
}

std::string Fields(const Json& entry) {
  const std::string text = entry.dump(-1, ' ', false, Json::error_handler_t::replace);
  return text.substr(1, text.size() - 2);  // the members, without the braces
}

struct ObjectEntry {
  uint64_t size_bytes = 0;
  XXH128_hash_t checksum{};
  int64_t created_unix_ns = 0;
  int64_t retain_until_unix_ns = 0;
};

WormObjectInfo InfoOf(const std::string& key, const ObjectEntry& e) {
  return WormObjectInfo{key, e.size_bytes, Hex128(e.checksum), e.created_unix_ns,
                        e.retain_until_unix_ns};
}

bool StartsWith(std::string_view s, std::string_view prefix) {
  return s.size() >= prefix.size() && s.substr(0, prefix.size()) == prefix;
}

// ---- The store --------------------------------------------------------------

class DirStore final : public WormStore {
 public:
  static Result<std::unique_ptr<DirStore>> Open(const std::string& dir,
                                                const DirStoreOptions& options);

  const WormStoreConfig& config() const override { return config_; }
  int64_t NowUnixNs() const override { return now_ ? now_() : RealNowUnixNs(); }

  Status Put(std::string_view key, std::span<const std::byte> data,
             int64_t retain_until_unix_ns) override;
  Result<std::vector<std::byte>> Get(std::string_view key) override;
  Result<std::vector<std::byte>> GetRange(std::string_view key, uint64_t offset_bytes,
                                          uint64_t length_bytes) override;
  Result<WormObjectInfo> Head(std::string_view key) override;
  Result<std::vector<WormObjectInfo>> List(std::string_view prefix) override;
  Status ExtendRetention(std::string_view key, int64_t retain_until_unix_ns) override;
  Status RetainAtLeast(std::span<const std::string> keys, int64_t retain_until_unix_ns) override;
  Status Delete(std::string_view key) override;
  Result<WormExpireReport> Expire() override;
  Result<WormVerifyReport> Verify(const WormProgress& progress) override;

  // RemoveDirStore's work, on a store it opened for the purpose.
  Status RemoveStore();

 private:
  struct OpenObject;
  Result<OpenObject> OpenForRead(std::string_view key);
  explicit DirStore(std::string dir, const DirStoreOptions& options)
      : dir_(std::move(dir)),
        objects_dir_(dir_ + "/objects"),
        tmp_dir_(dir_ + "/tmp"),
        log_path_(dir_ + "/audit.log"),
        config_path_(dir_ + "/store.json"),
        now_(options.now_unix_ns),
        read_only_(options.read_only) {}

  Status ReadOnlyRefusal(std::string_view what) const {
    return Status::PermissionDenied("cannot " + std::string(what) + ": store " + dir_ +
                                    " is open read-only (beside the process that holds it)");
  }

  std::string ObjectPath(std::string_view key) const {
    return objects_dir_ + "/" + std::string(key);
  }
  std::string TempPath(std::string_view key) const {
    return tmp_dir_ + "/" + Hex128(XXH3_128bits(key.data(), key.size())) + ".tmp";
  }
  Json NewEntry(std::string_view op, int64_t now_unix_ns) const {
    Json entry;
    entry["op"] = op;
    entry["time_unix_ns"] = now_unix_ns;
    return entry;
  }
  // Logs a refused attempt and returns `refusal`.
  Status Refuse(Json entry, const Status& refusal);
  Status LogOk(Json entry) {
    entry["result"] = "ok";
    return log_->Append(Fields(entry));
  }

  // Makes a put's temp file name and its "put" line durable, batched with
  // other puts (see the .cc). Call once the temp file is synced.
  Status CommitPut(std::string fields);
  void ReplayLine(uint64_t line_number, std::string_view line);
  void ReplayProblem(uint64_t line_number, const std::string& what) {
    replay_problems_.push_back({"audit.log", "line " + std::to_string(line_number) + ": " + what});
  }
  Status RecoverTempFiles();
  Status MakeParents(std::string_view key);
  Status PlaceObject(const std::string& tmp_path, std::string_view key);
  // Unlinks the files of expired objects and logs "expire_done" once they are
  // gone for good. Caller holds admin_mu_.
  Status RemoveExpiredFiles();
  // Why `key` may not be put now, or OK. Caller holds mu_.
  Status CheckNewKeyLocked(const std::string& key) const;
  // The audit log's problems now, and the head it was checked against.
  Status CheckAuditLog(std::vector<WormProblem>* problems, std::string* head_sha256);
  void CheckObject(const std::string& key, const ObjectEntry& entry, WormVerifyReport* report,
                   const std::function<bool(uint64_t)>& advance, bool* cancelled);
  Status WalkForAddedFiles(const std::map<std::string, ObjectEntry, std::less<>>& checked,
                           WormVerifyReport* report);

  const std::string dir_;
  const std::string objects_dir_;
  const std::string tmp_dir_;
  const std::string log_path_;
  const std::string config_path_;
  const std::function<int64_t()> now_;
  WormStoreConfig config_;
  std::string genesis_sha256_;  // SHA-256 of store.json as read at open
  const bool read_only_;
  UniqueFd lock_fd_;
  UniqueFd tmp_dir_fd_;
  std::unique_ptr<AuditLog> log_;
  std::vector<WormProblem> replay_problems_;  // fixed after open

  // The put commit stage (see CommitPut): a queue whose head commits for
  // everyone queued behind it.
  struct PutCommit {
    std::string fields;
    Status status;
    bool done = false;
  };
  std::mutex commit_mu_;
  std::condition_variable commit_cv_;
  std::deque<PutCommit*> commit_queue_;  // guarded by commit_mu_
  int64_t last_commit_ns_ = 0;           // guarded by commit_mu_
  // Puts past their key check that have not reached the commit stage yet.
  std::atomic<int> puts_writing_{0};

  // Serializes ExtendRetention, Expire and RemoveStore: each decides from the
  // index and then logs, and the log must show the decisions in the order
  // they were made. Put needs no part of it: it only ever adds new keys.
  std::mutex admin_mu_;
  // Guards the index below. Never held across file I/O or a log append.
  mutable std::mutex mu_;
  std::map<std::string, ObjectEntry, std::less<>> live_;
  std::set<std::string, std::less<>> tombstones_;      // expired keys: never written again
  std::set<std::string, std::less<>> pending_;         // puts in flight
  std::set<std::string, std::less<>> pending_unlink_;  // expired, file maybe still there
};

Status DirStore::Refuse(Json entry, const Status& refusal) {
  entry["result"] = StatusCodeName(refusal.code());
  entry["message"] = refusal.message();
  Status logged = log_->Append(Fields(entry));
  if (!logged.ok()) return WithNote(refusal, "; logging the refusal failed: " + logged.ToString());
  return refusal;
}

Status DirStore::CheckNewKeyLocked(const std::string& key) const {
  if (live_.count(key)) {
    return Status::AlreadyExists("object " + key + " already exists in store " + dir_ +
                                 " (a WORM object is written once)");
  }
  if (tombstones_.count(key)) {
    return Status::AlreadyExists("object " + key + " existed and expired in store " + dir_ +
                                 "; a WORM key is never written again");
  }
  if (pending_.count(key)) {
    return Status::AlreadyExists("object " + key + " is being written by another Put");
  }
  // Keys are paths here, so "a/b" and "a/b/c" cannot both exist: one would be
  // a file and a folder at once.
  auto holds = [&](std::string_view k) {
    return live_.count(k) || tombstones_.count(k) || pending_.count(k);
  };
  auto conflict = [&](std::string_view other) {
    return Status::InvalidArgument("key " + key + " conflicts with object " + std::string(other) +
                                   ": the directory backend keeps keys as paths, so no key can "
                                   "also be a folder of other keys");
  };
  for (size_t slash = key.find('/'); slash != std::string::npos; slash = key.find('/', slash + 1)) {
    const std::string_view parent = std::string_view(key).substr(0, slash);
    if (holds(parent)) return conflict(parent);
  }
  const std::string below = key + "/";
  for (const auto* set : {&tombstones_, &pending_}) {
    auto it = set->lower_bound(below);
    if (it != set->end() && StartsWith(*it, below)) return conflict(*it);
  }
  auto it = live_.lower_bound(below);
  if (it != live_.end() && StartsWith(it->first, below)) return conflict(it->first);
  return Status::OK();
}

Status DirStore::MakeParents(std::string_view key) {
  for (size_t slash = key.find('/'); slash != std::string_view::npos;
       slash = key.find('/', slash + 1)) {
    const std::string path = ObjectPath(key.substr(0, slash));
    if (::mkdir(path.c_str(), 0755) != 0 && errno != EEXIST) {
      return Status::FromErrno(errno, "mkdir " + path);
    }
  }
  return Status::OK();
}

Status DirStore::PlaceObject(const std::string& tmp_path, std::string_view key) {
  const std::string path = ObjectPath(key);
  // NOREPLACE: whatever the index says, nothing already under objects/ is
  // ever replaced. Most puts find their folder there; the first into a new
  // folder makes it and tries again.
  auto rename_once = [&]() {
    int rc = ::renameat2(AT_FDCWD, tmp_path.c_str(), AT_FDCWD, path.c_str(), RENAME_NOREPLACE);
    if (rc != 0 && errno == EINVAL) {
      // A file system without RENAME_NOREPLACE: check, then rename.
      struct stat st;
      if (::lstat(path.c_str(), &st) == 0) {
        errno = EEXIST;
        return -1;
      }
      rc = ::rename(tmp_path.c_str(), path.c_str());
    }
    return rc;
  };
  int rc = rename_once();
  if (rc != 0 && errno == ENOENT) {
    SNAPDISK_RETURN_IF_ERROR(MakeParents(key));
    rc = rename_once();
  }
  if (rc != 0) return Status::FromErrno(errno, "rename " + tmp_path + " to " + path);
  return Status::OK();
}

// ---- Open and replay -----------------------------------------------------

Result<std::unique_ptr<DirStore>> DirStore::Open(const std::string& dir_in,
                                                 const DirStoreOptions& options) {
  const std::string dir = NormalizeDir(dir_in);
  if (dir.empty()) return Status::InvalidArgument("empty store directory name");
  std::unique_ptr<DirStore> store(new DirStore(dir, options));
  struct stat st;
  if (::stat(store->config_path_.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return Status::NotFound(dir + " is not a snapdisk WORM store (no store.json)");
    }
    return Status::FromErrno(errno, "stat " + store->config_path_);
  }

  const std::string lock_path = dir + "/.lock";
  if (!options.read_only) {
    store->lock_fd_ = UniqueFd(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
    if (!store->lock_fd_.valid()) return Status::FromErrno(errno, "open " + lock_path);
    if (::flock(store->lock_fd_.get(), LOCK_EX | LOCK_NB) != 0) {
      if (errno == EWOULDBLOCK) {
        const std::string holder = DirStoreHolder(dir);
        return Status::Busy("store " + dir + " is in use by " +
                            (holder.empty() ? "another process" : holder));
      }
      return Status::FromErrno(errno, "lock " + lock_path);
    }
    // Who holds it, for the next opener's message; the lock is what counts.
    const std::string note = options.holder.substr(0, options.holder.find('\n'));
    if (::ftruncate(store->lock_fd_.get(), 0) == 0 && !note.empty()) {
      (void)!::pwrite(store->lock_fd_.get(), note.data(), note.size(), 0);
    }
  }

  SNAPDISK_ASSIGN_OR_RETURN(std::string config_text,
                            ReadSmallFile(store->config_path_, kMaxConfigBytes));
  store->genesis_sha256_ = Sha256HexOfText(config_text);
  {
    const auto j = nlohmann::json::parse(config_text, nullptr, /*allow_exceptions=*/false);
    if (j.is_discarded() || !j.is_object()) {
      return Status::Corruption(store->config_path_ + " is not a JSON object");
    }
    try {
      if (j.value("format", std::string()) != kFormatName) {
        return Status::Corruption(store->config_path_ + " is not a snapdisk WORM store config");
      }
      const int version = j.at("format_version").get<int>();
      if (version != kFormatVersion) {
        return Status::Unsupported("store " + dir + " has format version " +
                                   std::to_string(version) + "; this build reads version " +
                                   std::to_string(kFormatVersion));
      }
      store->config_.chunk_bytes = j.at("chunk_bytes").get<uint64_t>();
      store->config_.zstd_level = j.at("zstd_level").get<int>();
    } catch (const nlohmann::json::exception& e) {
      return Status::Corruption(store->config_path_ + ": " + e.what());
    }
    Status valid = ValidateConfig(store->config_);
    if (!valid.ok()) return Status::Corruption(store->config_path_ + ": " + valid.message());
  }

  DirStore* s = store.get();
  auto scan = ScanAuditLog(s->log_path_, s->genesis_sha256_, "store.json", UINT64_MAX,
                           [s](uint64_t n, std::string_view line) { s->ReplayLine(n, line); });
  if (!scan.ok()) {
    if (scan.status().IsNotFound()) {
      return Status::Corruption("store " + dir + " has no audit.log: its history is gone");
    }
    return scan.status();
  }
  if (options.read_only) return store;  // a view: nothing to recover, nothing logged
  SNAPDISK_ASSIGN_OR_RETURN(store->log_, AuditLog::Open(s->log_path_, *scan));
  if (scan->torn_bytes > 0) {
    Json entry = s->NewEntry("recover", s->NowUnixNs());
    entry["action"] = "cut a torn last line";
    entry["bytes"] = scan->torn_bytes;
    SNAPDISK_RETURN_IF_ERROR(s->LogOk(std::move(entry)));
  }

  store->tmp_dir_fd_ = UniqueFd(::open(s->tmp_dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
  if (!store->tmp_dir_fd_.valid()) {
    // The folder is part of the layout; remaking it loses nothing (a missing
    // temp file is judged below like any other).
    if (errno != ENOENT || ::mkdir(s->tmp_dir_.c_str(), 0755) != 0) {
      return Status::FromErrno(errno, "open " + s->tmp_dir_);
    }
    store->tmp_dir_fd_ = UniqueFd(::open(s->tmp_dir_.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC));
    if (!store->tmp_dir_fd_.valid()) return Status::FromErrno(errno, "open " + s->tmp_dir_);
  }
  if (::mkdir(s->objects_dir_.c_str(), 0755) != 0 && errno != EEXIST) {
    return Status::FromErrno(errno, "mkdir " + s->objects_dir_);
  }

  SNAPDISK_RETURN_IF_ERROR(s->RecoverTempFiles());
  // Finish an interrupted expiry pass only from a whole log: an "expire" line
  // slipped into a damaged one must not delete anything.
  if (scan->problems.empty() && s->replay_problems_.empty()) {
    std::lock_guard<std::mutex> admin(s->admin_mu_);
    SNAPDISK_RETURN_IF_ERROR(s->RemoveExpiredFiles());
  }
  return store;
}

void DirStore::ReplayLine(uint64_t n, std::string_view line) {
  // An empty view is a line the scan already rejected as too long.
  if (line.empty()) return;
  const auto j = nlohmann::json::parse(line, nullptr, /*allow_exceptions=*/false);
  if (j.is_discarded() || !j.is_object()) {
    ReplayProblem(n, "not valid JSON");
    return;
  }
  try {
    const std::string op = j.value("op", std::string());
    if (j.value("result", std::string()) != "ok") return;  // a refusal changes nothing
    if (op == "put") {
      const std::string key = j.at("key").get<std::string>();
      ObjectEntry e;
      e.size_bytes = j.at("size_bytes").get<uint64_t>();
      e.created_unix_ns = j.at("created_unix_ns").get<int64_t>();
      e.retain_until_unix_ns = j.at("retain_until_unix_ns").get<int64_t>();
      if (!ParseHex128(j.at("xxh3_128").get<std::string>(), &e.checksum)) {
        ReplayProblem(n, "put of " + key + " has a bad xxh3_128");
        return;
      }
      if (!ValidateKey(key).ok()) {
        ReplayProblem(n, "put of a bad key " + QuoteKey(key));
        return;
      }
      if (live_.count(key) || tombstones_.count(key)) {
        ReplayProblem(n, "a second put of " + key + " (a WORM key is written once)");
        return;
      }
      live_.emplace(key, e);
    } else if (op == "extend") {
      const std::string key = j.at("key").get<std::string>();
      const int64_t until = j.at("retain_until_unix_ns").get<int64_t>();
      auto it = live_.find(key);
      if (it == live_.end()) {
        ReplayProblem(n, "extends " + key + ", which does not exist");
      } else if (until < it->second.retain_until_unix_ns) {
        ReplayProblem(n, "shortens the retention of " + key + " (not applied)");
      } else {
        it->second.retain_until_unix_ns = until;
      }
    } else if (op == "expire") {
      const std::string key = j.at("key").get<std::string>();
      const int64_t time = j.at("time_unix_ns").get<int64_t>();
      auto it = live_.find(key);
      if (it == live_.end()) {
        ReplayProblem(n, "expires " + key + ", which does not exist");
        return;
      }
      if (it->second.retain_until_unix_ns > time) {
        ReplayProblem(n, "expires " + key + " before its retention ended at " +
                             FormatRfc3339(it->second.retain_until_unix_ns));
      }
      live_.erase(it);
      tombstones_.insert(key);
      pending_unlink_.insert(key);
    } else if (op == "expire_done") {
      pending_unlink_.clear();
    } else if (op != "create" && op != "recover" && op != "remove_store") {
      ReplayProblem(n, "unknown op " + QuoteKey(op));
    }
  } catch (const nlohmann::json::exception& e) {
    ReplayProblem(n, std::string("bad entry: ") + e.what());
  }
}

Status DirStore::RecoverTempFiles() {
  DIR* d = ::opendir(tmp_dir_.c_str());
  if (d == nullptr) return Status::FromErrno(errno, "opendir " + tmp_dir_);
  std::vector<std::string> names;
  while (struct dirent* ent = ::readdir(d)) {
    const std::string name = ent->d_name;
    if (name != "." && name != "..") names.push_back(name);
  }
  ::closedir(d);
  if (names.empty()) return Status::OK();

  // Temp files are named by key hash; the map back is built only after a
  // crash left some, so a clean open costs nothing per object.
  std::unordered_map<std::string, const std::string*> key_by_temp;
  key_by_temp.reserve(live_.size());
  for (const auto& [key, entry] : live_) {
    key_by_temp.emplace(Hex128(XXH3_128bits(key.data(), key.size())) + ".tmp", &key);
  }

  std::vector<std::string> log_lines;
  const int64_t now = NowUnixNs();
  for (const std::string& name : names) {
    const std::string path = tmp_dir_ + "/" + name;
    auto it = key_by_temp.find(name);
    std::string reason;
    if (it == key_by_temp.end()) {
      reason = "no logged put";
    } else {
      const std::string& key = *it->second;
      const ObjectEntry& entry = live_.at(key);
      struct stat st;
      if (::lstat(ObjectPath(key).c_str(), &st) == 0) {
        reason = "object " + key + " is already in place";
      } else {
        // The log says this put happened: finish it if the bytes are the ones
        // it logged.
        Result<std::string> bytes = ReadSmallFile(path, entry.size_bytes);
        if (!bytes.ok()) {
          reason = "unreadable: " + bytes.status().ToString();
        } else if (bytes->size() != entry.size_bytes ||
                   !SameHash(XXH3_128bits(bytes->data(), bytes->size()), entry.checksum)) {
          reason = "its bytes do not match the logged put of " + key;
        } else {
          SNAPDISK_RETURN_IF_ERROR(PlaceObject(path, key));
          Json line = NewEntry("recover", now);
          line["action"] = "completed put";
          line["key"] = key;
          line["result"] = "ok";
          log_lines.push_back(Fields(line));
          continue;
        }
      }
    }
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return Status::FromErrno(errno, "unlink " + path);
    }
    Json line = NewEntry("recover", now);
    line["action"] = "removed temp file";
    line["file"] = "tmp/" + name;
    line["reason"] = reason;
    line["result"] = "ok";
    log_lines.push_back(Fields(line));
  }
  if (log_lines.empty()) return Status::OK();
  return log_->Append(log_lines);
}

// ---- Operations -------------------------------------------------------------

// Group commit for puts. The head of the queue commits every put queued
// behind it with one fsync of tmp/ and one log append (one fdatasync).
// Before it does, it waits for puts that are still writing their temp files,
// but no longer than the last commit took: a commit costs about that much
// anyway, so lingering at most doubles one put's latency while it halves the
// syncs. Without the linger two threads would alternate and never share a
// sync: each would reach the commit stage while the other's sync was already
// under way.
Status DirStore::CommitPut(std::string fields) {
  constexpr int64_t kMaxLingerNs = 20'000'000;
  constexpr size_t kMaxBatch = 256;
  PutCommit me{std::move(fields), Status(), false};
  std::unique_lock<std::mutex> lock(commit_mu_);
  commit_queue_.push_back(&me);
  commit_cv_.notify_all();  // a lingering head may be waiting for this put
  while (!me.done && commit_queue_.front() != &me) commit_cv_.wait(lock);
  if (me.done) return me.status;

  using Clock = std::chrono::steady_clock;
  const auto deadline =
      Clock::now() + std::chrono::nanoseconds(std::min(last_commit_ns_, kMaxLingerNs));
  while (puts_writing_.load() > 0 && commit_queue_.size() < kMaxBatch &&
         commit_cv_.wait_until(lock, deadline) != std::cv_status::timeout) {
  }
  const size_t count = std::min(commit_queue_.size(), kMaxBatch);
  std::vector<std::string> lines;
  lines.reserve(count);
  for (size_t i = 0; i < count; ++i) lines.push_back(std::move(commit_queue_[i]->fields));
  lock.unlock();

  const auto start = Clock::now();
  // The temp files' names must be durable before the log says the puts
  // happened: recovery finds the bytes by those names.
  Status s;
  if (::fsync(tmp_dir_fd_.get()) != 0) s = Status::FromErrno(errno, "fsync " + tmp_dir_);
  if (s.ok()) s = log_->Append(lines);
  const int64_t took_ns =
      std::chrono::duration_cast<std::chrono::nanoseconds>(Clock::now() - start).count();

  lock.lock();
  last_commit_ns_ = took_ns;
  for (size_t i = 0; i < count; ++i) {
    commit_queue_.front()->status = s;
    commit_queue_.front()->done = true;
    commit_queue_.pop_front();
  }
  commit_cv_.notify_all();
  return s;
}

Status DirStore::Put(std::string_view key, std::span<const std::byte> data,
                     int64_t retain_until_unix_ns) {
  if (read_only_) return ReadOnlyRefusal("put");
  const int64_t now = NowUnixNs();
  Json entry = NewEntry("put", now);
  entry["key"] = std::string(key.substr(0, kMaxKeyBytes + 1));
  entry["size_bytes"] = data.size();
  entry["retain_until_unix_ns"] = retain_until_unix_ns;
  if (Status bad = ValidateKey(key); !bad.ok()) return Refuse(std::move(entry), bad);
  const std::string key_str(key);
  if (retain_until_unix_ns <= now) {
    return Refuse(
        std::move(entry),
        Status::InvalidArgument("retention of object " + key_str +
                                " must lie in the future: " + FormatRfc3339(retain_until_unix_ns) +
                                " is not after now (" + FormatRfc3339(now) + ")"));
  }
  {
    std::unique_lock<std::mutex> lock(mu_);
    Status refusal = CheckNewKeyLocked(key_str);
    if (!refusal.ok()) {
      lock.unlock();
      return Refuse(std::move(entry), refusal);
    }
    pending_.insert(key_str);
  }
  struct PendingGuard {
    DirStore* store;
    const std::string& key;
    bool writing = true;
    void DoneWriting() {
      if (std::exchange(writing, false)) store->puts_writing_.fetch_sub(1);
    }
    ~PendingGuard() {
      DoneWriting();
      std::lock_guard<std::mutex> lock(store->mu_);
      store->pending_.erase(key);
    }
  };
  puts_writing_.fetch_add(1);
  PendingGuard guard{this, key_str};

  const std::string object_path = ObjectPath(key);
  struct stat st;
  if (::lstat(object_path.c_str(), &st) == 0) {
    return Refuse(std::move(entry),
                  Status::AlreadyExists("object " + key_str + ": " + object_path +
                                        " exists though the store holds no such object "
                                        "(Verify reports it as added); it is never replaced"));
  }

  const XXH128_hash_t checksum = XXH3_128bits(data.data(), data.size());
  const std::string tmp_path = TempPath(key);
  SNAPDISK_RETURN_IF_ERROR(WriteReadOnlyFile(tmp_path, data, /*full_sync=*/false)
                               .WithContext("put of object " + key_str));
  entry["xxh3_128"] = Hex128(checksum);
  entry["created_unix_ns"] = now;
  entry["result"] = "ok";
  guard.DoneWriting();
  if (Status s = CommitPut(Fields(entry)); !s.ok()) {
    // A write cut back off the log means the put never happened; a broken log
    // may hold the line, and then reopening finishes the put from the temp.
    if (!log_->broken()) ::unlink(tmp_path.c_str());
    return s.WithContext("put of object " + key_str);
  }
  // Logged: the object exists whatever happens next.
  Status placed = PlaceObject(tmp_path, key);
  {
    std::lock_guard<std::mutex> lock(mu_);
    live_.emplace(key_str, ObjectEntry{data.size(), checksum, now, retain_until_unix_ns});
  }
  if (!placed.ok()) {
    return placed.WithContext("put of object " + key_str +
                              " is logged but its file is not in place (reopening the store "
                              "completes it)");
  }
  return Status::OK();
}

struct DirStore::OpenObject {
  std::string key;
  std::string path;
  ObjectEntry entry;
  UniqueFd fd;
};

// Opens a live object's file for reading and checks it is the file the log
// knows (a regular file of the logged size): NotFound for no (or an expired)
// object, Corruption for a missing, replaced or resized file.
Result<DirStore::OpenObject> DirStore::OpenForRead(std::string_view key) {
  SNAPDISK_RETURN_IF_ERROR(ValidateKey(key));
  OpenObject object;
  object.key = std::string(key);
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(object.key);
    if (it == live_.end()) {
      if (tombstones_.count(object.key)) {
        return Status::NotFound("object " + object.key +
                                " expired and was removed by the expiry pass");
      }
      return Status::NotFound("no object " + object.key + " in store " + dir_);
    }
    object.entry = it->second;
  }
  object.path = ObjectPath(key);
  object.fd = UniqueFd(::open(object.path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
  if (!object.fd.valid() && errno == ENOENT && read_only_) {
    // Beside a writer: a put is logged before its temp file is renamed.
    object.fd = UniqueFd(::open(TempPath(key).c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC));
    if (!object.fd.valid()) errno = ENOENT;
  }
  if (!object.fd.valid()) {
    const int err = errno;
    if (err == ENOENT) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!live_.count(object.key)) {
        return Status::NotFound("object " + object.key +
                                " expired and was removed by the expiry pass");
      }
      return Status::Corruption("object " + object.key + " is missing: " + object.path +
                                " does not exist");
    }
    if (err == ELOOP) {
      return Status::Corruption("object " + object.key +
                                " was replaced by a symbolic link: " + object.path);
    }
    return Status::FromErrno(err, "open object " + object.key + " (" + object.path + ")");
  }
  struct stat st;
  if (::fstat(object.fd.get(), &st) != 0) return Status::FromErrno(errno, "stat " + object.path);
  if (!S_ISREG(st.st_mode) || static_cast<uint64_t>(st.st_size) != object.entry.size_bytes) {
    return Status::Corruption("object " + object.key + " is " + std::to_string(st.st_size) +
                              " bytes on disk, expected " +
                              std::to_string(object.entry.size_bytes) + " (" + object.path + ")");
  }
  return object;
}

Result<std::vector<std::byte>> DirStore::Get(std::string_view key) {
  SNAPDISK_ASSIGN_OR_RETURN(OpenObject object, OpenForRead(key));
  const ObjectEntry& entry = object.entry;
  std::vector<std::byte> data(entry.size_bytes);
  size_t got = 0;
  SNAPDISK_RETURN_IF_ERROR(
      ReadAt(object.fd.get(), data.data(), data.size(), 0, object.path, &got));
  if (got != entry.size_bytes) {
    return Status::Corruption("object " + object.key + " ended after " + std::to_string(got) +
                              " of " + std::to_string(entry.size_bytes) + " bytes (" +
                              object.path + ")");
  }
  const XXH128_hash_t sum = XXH3_128bits(data.data(), data.size());
  if (!SameHash(sum, entry.checksum)) {
    return Status::Corruption("object " + object.key + " failed its checksum: xxh3-128 " +
                              Hex128(sum) + ", expected " + Hex128(entry.checksum) + " (" +
                              object.path + ")");
  }
  return data;
}

Result<std::vector<std::byte>> DirStore::GetRange(std::string_view key, uint64_t offset_bytes,
                                                  uint64_t length_bytes) {
  SNAPDISK_ASSIGN_OR_RETURN(OpenObject object, OpenForRead(key));
  SNAPDISK_RETURN_IF_ERROR(CheckGetRange(object.key, object.entry.size_bytes, offset_bytes,
                                      length_bytes));
  std::vector<std::byte> data(length_bytes);
  size_t got = 0;
  SNAPDISK_RETURN_IF_ERROR(
      ReadAt(object.fd.get(), data.data(), data.size(), offset_bytes, object.path, &got));
  if (got != length_bytes) {
    return Status::Corruption("object " + object.key + " ended early: read " +
                              std::to_string(got) + " of " + std::to_string(length_bytes) +
                              " bytes at offset " + std::to_string(offset_bytes) + " (" +
                              object.path + ")");
  }
  return data;
}

Result<WormObjectInfo> DirStore::Head(std::string_view key) {
  SNAPDISK_RETURN_IF_ERROR(ValidateKey(key));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(key);
  if (it == live_.end()) {
    if (tombstones_.count(key)) {
      return Status::NotFound("object " + std::string(key) +
                              " expired and was removed by the expiry pass");
    }
    return Status::NotFound("no object " + std::string(key) + " in store " + dir_);
  }
  return InfoOf(it->first, it->second);
}

Result<std::vector<WormObjectInfo>> DirStore::List(std::string_view prefix) {
  std::vector<WormObjectInfo> out;
  std::lock_guard<std::mutex> lock(mu_);
  for (auto it = live_.lower_bound(prefix); it != live_.end() && StartsWith(it->first, prefix);
       ++it) {
    out.push_back(InfoOf(it->first, it->second));
  }
  return out;
}

Status DirStore::ExtendRetention(std::string_view key, int64_t retain_until_unix_ns) {
  if (read_only_) return ReadOnlyRefusal("extend retention");
  std::lock_guard<std::mutex> admin(admin_mu_);
  const int64_t now = NowUnixNs();
  Json entry = NewEntry("extend", now);
  entry["key"] = std::string(key.substr(0, kMaxKeyBytes + 1));
  entry["retain_until_unix_ns"] = retain_until_unix_ns;
  if (Status bad = ValidateKey(key); !bad.ok()) return Refuse(std::move(entry), bad);
  const std::string key_str(key);
  ObjectEntry current;
  {
    std::unique_lock<std::mutex> lock(mu_);
    auto it = live_.find(key_str);
    if (it == live_.end()) {
      const bool expired = tombstones_.count(key_str) > 0;
      lock.unlock();
      return Refuse(std::move(entry),
                    Status::NotFound(expired ? "object " + key_str +
                                                   " expired and was removed by the expiry pass"
                                             : "no object " + key_str + " in store " + dir_));
    }
    current = it->second;
  }
  entry["previous_retain_until_unix_ns"] = current.retain_until_unix_ns;
  if (retain_until_unix_ns < current.retain_until_unix_ns) {
    return Refuse(
        std::move(entry),
        Status::PermissionDenied(
            "retention of object " + key_str + " cannot be shortened: it is locked until " +
            FormatRfc3339(current.retain_until_unix_ns) + " (retain_until_unix_ns " +
            std::to_string(current.retain_until_unix_ns) + "), and " +
            FormatRfc3339(retain_until_unix_ns) + " is earlier"));
  }
  if (retain_until_unix_ns <= now) {
    return Refuse(
        std::move(entry),
        Status::InvalidArgument("retention of object " + key_str +
                                " must lie in the future: " + FormatRfc3339(retain_until_unix_ns) +
                                " is not after now (" + FormatRfc3339(now) + ")"));
  }
  SNAPDISK_RETURN_IF_ERROR(
      LogOk(std::move(entry)).WithContext("extend retention of object " + key_str));
  std::lock_guard<std::mutex> lock(mu_);
  auto it = live_.find(key_str);
  SNAPDISK_CHECK(it != live_.end(), "object vanished while admin_mu_ was held");
  it->second.retain_until_unix_ns = retain_until_unix_ns;
  return Status::OK();
}

Status DirStore::RetainAtLeast(std::span<const std::string> keys, int64_t retain_until_unix_ns) {
  if (read_only_) return ReadOnlyRefusal("extend retention");
  std::lock_guard<std::mutex> admin(admin_mu_);
  const int64_t now = NowUnixNs();
  if (retain_until_unix_ns <= now) {
    return Status::InvalidArgument("retention must lie in the future: " +
                                   FormatRfc3339(retain_until_unix_ns) + " is not after now (" +
                                   FormatRfc3339(now) + ")");
  }
  // Decide for the whole batch first (nothing changes on a missing key), then
  // log every extension with one append, then apply: the order of
  // ExtendRetention, under the same lock.
  std::vector<std::string> lines;
  std::vector<const std::string*> extended;
  std::unordered_set<std::string_view> decided;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const std::string& key : keys) {
      auto it = live_.find(key);
      if (it == live_.end()) {
        return Status::NotFound(tombstones_.count(key)
                                    ? "object " + key + " expired and was removed by the expiry pass"
                                    : "no object " + key + " in store " + dir_);
      }
      if (it->second.retain_until_unix_ns >= retain_until_unix_ns) continue;
      if (!decided.insert(key).second) continue;  // listed twice
      Json entry = NewEntry("extend", now);
      entry["key"] = key;
      entry["retain_until_unix_ns"] = retain_until_unix_ns;
      entry["previous_retain_until_unix_ns"] = it->second.retain_until_unix_ns;
      entry["result"] = "ok";
      lines.push_back(Fields(entry));
      extended.push_back(&key);
    }
  }
  if (lines.empty()) return Status::OK();
  SNAPDISK_RETURN_IF_ERROR(log_->Append(lines).WithContext(
      "extend retention of " + std::to_string(lines.size()) + " objects"));
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string* key : extended) {
    auto it = live_.find(*key);
    SNAPDISK_CHECK(it != live_.end(), "object vanished while admin_mu_ was held");
    it->second.retain_until_unix_ns = std::max(it->second.retain_until_unix_ns, retain_until_unix_ns);
  }
  return Status::OK();
}

Status DirStore::Delete(std::string_view key) {
  if (read_only_) return ReadOnlyRefusal("delete");
  const int64_t now = NowUnixNs();
  Json entry = NewEntry("delete", now);
  entry["key"] = std::string(key.substr(0, kMaxKeyBytes + 1));
  if (Status bad = ValidateKey(key); !bad.ok()) return Refuse(std::move(entry), bad);
  const std::string key_str(key);
  Status refusal;
  {
    std::lock_guard<std::mutex> lock(mu_);
    auto it = live_.find(key_str);
    if (it != live_.end() && now < it->second.retain_until_unix_ns) {
      refusal = Status::PermissionDenied("object " + key_str + " is locked until " +
                                         FormatRfc3339(it->second.retain_until_unix_ns) +
                                         "; nothing deletes it before then");
    } else if (it != live_.end()) {
      refusal = Status::InvalidArgument("object " + key_str + ": its retention ended at " +
                                        FormatRfc3339(it->second.retain_until_unix_ns) +
                                        "; it is removed by the expiry pass only");
    } else if (tombstones_.count(key_str)) {
      refusal =
          Status::NotFound("object " + key_str + " expired and was removed by the expiry pass");
    } else {
      refusal = Status::NotFound("no object " + key_str + " in store " + dir_);
    }
  }
  return Refuse(std::move(entry), refusal);
}

Status DirStore::RemoveExpiredFiles() {
  std::vector<std::string> keys;
  {
    std::lock_guard<std::mutex> lock(mu_);
    keys.assign(pending_unlink_.begin(), pending_unlink_.end());
  }
  if (keys.empty()) return Status::OK();
  std::set<std::string> dirs;
  for (const std::string& key : keys) {
    const std::string path = ObjectPath(key);
    if (::unlink(path.c_str()) != 0 && errno != ENOENT) {
      return Status::FromErrno(errno, "unlink expired object " + key + " (" + path + ")");
    }
    dirs.insert(ParentDir(path));
  }
  // The removals must be durable before "expire_done" says so; otherwise a
  // crash could bring back files the log no longer asks open to remove.
  for (const std::string& d : dirs) SNAPDISK_RETURN_IF_ERROR(FsyncPath(d));
  Json entry = NewEntry("expire_done", NowUnixNs());
  entry["objects"] = keys.size();
  SNAPDISK_RETURN_IF_ERROR(LogOk(std::move(entry)));
  std::lock_guard<std::mutex> lock(mu_);
  for (const std::string& key : keys) pending_unlink_.erase(key);
  return Status::OK();
}

Result<WormExpireReport> DirStore::Expire() {
  if (read_only_) return ReadOnlyRefusal("run the expiry pass");
  std::lock_guard<std::mutex> admin(admin_mu_);
  // The index came from the log; if the log has been tampered with, what it
  // says about retention cannot be trusted to delete anything.
  std::vector<WormProblem> problems;
  std::string head;
  SNAPDISK_RETURN_IF_ERROR(CheckAuditLog(&problems, &head));
  const int64_t now = NowUnixNs();
  if (!problems.empty()) {
    return Refuse(NewEntry("expire_pass", now),
                  Status::Corruption("store " + dir_ + ": the audit log is damaged (" +
                                     problems.front().what + (problems.size() > 1 ? ", ..." : "") +
                                     "); the expiry pass removes nothing until Verify is clean"));
  }
  std::vector<std::pair<std::string, ObjectEntry>> expired;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, entry] : live_) {
      if (entry.retain_until_unix_ns <= now) expired.emplace_back(key, entry);
    }
  }
  WormExpireReport report;
  if (!expired.empty()) {
    std::vector<std::string> lines;
    lines.reserve(expired.size());
    for (const auto& [key, entry] : expired) {
      Json line = NewEntry("expire", now);
      line["key"] = key;
      line["size_bytes"] = entry.size_bytes;
      line["retain_until_unix_ns"] = entry.retain_until_unix_ns;
      line["result"] = "ok";
      lines.push_back(Fields(line));
    }
    SNAPDISK_RETURN_IF_ERROR(log_->Append(lines).WithContext("expiry pass of store " + dir_));
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, entry] : expired) {
      live_.erase(key);
      tombstones_.insert(key);
      pending_unlink_.insert(key);
      ++report.objects;
      report.bytes += entry.size_bytes;
    }
  }
  SNAPDISK_RETURN_IF_ERROR(RemoveExpiredFiles());
  return report;
}

// ---- Verify -----------------------------------------------------------------

Status DirStore::CheckAuditLog(std::vector<WormProblem>* problems, std::string* head_sha256) {
  SNAPDISK_ASSIGN_OR_RETURN(AuditLog::Head head, log_->Snapshot());
  *head_sha256 = head.sha256;
  auto add = [&](std::string what) { problems->push_back({"audit.log", std::move(what)}); };
  // The chain starts at store.json as it is now, so an edited config shows.
  std::string genesis = genesis_sha256_;
  Result<std::string> config_text = ReadSmallFile(config_path_, kMaxConfigBytes);
  if (config_text.ok()) {
    genesis = Sha256HexOfText(*config_text);
  } else {
    add("store.json: " + config_text.status().ToString());
  }
  Result<AuditLogScan> scan = ScanAuditLog(log_path_, genesis, "store.json", head.file_size_bytes);
  if (!scan.ok()) {
    if (!scan.status().IsNotFound()) return scan.status();
    add("audit.log is missing");
  } else {
    for (const AuditLogProblem& p : scan->problems) add(p.what);
    if (scan->torn_bytes > 0) {
      add("line " + std::to_string(scan->lines + 1) + ": " + std::to_string(scan->torn_bytes) +
          " bytes without an end of line (cut short, or added by hand)");
    }
    if (scan->head_sha256 != head.sha256) {
      if (scan->lines < head.lines) {
        add("the log ends at line " + std::to_string(scan->lines) + " but the store wrote " +
            std::to_string(head.lines) + " lines (lines removed)");
      } else if (scan->lines > head.lines) {
        add("lines " + std::to_string(head.lines + 1) + " to " + std::to_string(scan->lines) +
            " were not written by the store (lines added)");
      } else {
        add("line " + std::to_string(scan->lines) +
            " does not match the last line the store wrote (edited)");
      }
    }
  }
  problems->insert(problems->end(), replay_problems_.begin(), replay_problems_.end());
  return Status::OK();
}

void DirStore::CheckObject(const std::string& key, const ObjectEntry& entry,
                           WormVerifyReport* report, const std::function<bool(uint64_t)>& advance,
                           bool* cancelled) {
  auto problem = [&](std::string what) { report->problems.push_back({key, std::move(what)}); };
  const std::string path = ObjectPath(key);
  ++report->objects;
  UniqueFd fd(::open(path.c_str(), O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NONBLOCK));
  if (!fd.valid()) {
    const int err = errno;
    if (err == ENOENT) {
      std::lock_guard<std::mutex> lock(mu_);
      if (!live_.count(key)) return;  // the expiry pass took it meanwhile
      problem("removed (" + path + " does not exist)");
    } else if (err == ELOOP) {
      problem("replaced by a symbolic link (" + path + ")");
    } else {
      problem(std::string("unreadable: ") + std::strerror(err) + " (" + path + ")");
    }
    *cancelled = !advance(entry.size_bytes);
    return;
  }
  struct stat st;
  if (::fstat(fd.get(), &st) != 0 || !S_ISREG(st.st_mode)) {
    problem("replaced by something that is not a file (" + path + ")");
    *cancelled = !advance(entry.size_bytes);
    return;
  }
  if ((st.st_mode & 0222) != 0) {
    char mode[16];
    std::snprintf(mode, sizeof mode, "%04o", static_cast<unsigned>(st.st_mode & 07777));
    problem(std::string("no longer read-only (mode ") + mode + ")");
  }
  const uint64_t size_bytes = static_cast<uint64_t>(st.st_size);
  if (size_bytes != entry.size_bytes) {
    problem(std::string(size_bytes < entry.size_bytes ? "truncated" : "grown") + " (" +
            std::to_string(size_bytes) + " bytes, expected " + std::to_string(entry.size_bytes) +
            ")");
    *cancelled = !advance(entry.size_bytes);
    return;
  }
  std::unique_ptr<XXH3_state_t, decltype(&XXH3_freeState)> state(XXH3_createState(),
                                                                 &XXH3_freeState);
  SNAPDISK_CHECK(state != nullptr, "XXH3_createState failed");
  XXH3_128bits_reset(state.get());
  std::vector<std::byte> buffer(
      std::min<uint64_t>(kIoChunkBytes, std::max<uint64_t>(size_bytes, 1)));
  uint64_t offset = 0;
  while (offset < size_bytes) {
    const size_t want = static_cast<size_t>(std::min<uint64_t>(buffer.size(), size_bytes - offset));
    size_t got = 0;
    Status read = ReadAt(fd.get(), buffer.data(), want, offset, path, &got);
    if (!read.ok() || got != want) {
      problem(read.ok() ? "truncated while being read (at " + std::to_string(offset + got) + ")"
                        : "unreadable: " + read.ToString());
      *cancelled = !advance(size_bytes - offset);
      return;
    }
    XXH3_128bits_update(state.get(), buffer.data(), got);
    offset += got;
    report->bytes += got;
    if (!advance(got)) {
      *cancelled = true;
      return;
    }
  }
  const XXH128_hash_t sum = XXH3_128bits_digest(state.get());
  if (!SameHash(sum, entry.checksum)) {
    problem("rewritten (xxh3-128 " + Hex128(sum) + ", expected " + Hex128(entry.checksum) + ")");
  }
}

Status DirStore::WalkForAddedFiles(const std::map<std::string, ObjectEntry, std::less<>>& checked,
                                   WormVerifyReport* report) {
  namespace fs = std::filesystem;
  std::error_code ec;
  fs::recursive_directory_iterator it(objects_dir_, fs::directory_options::none, ec);
  if (ec) {
    report->problems.push_back({"objects/", "unreadable: " + ec.message()});
    return Status::OK();
  }
  const fs::path root(objects_dir_);
  for (; it != fs::recursive_directory_iterator(); it.increment(ec)) {
    if (ec) {
      report->problems.push_back({"objects/", "walk failed: " + ec.message()});
      return Status::OK();
    }
    const fs::file_status status = it->symlink_status(ec);
    if (ec) continue;  // gone meanwhile
    if (fs::is_directory(status)) continue;
    const std::string key = it->path().lexically_relative(root).generic_string();
    if (checked.count(key)) continue;
    bool tombstoned = false;
    {
      std::lock_guard<std::mutex> lock(mu_);
      // Put or expired after the snapshot the check used: not a stranger.
      if (live_.count(key) || pending_.count(key) || pending_unlink_.count(key)) continue;
      tombstoned = tombstones_.count(key) > 0;
    }
    std::string what = "added";
    if (!fs::is_regular_file(status)) {
      what += " (not a regular file)";
    } else {
      const auto size_bytes = fs::file_size(it->path(), ec);
      if (!ec) what += " (" + std::to_string(size_bytes) + " bytes)";
    }
    if (tombstoned) what += ": this object expired and was removed, and is back";
    report->problems.push_back({key, what});
  }
  return Status::OK();
}

Result<WormVerifyReport> DirStore::Verify(const WormProgress& progress) {
  if (read_only_) return ReadOnlyRefusal("verify");
  WormVerifyReport report;
  SNAPDISK_RETURN_IF_ERROR(CheckAuditLog(&report.problems, &report.head_sha256));
  std::map<std::string, ObjectEntry, std::less<>> snapshot;
  {
    std::lock_guard<std::mutex> lock(mu_);
    snapshot = live_;
  }
  uint64_t total_bytes = 0;
  for (const auto& [key, entry] : snapshot) total_bytes += entry.size_bytes;
  uint64_t done_bytes = 0;
  auto advance = [&](uint64_t bytes) {
    done_bytes += bytes;
    return !progress || progress(done_bytes, total_bytes);
  };
  if (!advance(0)) return Status::Cancelled("verify of store " + dir_ + " cancelled");
  bool cancelled = false;
  for (const auto& [key, entry] : snapshot) {
    CheckObject(key, entry, &report, advance, &cancelled);
    if (cancelled) return Status::Cancelled("verify of store " + dir_ + " cancelled");
  }
  SNAPDISK_RETURN_IF_ERROR(WalkForAddedFiles(snapshot, &report));
  return report;
}

// ---- Removing the store -------------------------------------------------

Status DirStore::RemoveStore() {
  if (read_only_) return ReadOnlyRefusal("remove the store");
  std::lock_guard<std::mutex> admin(admin_mu_);
  std::vector<WormProblem> problems;
  std::string head;
  SNAPDISK_RETURN_IF_ERROR(CheckAuditLog(&problems, &head));
  const int64_t now = NowUnixNs();
  Json entry = NewEntry("remove_store", now);
  if (!problems.empty()) {
    return Refuse(std::move(entry),
                  Status::Corruption(
                      "store " + dir_ + ": the audit log is damaged (" + problems.front().what +
                      "); a store whose retention cannot be trusted is not removed"));
  }
  uint64_t locked = 0;
  int64_t latest_unix_ns = 0;
  std::string latest_key;
  {
    std::lock_guard<std::mutex> lock(mu_);
    for (const auto& [key, e] : live_) {
      if (e.retain_until_unix_ns <= now) continue;
      ++locked;
      if (e.retain_until_unix_ns > latest_unix_ns) {
        latest_unix_ns = e.retain_until_unix_ns;
        latest_key = key;
      }
    }
  }
  if (locked > 0) {
    entry["locked_objects"] = locked;
    return Refuse(
        std::move(entry),
        Status::PermissionDenied("store " + dir_ + " holds " + std::to_string(locked) +
                                 (locked == 1 ? " object" : " objects") +
                                 " under retention; the latest is locked until " +
                                 FormatRfc3339(latest_unix_ns) + " (object " + latest_key + ")"));
  }
  SNAPDISK_RETURN_IF_ERROR(LogOk(std::move(entry)));
  // Rename first so that a failure half way leaves no half-store behind the
  // store's name.
  static std::atomic<uint64_t> counter{0};
  const std::string doomed =
      dir_ + ".removing-" + std::to_string(::getpid()) + "-" + std::to_string(counter++);
  if (::rename(dir_.c_str(), doomed.c_str()) != 0) {
    return Status::FromErrno(errno, "rename " + dir_ + " to " + doomed);
  }
  std::error_code ec;
  std::filesystem::remove_all(doomed, ec);
  if (ec) return Status::FromErrno(ec.value(), "remove " + doomed);
  return Status::OK();
}

}  // namespace

// ---- Public entry points ---------------------------------------------------

Status CreateDirStore(const std::string& dir_in, const WormStoreConfig& config) {
  const std::string dir = NormalizeDir(dir_in);
  if (dir.empty()) return Status::InvalidArgument("empty store directory name");
  SNAPDISK_RETURN_IF_ERROR(ValidateConfig(config).WithContext("create store " + dir));
  struct stat st;
  if (::stat(dir.c_str(), &st) == 0) {
    if (!S_ISDIR(st.st_mode)) {
      return Status::AlreadyExists(dir + " exists and is not a directory");
    }
    if (::access((dir + "/store.json").c_str(), F_OK) == 0) {
      return Status::AlreadyExists(dir + " already holds a WORM store");
    }
    std::error_code ec;
    if (!std::filesystem::is_empty(dir, ec) || ec) {
      return Status::InvalidArgument("cannot make " + dir + " a store: it is not empty");
    }
  } else if (errno != ENOENT) {
    return Status::FromErrno(errno, "stat " + dir);
  }

  // Build the store beside its final name and rename it into place, so that
  // `dir` is either no store or a whole one (rename replaces an empty
  // directory atomically and refuses a non-empty one).
  const std::string parent = ParentDir(dir);
  std::error_code ec;
  std::filesystem::create_directories(parent, ec);
  if (ec) return Status::FromErrno(ec.value(), "create " + parent);
  static std::atomic<uint64_t> counter{0};
  const std::string base = dir.substr(dir.rfind('/') == std::string::npos ? 0 : dir.rfind('/') + 1);
  const std::string staging = parent + "/." + base + ".creating-" + std::to_string(::getpid()) +
                              "-" + std::to_string(counter++);
  if (::mkdir(staging.c_str(), 0755) != 0) return Status::FromErrno(errno, "mkdir " + staging);
  auto build = [&]() -> Status {
    for (const char* sub : {"/objects", "/tmp"}) {
      const std::string path = staging + sub;
      if (::mkdir(path.c_str(), 0755) != 0) return Status::FromErrno(errno, "mkdir " + path);
    }
    const int64_t now = RealNowUnixNs();
    Json config_json;
    config_json["format"] = kFormatName;
    config_json["format_version"] = kFormatVersion;
    config_json["chunk_bytes"] = config.chunk_bytes;
    config_json["zstd_level"] = config.zstd_level;
    config_json["created_unix_ns"] = now;
    const std::string text = config_json.dump(2) + "\n";
    SNAPDISK_RETURN_IF_ERROR(WriteReadOnlyFile(
        staging + "/store.json",
        std::span<const std::byte>(reinterpret_cast<const std::byte*>(text.data()), text.size()),
        /*full_sync=*/true));
    SNAPDISK_ASSIGN_OR_RETURN(auto log,
                              AuditLog::Create(staging + "/audit.log", Sha256HexOfText(text)));
    Json entry;
    entry["op"] = "create";
    entry["time_unix_ns"] = now;
    entry["format_version"] = kFormatVersion;
    entry["chunk_bytes"] = config.chunk_bytes;
    entry["zstd_level"] = config.zstd_level;
    entry["result"] = "ok";
    SNAPDISK_RETURN_IF_ERROR(log->Append(Fields(entry)));
    return FsyncPath(staging);
  };
  Status built = build();
  if (built.ok() && ::rename(staging.c_str(), dir.c_str()) != 0) {
    const int err = errno;
    built = (err == ENOTEMPTY || err == EEXIST)
                ? Status::AlreadyExists("cannot make " + dir + " a store: it is no longer empty")
                : Status::FromErrno(err, "rename " + staging + " to " + dir);
  }
  if (!built.ok()) {
    std::filesystem::remove_all(staging, ec);
    return built;
  }
  return FsyncPath(parent);
}

Result<std::unique_ptr<WormStore>> OpenDirStore(const std::string& dir,
                                                const DirStoreOptions& options) {
  SNAPDISK_ASSIGN_OR_RETURN(std::unique_ptr<DirStore> store, DirStore::Open(dir, options));
  return std::unique_ptr<WormStore>(std::move(store));
}

std::string DirStoreHolder(const std::string& dir) {
  Result<std::string> note = ReadSmallFile(NormalizeDir(dir) + "/.lock", 1024);
  if (!note.ok()) return "";
  std::string text = std::move(note).value();
  return text.substr(0, text.find('\n'));
}

Status RemoveDirStore(const std::string& dir, const DirStoreOptions& options) {
  SNAPDISK_ASSIGN_OR_RETURN(std::unique_ptr<DirStore> store, DirStore::Open(dir, options));
  return store->RemoveStore();
}

}  // namespace snapdisk
