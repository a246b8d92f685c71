#include "engine/audit_log.h"

#include <fcntl.h>
#include <openssl/evp.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>

namespace snapdisk {

namespace {

constexpr std::string_view kSeqPrefix = "{\"seq\":";
constexpr std::string_view kPrevKey = ",\"prev_sha256\":\"";
constexpr size_t kShaHexBytes = 64;
// Lines the store writes stay under 2 KiB (keys are at most 512 bytes); a
// longer line is damage, and keeping it whole would let a bad file decide how
// much memory the scan takes.
constexpr size_t kMaxLineBytes = 64 << 10;
constexpr size_t kReadBytes = 1 << 20;

std::string HexOf(const unsigned char* bytes, size_t count) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out(count * 2, '0');
  for (size_t i = 0; i < count; ++i) {
    out[2 * i] = kDigits[bytes[i] >> 4];
    out[2 * i + 1] = kDigits[bytes[i] & 0xf];
  }
  return out;
}

bool IsLowerHex(std::string_view s) {
  return std::all_of(s.begin(), s.end(),
                     [](char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); });
}

struct MdCtxDeleter {
  void operator()(EVP_MD_CTX* ctx) const { EVP_MD_CTX_free(ctx); }
};
using MdCtx = std::unique_ptr<EVP_MD_CTX, MdCtxDeleter>;

// Pulls seq and prev_sha256 out of a line by position: the writer puts seq
// first and prev_sha256 last, so the chain check needs no JSON parse (Verify
// reads the whole log, and a parse costs more than the hash).
bool SplitLine(std::string_view line, uint64_t* seq, std::string_view* prev) {
  const size_t tail_bytes = kPrevKey.size() + kShaHexBytes + 2;
  if (line.size() < kSeqPrefix.size() + 1 + tail_bytes) return false;
  if (line.substr(0, kSeqPrefix.size()) != kSeqPrefix) return false;
  size_t pos = kSeqPrefix.size();
  uint64_t value = 0;
  size_t digits = 0;
  while (pos < line.size() && line[pos] >= '0' && line[pos] <= '9' && digits < 19) {
    value = value * 10 + static_cast<uint64_t>(line[pos] - '0');
    ++pos;
    ++digits;
  }
  if (digits == 0 || pos >= line.size() || line[pos] != ',') return false;
  std::string_view tail = line.substr(line.size() - tail_bytes);
  if (tail.substr(0, kPrevKey.size()) != kPrevKey || tail.substr(tail.size() - 2) != "\"}") {
    return false;
  }
  *prev = tail.substr(kPrevKey.size(), kShaHexBytes);
  if (!IsLowerHex(*prev)) return false;
  *seq = value;
  return true;
}

}  // namespace

std::string Sha256HexOfText(std::string_view bytes) {
  unsigned char digest[EVP_MAX_MD_SIZE];
  unsigned int digest_bytes = 0;
  const int ok =
      EVP_Digest(bytes.data(), bytes.size(), digest, &digest_bytes, EVP_sha256(), nullptr);
  SNAPDISK_CHECK(ok == 1 && digest_bytes == 32, "EVP_Digest(SHA-256) failed");
  return HexOf(digest, digest_bytes);
}

Status GroupSync::SyncThrough(uint64_t ticket) {
  std::unique_lock<std::mutex> lock(mu_);
  while (synced_ < ticket) {
    if (!failure_.ok()) return failure_;
    if (syncing_) {
      // Someone is syncing; if its sync began before our change was noted it
      // does not cover us, and the loop goes round for the next one.
      cv_.wait(lock);
      continue;
    }
    syncing_ = true;
    // Every change noted by now is complete, so this sync covers them all.
    const uint64_t target = noted_.load(std::memory_order_acquire);
    lock.unlock();
    const int rc = data_only_ ? ::fdatasync(fd_) : ::fsync(fd_);
    const int err = errno;
    syncs_.fetch_add(1, std::memory_order_relaxed);
    lock.lock();
    syncing_ = false;
    if (rc != 0) {
      failure_ = Status::FromErrno(err, (data_only_ ? "fdatasync " : "fsync ") + what_);
    } else {
      synced_ = std::max(synced_, target);
    }
    cv_.notify_all();
  }
  return Status::OK();
}

Result<AuditLogScan> ScanAuditLog(const std::string& path, std::string_view genesis_sha256,
                                  std::string_view genesis_name, uint64_t limit_bytes,
                                  const AuditLineFn& on_line) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound(path + " does not exist");
    return Status::FromErrno(errno, "open " + path);
  }
  struct FdCloser {
    int fd;
    ~FdCloser() { ::close(fd); }
  } closer{fd};

  AuditLogScan scan;
  scan.head_sha256 = std::string(genesis_sha256);
  MdCtx ctx(EVP_MD_CTX_new());
  SNAPDISK_CHECK(ctx != nullptr, "EVP_MD_CTX_new failed");
  SNAPDISK_CHECK(EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1, "SHA-256 init");

  std::string line;         // the current line, up to kMaxLineBytes
  uint64_t line_bytes = 0;  // its full length
  uint64_t expected_seq = 1;
  std::vector<char> buffer(kReadBytes);
  uint64_t offset = 0;

  auto finish_line = [&]() {
    ++scan.lines;
    const uint64_t n = scan.lines;
    unsigned char digest[EVP_MAX_MD_SIZE];
    unsigned int digest_bytes = 0;
    SNAPDISK_CHECK(EVP_DigestFinal_ex(ctx.get(), digest, &digest_bytes) == 1, "SHA-256 final");
    SNAPDISK_CHECK(EVP_DigestInit_ex(ctx.get(), EVP_sha256(), nullptr) == 1, "SHA-256 init");
    const std::string sha = HexOf(digest, digest_bytes);
    const std::string prefix = "line " + std::to_string(n) + ": ";
    const std::string before = n == 1 ? std::string(genesis_name) : "line " + std::to_string(n - 1);

    uint64_t seq = 0;
    std::string_view prev;
    if (line_bytes > kMaxLineBytes) {
      scan.problems.push_back({n, prefix + "longer than " + std::to_string(kMaxLineBytes) +
                                      " bytes (" + std::to_string(line_bytes) +
                                      "): not an audit entry"});
    } else if (!SplitLine(line, &seq, &prev)) {
      scan.problems.push_back({n, prefix + "not an audit entry (edited, or inserted by hand)"});
    } else {
      const bool seq_ok = seq == expected_seq;
      const bool prev_ok = prev == scan.head_sha256;
      if (!seq_ok || !prev_ok) {
        std::string what = prefix;
        if (!seq_ok) {
          what += "seq " + std::to_string(seq) + " where " + std::to_string(expected_seq) +
                  " was expected";
          if (!prev_ok) what += ", and ";
        }
        if (!prev_ok) what += "prev_sha256 does not match the SHA-256 of " + before;
        if (seq > expected_seq) {
          const uint64_t gap = seq - expected_seq;
          what += " (" + std::to_string(gap) + (gap == 1 ? " line" : " lines") +
                  " removed before line " + std::to_string(n) + ")";
        } else if (!seq_ok) {
          what += " (a line inserted or repeated at line " + std::to_string(n) + ")";
        } else {
          what += " (" + before + " edited)";
        }
        scan.problems.push_back({n, std::move(what)});
      }
      scan.last_seq = seq;
      expected_seq = seq;  // resume from what the line says
    }
    ++expected_seq;
    scan.head_sha256 = sha;
    if (on_line) on_line(n, line_bytes > kMaxLineBytes ? std::string_view() : line);
    scan.size_bytes += line_bytes + 1;
    line.clear();
    line_bytes = 0;
  };

  while (offset < limit_bytes) {
    const size_t want =
        static_cast<size_t>(std::min<uint64_t>(buffer.size(), limit_bytes - offset));
    const ssize_t got = ::pread(fd, buffer.data(), want, static_cast<off_t>(offset));
    if (got < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "read " + path + " at offset " + std::to_string(offset));
    }
    if (got == 0) break;
    offset += static_cast<uint64_t>(got);
    const char* p = buffer.data();
    const char* end = p + got;
    while (p < end) {
      const char* nl = static_cast<const char*>(std::memchr(p, '\n', static_cast<size_t>(end - p)));
      const char* stop = nl ? nl : end;
      const size_t n = static_cast<size_t>(stop - p);
      SNAPDISK_CHECK(EVP_DigestUpdate(ctx.get(), p, n) == 1, "SHA-256 update");
      if (line_bytes + n <= kMaxLineBytes) line.append(p, n);
      line_bytes += n;
      if (!nl) break;
      finish_line();
      p = nl + 1;
    }
  }
  scan.torn_bytes = line_bytes;
  return scan;
}

AuditLog::AuditLog(std::string path, int fd, uint64_t size_bytes, uint64_t lines, uint64_t seq,
                   std::string head_sha256)
    : path_(std::move(path)),
      fd_(fd),
      size_bytes_(size_bytes),
      lines_(lines),
      seq_(seq),
      head_sha256_(std::move(head_sha256)),
      sync_(fd, /*data_only=*/true, path_) {}

AuditLog::~AuditLog() { ::close(fd_); }

Result<std::unique_ptr<AuditLog>> AuditLog::Create(const std::string& path,
                                                   std::string genesis_sha256) {
  // O_APPEND: every write lands at the true end even if someone cut the file
  // behind our back (Verify then reports the damage instead of a hole).
  const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_APPEND | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(errno, "create " + path);
  std::unique_ptr<AuditLog> log(new AuditLog(path, fd, 0, 0, 0, std::move(genesis_sha256)));
  if (::fsync(fd) != 0) return Status::FromErrno(errno, "fsync " + path);
  return log;
}

Result<std::unique_ptr<AuditLog>> AuditLog::Open(const std::string& path,
                                                 const AuditLogScan& scan) {
  const int fd = ::open(path.c_str(), O_WRONLY | O_APPEND | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open " + path);
  std::unique_ptr<AuditLog> log(
      new AuditLog(path, fd, scan.size_bytes, scan.lines, scan.last_seq, scan.head_sha256));
  if (scan.torn_bytes > 0) {
    // A line without its '\n' is an append a crash cut short: its caller was
    // never told it succeeded, so it never happened.
    if (::ftruncate(fd, static_cast<off_t>(scan.size_bytes)) != 0 || ::fdatasync(fd) != 0) {
      return Status::FromErrno(errno, "cut the torn last line off " + path);
    }
  }
  return log;
}

Status AuditLog::Append(std::span<const std::string> fields) {
  SNAPDISK_CHECK(!fields.empty(), "AuditLog::Append of nothing");
  uint64_t ticket = 0;
  {
    std::lock_guard<std::mutex> lock(mu_);
    if (!broken_.ok()) return broken_;
    std::string text;
    std::string head = head_sha256_;
    uint64_t seq = seq_;
    for (const std::string& f : fields) {
      SNAPDISK_CHECK(!f.empty() && f.find('\n') == std::string::npos, "bad audit fields");
      const size_t start = text.size();
      text += kSeqPrefix;
      text += std::to_string(++seq);
      text += ',';
      text += f;
      text += kPrevKey;
      text += head;
      text += "\"}";
      head = Sha256HexOfText(std::string_view(text).substr(start));
      text += '\n';
    }
    size_t done = 0;
    while (done < text.size()) {
      const ssize_t n = ::write(fd_, text.data() + done, text.size() - done);
      if (n < 0 && errno == EINTR) continue;
      if (n <= 0) {
        const Status failed = Status::FromErrno(n < 0 ? errno : EIO, "append to " + path_);
        // Cut the partial line so the chain stays whole; if that fails, the
        // next open sees a torn tail and cuts it there.
        if (::ftruncate(fd_, static_cast<off_t>(size_bytes_)) != 0) {
          broken_ = failed.WithContext("audit log broken");
        }
        return failed;
      }
      done += static_cast<size_t>(n);
    }
    size_bytes_ += text.size();
    lines_ += fields.size();
    seq_ = seq;
    head_sha256_ = std::move(head);
    ticket = sync_.Note();
  }
  Status synced = sync_.SyncThrough(ticket);
  if (!synced.ok()) {
    std::lock_guard<std::mutex> lock(mu_);
    if (broken_.ok()) broken_ = synced.WithContext("audit log broken");
  }
  return synced;
}

Result<AuditLog::Head> AuditLog::Snapshot() const {
  std::lock_guard<std::mutex> lock(mu_);
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Status::FromErrno(errno, "stat " + path_);
  Head head;
  head.lines = lines_;
  head.seq = seq_;
  head.file_size_bytes = static_cast<uint64_t>(st.st_size);
  head.sha256 = head_sha256_;
  return head;
}

}  // namespace snapdisk
