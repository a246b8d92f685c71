// Ceph RBD export-diff streams: reader, writer, import and export jobs. The
// contract is in restore/rbd_diff.h.
#include "restore/rbd_diff.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <deque>

#include "disk/bytes.h"
#include "disk/unique_fd.h"
#include "engine/aligned_buffer.h"
#include "engine/names.h"
#include "engine/volume.h"

namespace snapdisk::rbd {

namespace {

constexpr size_t kReadWindowBytes = 64 * 1024;

// Import: stream data is read into buffers of this size (pieces aligned to it
// in volume space, so all-zero blocks are found at block granularity).
constexpr size_t kImportPieceBytes = size_t{1} << 20;
constexpr size_t kImportBuffers = 16;
// 'z' ranges are cut into requests of at most this, so one request never
// covers an unbounded range.
constexpr uint64_t kZeroPieceBytes = uint64_t{64} << 20;
// Volume requests one import keeps in flight.
constexpr size_t kImportMaxInFlight = 64;
// Stream bytes one step reads at most, and records one check step reads.
constexpr size_t kStepReadBytes = size_t{8} << 20;
constexpr size_t kCheckRecordsPerStep = 4096;

// Export: reads of at most kMaxDataRecordBytes, this many in flight.
constexpr size_t kExportBuffers = 8;
constexpr size_t kSinkBufferBytes = size_t{1} << 20;

std::string Quote(std::string_view name) {
  std::string out = "'";
  for (unsigned char c : name) {
    if (c >= 0x20 && c < 0x7f && c != '\\' && c != '\'') {
      out += static_cast<char>(c);
    } else {
      static const char kHex[] = "0123456789abcdef";
      out += "\\x";
      out += kHex[c >> 4];
      out += kHex[c & 15];
    }
  }
  return out + "'";
}

std::string TagName(uint8_t tag) {
  if (tag >= 0x21 && tag < 0x7f) return "'" + std::string(1, static_cast<char>(tag)) + "'";
  static const char kHex[] = "0123456789abcdef";
  return std::string("0x") + kHex[tag >> 4] + kHex[tag & 15];
}

uint64_t LoadLe64(const std::byte* p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(p[i]);
  return v;
}

void AppendLe64(std::vector<std::byte>& out, uint64_t v) {
  for (int i = 0; i < 8; ++i) out.push_back(static_cast<std::byte>(v >> (8 * i)));
}

void AppendLe32(std::vector<std::byte>& out, uint32_t v) {
  for (int i = 0; i < 4; ++i) out.push_back(static_cast<std::byte>(v >> (8 * i)));
}

// Calls fn(start, length, zero) for each maximal run of `data` (placed at
// volume offset `offset`) whose block pieces — cut at multiples of `block` in
// volume space — are all zeros, or all not.
template <typename Fn>
void ForEachRun(const std::byte* data, uint64_t offset, size_t length, uint32_t block, Fn&& fn) {
  size_t run_start = 0;
  bool run_zero = false;
  size_t pos = 0;
  while (pos < length) {
    const uint64_t abs = offset + pos;
    const size_t piece = static_cast<size_t>(std::min<uint64_t>(length - pos, block - abs % block));
    const bool zero = IsAllZero(data + pos, piece);
    if (pos > 0 && zero != run_zero) {
      fn(run_start, pos - run_start, run_zero);
      run_start = pos;
    }
    run_zero = zero;
    pos += piece;
  }
  if (length > 0) fn(run_start, length - run_start, run_zero);
}

Status WriteAll(int fd, const std::byte* p, size_t n, const std::string& what) {
  while (n > 0) {
    const ssize_t w = ::write(fd, p, n);
    if (w < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "write " + what);
    }
    p += w;
    n -= static_cast<size_t>(w);
  }
  return Status::OK();
}

Result<SnapshotInfo> FindSnapshot(Pool& pool, std::string_view volume, std::string_view name) {
  SNAPDISK_ASSIGN_OR_RETURN(auto snaps, pool.ListSnapshots(volume));
  for (SnapshotInfo& s : snaps) {
    if (s.name == name) return std::move(s);
  }
  return Status::NotFound("snapshot '" + std::string(volume) + "@" + std::string(name) +
                          "' does not exist");
}

}  // namespace

// ---- Summary and sources -----------------------------------------------------

void DiffSummary::Add(const Record& record) {
  switch (record.type) {
    case RecordType::kFromSnap:
      from_snapshot = record.snapshot;
      break;
    case RecordType::kToSnap:
      to_snapshot = record.snapshot;
      break;
    case RecordType::kSize:
      size_bytes = record.size_bytes;
      break;
    case RecordType::kData:
      ++data_records;
      data_bytes += record.length_bytes;
      if (record.length_bytes > 0) {
        end_bytes = std::max(end_bytes, record.offset_bytes + record.length_bytes);
      }
      break;
    case RecordType::kZero:
      ++zero_records;
      zero_bytes += record.length_bytes;
      if (record.length_bytes > 0) {
        end_bytes = std::max(end_bytes, record.offset_bytes + record.length_bytes);
      }
      break;
    case RecordType::kEnd:
      stream_bytes = record.position + 1;
      break;
  }
}

Result<std::unique_ptr<FileSource>> FileSource::Open(const std::string& path,
                                                     const std::string& shown) {
  const std::string name = shown.empty() ? path : shown;
  // O_NONBLOCK: a FIFO is refused below instead of waiting for a writer.
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
  if (fd < 0) {
    if (errno == ENOENT) return Status::NotFound("diff stream " + name + " does not exist");
    return Status::FromErrno(errno, "open diff stream " + name);
  }
  UniqueFd owned(fd);
  struct stat st;
  if (::fstat(fd, &st) != 0) return Status::FromErrno(errno, "stat diff stream " + name);
  uint64_t size = 0;
  if (S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument("diff stream " + name + " is a directory");
  } else if (S_ISREG(st.st_mode)) {
    size = static_cast<uint64_t>(st.st_size);
  } else if (S_ISBLK(st.st_mode)) {
    const off_t end = ::lseek(fd, 0, SEEK_END);
    if (end < 0) return Status::FromErrno(errno, "seek diff stream " + name);
    size = static_cast<uint64_t>(end);
  } else {
    return Status::InvalidArgument(
        "diff stream " + name +
        " is not a regular file: import-diff reads a stream twice (it is checked whole before "
        "anything is written); save it to a file first");
  }
  const int64_t mtime_ns =
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  return std::unique_ptr<FileSource>(new FileSource(owned.Release(), name, size, mtime_ns));
}

FileSource::~FileSource() { ::close(fd_); }

Result<size_t> FileSource::ReadAt(uint64_t position, std::span<std::byte> out) {
  if (position >= size_bytes_) return size_t{0};
  const size_t want = static_cast<size_t>(std::min<uint64_t>(out.size(), size_bytes_ - position));
  size_t done = 0;
  while (done < want) {
    const ssize_t n =
        ::pread(fd_, out.data() + done, want - done, static_cast<off_t>(position + done));
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "read diff stream " + name_);
    }
    if (n == 0) break;  // the file shrank: the caller sees a short read
    done += static_cast<size_t>(n);
  }
  return done;
}

Status FileSource::CheckUnchanged() const {
  struct stat st;
  if (::fstat(fd_, &st) != 0) return Status::FromErrno(errno, "stat diff stream " + name_);
  const int64_t mtime_ns =
      static_cast<int64_t>(st.st_mtim.tv_sec) * 1'000'000'000 + st.st_mtim.tv_nsec;
  if (S_ISREG(st.st_mode) &&
      (static_cast<uint64_t>(st.st_size) != size_bytes_ || mtime_ns != mtime_ns_)) {
    return Status::IOError("diff stream " + name_ + " changed while it was being imported");
  }
  return Status::OK();
}

Result<size_t> MemorySource::ReadAt(uint64_t position, std::span<std::byte> out) {
  if (position >= bytes_.size()) return size_t{0};
  const size_t n = static_cast<size_t>(std::min<uint64_t>(out.size(), bytes_.size() - position));
  std::memcpy(out.data(), bytes_.data() + position, n);
  return n;
}

// ---- Reader ----------------------------------------------------------------

DiffReader::DiffReader(ByteSource& source) : source_(source) {}

Status DiffReader::Fail(Status status) {
  error_ = status;
  return status;
}

Status DiffReader::Corrupt(uint64_t at, const std::string& what) {
  return Status::Corruption("diff stream " + source_.name() + ": byte " + std::to_string(at) +
                            ": " + what);
}

Status DiffReader::ReadField(std::span<std::byte> out, uint64_t record_at, const char* field) {
  size_t done = 0;
  while (done < out.size()) {
    const uint64_t at = position_ + done;
    if (at >= window_position_ && at < window_position_ + window_bytes_) {
      const size_t within = static_cast<size_t>(at - window_position_);
      const size_t n = std::min(out.size() - done, window_bytes_ - within);
      std::memcpy(out.data() + done, window_.data() + within, n);
      done += n;
      continue;
    }
    size_t got = 0;
    if (at < source_.size_bytes()) {
      window_.resize(kReadWindowBytes);
      SNAPDISK_ASSIGN_OR_RETURN(got, source_.ReadAt(at, window_));
      window_position_ = at;
      window_bytes_ = got;
    }
    if (got == 0) {
      return Corrupt(record_at, "the stream ends at byte " + std::to_string(at) +
                                    " inside this record's " + field + " (truncated)");
    }
  }
  position_ += out.size();
  return Status::OK();
}

Result<uint64_t> DiffReader::ReadLe64(uint64_t record_at, const char* field) {
  std::byte b[8];
  SNAPDISK_RETURN_IF_ERROR(ReadField(b, record_at, field));
  return LoadLe64(b);
}

Result<uint32_t> DiffReader::ReadLe32(uint64_t record_at, const char* field) {
  std::byte b[4];
  SNAPDISK_RETURN_IF_ERROR(ReadField(b, record_at, field));
  uint32_t v = 0;
  for (int i = 3; i >= 0; --i) v = (v << 8) | static_cast<uint8_t>(b[i]);
  return v;
}

Status DiffReader::ReadHeader() {
  const size_t header_bytes = kHeaderV1.size();
  if (source_.size_bytes() == 0) {
    return Status::InvalidArgument("diff stream " + source_.name() +
                                   " is empty, not an RBD export-diff stream");
  }
  std::byte b[16] = {};
  SNAPDISK_ASSIGN_OR_RETURN(size_t got, source_.ReadAt(0, std::span<std::byte>(b, header_bytes)));
  const std::string_view text(reinterpret_cast<const char*>(b), got);
  if (text == kHeaderV1) {
    format_ = DiffFormat::kV1;
  } else if (text == kHeaderV2) {
    format_ = DiffFormat::kV2;
  } else if (got == header_bytes && text.substr(0, 10) == "rbd diff v" && text.back() == '\n') {
    return Status::Unsupported("diff stream " + source_.name() + " is RBD diff format " +
                               Quote(text.substr(9, 2)) + ", not v1 or v2");
  } else if (std::string_view(kHeaderV1).substr(0, got) == text ||
             std::string_view(kHeaderV2).substr(0, got) == text) {
    return Corrupt(
        0, "the stream ends at byte " + std::to_string(got) + " inside the header (truncated)");
  } else {
    return Status::InvalidArgument("diff stream " + source_.name() +
                                   " is not an RBD export-diff stream (it does not start with "
                                   "\"rbd diff v1\\n\" or \"rbd diff v2\\n\")");
  }
  position_ = header_bytes;
  return Status::OK();
}

Result<Record> DiffReader::Next() {
  if (!error_.ok()) return error_;
  SNAPDISK_CHECK(!done_, "DiffReader::Next after the end record");
  if (!started_) {
    if (Status s = ReadHeader(); !s.ok()) return Fail(s);
    started_ = true;
  }
  Record r;
  r.position = position_;
  const uint64_t at = position_;
  if (at >= source_.size_bytes()) {
    return Fail(Corrupt(at, "the stream ends here without an end record ('e') (truncated)"));
  }
  std::byte tag_byte;
  if (Status s = ReadField(std::span<std::byte>(&tag_byte, 1), at, "tag"); !s.ok()) return Fail(s);
  const uint8_t tag = static_cast<uint8_t>(tag_byte);
  const bool v2 = format_ == DiffFormat::kV2;
  const std::string name = "record " + TagName(tag);
  auto fail = [&](const std::string& what) { return Fail(Corrupt(at, name + ": " + what)); };
  auto check_length = [&](uint64_t length, uint64_t expected) -> Status {
    if (!v2 || length == expected) return Status::OK();
    return Corrupt(at, name + ": its length field says " + std::to_string(length) +
                           " bytes follow, its fields take " + std::to_string(expected));
  };
  // Wraps a Result-returning read: on error, record it and return.
#define SNAPDISK_RBD_READ(lhs, expr)                            \
  auto SNAPDISK_CONCAT(rbd_read_, __LINE__) = (expr);           \
  if (!SNAPDISK_CONCAT(rbd_read_, __LINE__).ok())               \
    return Fail(SNAPDISK_CONCAT(rbd_read_, __LINE__).status()); \
  lhs = *SNAPDISK_CONCAT(rbd_read_, __LINE__)

  switch (tag) {
    case 'f':
    case 't': {
      r.type = static_cast<RecordType>(tag);
      bool& seen = tag == 'f' ? seen_from_ : seen_to_;
      if (in_data_) return fail("a metadata record after a data record (metadata comes first)");
      if (seen) return fail("a second one (each metadata record appears at most once)");
      seen = true;
      uint64_t length = 0;
      if (v2) {
        SNAPDISK_RBD_READ(length, ReadLe64(at, "length"));
      }
      SNAPDISK_RBD_READ(const uint32_t name_bytes, ReadLe32(at, "name length"));
      if (name_bytes == 0) return fail("an empty snapshot name");
      if (name_bytes > kMaxStreamNameBytes) {
        return fail("a snapshot name of " + std::to_string(name_bytes) + " bytes (at most " +
                    std::to_string(kMaxStreamNameBytes) + ")");
      }
      if (Status s = check_length(length, 4 + uint64_t{name_bytes}); !s.ok()) return Fail(s);
      std::vector<std::byte> text(name_bytes);
      if (Status s = ReadField(text, at, "snapshot name"); !s.ok()) return Fail(s);
      r.snapshot.assign(reinterpret_cast<const char*>(text.data()), text.size());
      break;
    }
    case 's': {
      r.type = RecordType::kSize;
      if (in_data_) return fail("a metadata record after a data record (metadata comes first)");
      if (seen_size_) return fail("a second one (each metadata record appears at most once)");
      seen_size_ = true;
      if (v2) {
        SNAPDISK_RBD_READ(const uint64_t length, ReadLe64(at, "length"));
        if (Status s = check_length(length, 8); !s.ok()) return Fail(s);
      }
      SNAPDISK_RBD_READ(r.size_bytes, ReadLe64(at, "image size"));
      size_bytes_ = r.size_bytes;
      break;
    }
    case 'w':
    case 'z': {
      r.type = static_cast<RecordType>(tag);
      in_data_ = true;
      uint64_t length = 0;
      if (v2) {
        SNAPDISK_RBD_READ(length, ReadLe64(at, "length"));
      }
      SNAPDISK_RBD_READ(r.offset_bytes, ReadLe64(at, "offset"));
      SNAPDISK_RBD_READ(r.length_bytes, ReadLe64(at, "data length"));
      if (tag == 'w' && v2 && r.length_bytes > UINT64_MAX - 16) {
        return fail("a data length of " + std::to_string(r.length_bytes) + " bytes");
      }
      if (Status s = check_length(length, 16 + (tag == 'w' ? r.length_bytes : 0)); !s.ok()) {
        return Fail(s);
      }
      const std::string range =
          "[" + std::to_string(r.offset_bytes) + ", +" + std::to_string(r.length_bytes) + ")";
      if (r.length_bytes > UINT64_MAX - r.offset_bytes) {
        return fail("range " + range + " overflows 64 bits");
      }
      const uint64_t end = r.offset_bytes + r.length_bytes;
      if (seen_size_ && end > size_bytes_) {
        return fail("range " + range + " ends at byte " + std::to_string(end) +
                    ", beyond the image size " + std::to_string(size_bytes_));
      }
      // Records may come in any order and overlap: like `rbd import-diff`,
      // they are applied in stream order and a later one wins (the volume
      // applies overlapping requests in submission order).
      if (tag == 'w') {
        r.data_position = position_;
        const uint64_t left = source_.size_bytes() - position_;
        if (r.length_bytes > left) {
          return fail("its " + std::to_string(r.length_bytes) + " bytes of data run past the end " +
                      "of the stream at byte " + std::to_string(source_.size_bytes()) +
                      " (truncated)");
        }
        position_ += r.length_bytes;
      }
      break;
    }
    case 'e': {
      r.type = RecordType::kEnd;
      if (position_ != source_.size_bytes()) {
        return Fail(Corrupt(position_, std::to_string(source_.size_bytes() - position_) +
                                           " bytes follow the end record at byte " +
                                           std::to_string(at)));
      }
      done_ = true;
      break;
    }
    default:
      return Fail(Corrupt(at, "unknown record tag " + TagName(tag) + " (known: f, t, s, w, z, e)"));
  }
#undef SNAPDISK_RBD_READ
  return r;
}

Result<DiffSummary> ScanDiff(ByteSource& source) {
  DiffReader reader(source);
  DiffSummary summary;
  while (!reader.done()) {
    SNAPDISK_ASSIGN_OR_RETURN(Record r, reader.Next());
    summary.format = reader.format();
    summary.Add(r);
  }
  return summary;
}

// ---- Writer ----------------------------------------------------------------

Status DiffWriter::Put(std::span<const std::byte> bytes) {
  SNAPDISK_RETURN_IF_ERROR(sink_.Write(bytes));
  bytes_written_ += bytes.size();
  return Status::OK();
}

Status DiffWriter::SnapRecord(char tag, const std::string& name) {
  if (name.empty() || name.size() > kMaxStreamNameBytes) {
    return Status::InvalidArgument("snapshot name " + Quote(name) + " is empty or longer than " +
                                   std::to_string(kMaxStreamNameBytes) + " bytes");
  }
  std::vector<std::byte> rec{static_cast<std::byte>(tag)};
  if (format_ == DiffFormat::kV2) AppendLe64(rec, 4 + name.size());
  AppendLe32(rec, static_cast<uint32_t>(name.size()));
  for (char c : name) rec.push_back(static_cast<std::byte>(c));
  return Put(rec);
}

Status DiffWriter::Begin(const std::optional<std::string>& from_snapshot,
                         const std::optional<std::string>& to_snapshot,
                         const std::optional<uint64_t>& size_bytes) {
  SNAPDISK_CHECK(!begun_, "DiffWriter::Begin called twice");
  begun_ = true;
  const std::string_view header = format_ == DiffFormat::kV1 ? kHeaderV1 : kHeaderV2;
  SNAPDISK_RETURN_IF_ERROR(Put(std::span<const std::byte>(
      reinterpret_cast<const std::byte*>(header.data()), header.size())));
  if (from_snapshot) SNAPDISK_RETURN_IF_ERROR(SnapRecord('f', *from_snapshot));
  if (to_snapshot) SNAPDISK_RETURN_IF_ERROR(SnapRecord('t', *to_snapshot));
  if (size_bytes) {
    std::vector<std::byte> rec{static_cast<std::byte>('s')};
    if (format_ == DiffFormat::kV2) AppendLe64(rec, 8);
    AppendLe64(rec, *size_bytes);
    SNAPDISK_RETURN_IF_ERROR(Put(rec));
    size_bytes_ = size_bytes;
  }
  return Status::OK();
}

Status DiffWriter::CheckRange(uint64_t offset_bytes, uint64_t length_bytes) {
  SNAPDISK_CHECK(begun_ && !ended_, "DiffWriter: a data record outside Begin..End");
  const std::string range =
      "[" + std::to_string(offset_bytes) + ", +" + std::to_string(length_bytes) + ")";
  if (length_bytes > UINT64_MAX - offset_bytes) {
    return Status::InvalidArgument("diff record " + range + " overflows 64 bits");
  }
  if (size_bytes_ && offset_bytes + length_bytes > *size_bytes_) {
    return Status::InvalidArgument("diff record " + range + " is beyond the image size " +
                                   std::to_string(*size_bytes_));
  }
  if ((data_records_ + zero_records_) > 0 && offset_bytes < data_end_) {
    return Status::InvalidArgument("diff record " + range +
                                   " overlaps or comes before the previous one, which ends at " +
                                   std::to_string(data_end_));
  }
  data_end_ = offset_bytes + length_bytes;
  return Status::OK();
}

Status DiffWriter::Data(uint64_t offset_bytes, std::span<const std::byte> data) {
  SNAPDISK_RETURN_IF_ERROR(CheckRange(offset_bytes, data.size()));
  std::vector<std::byte> rec{static_cast<std::byte>('w')};
  if (format_ == DiffFormat::kV2) AppendLe64(rec, 16 + data.size());
  AppendLe64(rec, offset_bytes);
  AppendLe64(rec, data.size());
  SNAPDISK_RETURN_IF_ERROR(Put(rec));
  SNAPDISK_RETURN_IF_ERROR(Put(data));
  ++data_records_;
  return Status::OK();
}

Status DiffWriter::Zero(uint64_t offset_bytes, uint64_t length_bytes) {
  SNAPDISK_RETURN_IF_ERROR(CheckRange(offset_bytes, length_bytes));
  std::vector<std::byte> rec{static_cast<std::byte>('z')};
  if (format_ == DiffFormat::kV2) AppendLe64(rec, 16);
  AppendLe64(rec, offset_bytes);
  AppendLe64(rec, length_bytes);
  SNAPDISK_RETURN_IF_ERROR(Put(rec));
  ++zero_records_;
  return Status::OK();
}

Status DiffWriter::End() {
  SNAPDISK_CHECK(begun_ && !ended_, "DiffWriter::End outside Begin..End");
  ended_ = true;
  const std::byte e{'e'};
  return Put(std::span<const std::byte>(&e, 1));
}

// ---- Import ------------------------------------------------------------------

struct ImportJob::Impl {
  enum class Phase { kCheck, kApply, kUndo, kDone };

  // One volume request to submit: a write from a held buffer, or write-zeroes.
  struct Op {
    VolumeOp op = VolumeOp::kWrite;
    uint64_t offset_bytes = 0;
    uint64_t length_bytes = 0;
    std::byte* data = nullptr;
    int buffer = -1;
  };

  Impl(Pool& pool_in, std::string volume_in, std::unique_ptr<FileSource> source_in,
       std::atomic<bool>& cancel_in)
      : pool(pool_in),
        volume(std::move(volume_in)),
        source(std::move(source_in)),
        cancel(cancel_in),
        check_reader(*source) {}

  std::string Stream() const { return source->name(); }

  // The target's preconditions (rbd_diff.h): all but the range check, which
  // needs the whole stream.
  Status CheckTarget() {
    SNAPDISK_ASSIGN_OR_RETURN(VolumeInfo info, pool.GetVolume(volume));
    SNAPDISK_ASSIGN_OR_RETURN(Volume * v, pool.OpenVolume(volume));
    const std::string vol = "volume '" + volume + "'";
    if (v->in_use()) {
      return Status::Busy(vol +
                          " is in use (open by a client): import-diff would change it "
                          "under the client");
    }
    // The undo and 't' snapshots would not see data still to come from a
    // backup (Pool::BeginHydration).
    SNAPDISK_ASSIGN_OR_RETURN(HydrationInfo hydration, pool.GetHydrationInfo(volume));
    if (hydration.hydrating) {
      return Status::Busy(vol + " is still being restored (hydrating, " +
                          std::to_string(hydration.pending_bytes) +
                          " bytes to come): import-diff can apply once it is complete");
    }
    if (summary.to_snapshot) {
      const std::string& to = *summary.to_snapshot;
      if (Status s = ValidateName(to, "snapshot name"); !s.ok()) {
        return Status::InvalidArgument("diff stream " + Stream() + " ends at snapshot " +
                                       Quote(to) + ", which is not a valid snapdisk snapshot " +
                                       "name (1-128 letters, digits, '.', '_', '-')");
      }
      auto snap = FindSnapshot(pool, volume, to);
      if (snap.ok()) {
        return Status::AlreadyExists(vol + " already has a snapshot " + Quote(to) +
                                     ", which diff stream " + Stream() + " ends at");
      }
      if (!snap.status().IsNotFound()) return snap.status();
    }
    if (summary.from_snapshot) {
      const std::string& from = *summary.from_snapshot;
      auto snap = ValidateName(from, "snapshot name").ok()
                      ? FindSnapshot(pool, volume, from)
                      : Result<SnapshotInfo>(Status::NotFound(""));
      if (!snap.ok()) {
        if (!snap.status().IsNotFound()) return snap.status();
        return Status::NotFound(vol + " has no snapshot " + Quote(from) + ", which diff stream " +
                                Stream() + " starts from");
      }
      SNAPDISK_ASSIGN_OR_RETURN(auto changed, pool.Diff(volume, from, ""));
      if (!changed.empty() || info.size_bytes != snap->size_bytes) {
        uint64_t bytes = 0;
        for (const Extent& e : changed) bytes += e.length_bytes;
        const std::string how = !changed.empty() ? "written since snapshot " + Quote(from) + " (" +
                                                       std::to_string(bytes) + " bytes changed)"
                                                 : "grown since snapshot " + Quote(from);
        return Status::InvalidArgument(vol + " was " + how + ", which diff stream " + Stream() +
                                       " starts from; roll it back to " + Quote(from) + " first");
      }
    }
    if (summary.size_bytes) {
      const uint64_t size = *summary.size_bytes;
      if (size < info.size_bytes) {
        return Status::Unsupported("diff stream " + Stream() + " has image size " +
                                   std::to_string(size) + " bytes, smaller than " + vol + " (" +
                                   std::to_string(info.size_bytes) +
                                   " bytes): a volume cannot shrink");
      }
      if (size % 512 != 0) {
        return Status::InvalidArgument("diff stream " + Stream() + " has image size " +
                                       std::to_string(size) +
                                       " bytes, not a multiple of 512 (a volume's size must be)");
      }
    }
    return Status::OK();
  }

  // Everything is checked: the last preconditions, then the undo snapshot.
  Status BeginApply() {
    SNAPDISK_RETURN_IF_ERROR(CheckTarget());
    SNAPDISK_ASSIGN_OR_RETURN(VolumeInfo info, pool.GetVolume(volume));
    old_size = info.size_bytes;
    target_size = summary.size_bytes.value_or(info.size_bytes);
    if (summary.end_bytes > target_size) {
      return Status::InvalidArgument("diff stream " + Stream() + " writes up to byte " +
                                     std::to_string(summary.end_bytes) +
                                     ", beyond the end of volume '" + volume + "' (" +
                                     std::to_string(target_size) + " bytes)");
    }
    SNAPDISK_ASSIGN_OR_RETURN(vol, pool.OpenVolume(volume));
    for (uint64_t n = 1;; ++n) {
      guard_name = "import-diff-undo-" + std::to_string(n);
      auto existing = FindSnapshot(pool, volume, guard_name);
      if (!existing.ok() && existing.status().IsNotFound()) break;
      if (!existing.ok()) return existing.status();
    }
    SNAPDISK_RETURN_IF_ERROR(pool.CreateSnapshot(volume, guard_name).status());
    guard_taken = true;
    SNAPDISK_ASSIGN_OR_RETURN(guard, pool.OpenSnapshot(volume, guard_name));
    guard->SetInUse(true);  // nobody deletes the way back
    vol->SetInUse(true);    // nor rolls the volume back or deletes it under us
    marked_in_use = true;
    apply_reader = std::make_unique<DiffReader>(*source);
    buffers.reserve(kImportBuffers);
    for (size_t i = 0; i < kImportBuffers; ++i) {
      buffers.emplace_back(kImportPieceBytes);
      free_buffers.push_back(static_cast<int>(i));
    }
    buffer_pending.assign(kImportBuffers, 0);
    return Status::OK();
  }

  void ReleaseBuffer(int b) {
    if (--buffer_pending[static_cast<size_t>(b)] == 0) free_buffers.push_back(b);
  }

  // Submits queued ops in order; stops at the pool's request limit (Busy)
  // and at our own.
  Status SubmitOps() {
    while (!ops.empty() && in_flight < kImportMaxInFlight) {
      const Op op = ops.front();
      VolumeRequest* r;
      if (free_requests.empty()) {
        requests.emplace_back();
        r = &requests.back();
      } else {
        r = free_requests.back();
        free_requests.pop_back();
      }
      r->op = op.op;
      r->offset_bytes = op.offset_bytes;
      r->length_bytes = op.length_bytes;
      r->data = op.data;
      r->on_complete = [this, op](VolumeRequest& req, const Status& s) {
        --in_flight;
        free_requests.push_back(&req);
        if (op.buffer >= 0) ReleaseBuffer(op.buffer);
        if (!s.ok()) {
          if (error.ok()) error = s;
          return;
        }
        applied_bytes += op.length_bytes;
        (op.op == VolumeOp::kWrite ? written_bytes : zeroed_bytes) += op.length_bytes;
      };
      Status s = vol->Submit(*r);
      if (!s.ok()) {
        free_requests.push_back(r);
        if (s.IsBusy()) return Status::OK();  // the pool is full: next step
        return s;
      }
      ++in_flight;
      submitted_any = true;
      ops.pop_front();
    }
    return Status::OK();
  }

  // Write-zeroes of [offset, offset + length): the whole blocks in one
  // request (they become holes), partial blocks at either end in their own
  // (an unaligned request would be a read-modify-write of all its blocks).
  void QueueZeroes(uint64_t offset, uint64_t length) {
    const uint64_t block = pool.block_bytes();
    const uint64_t end = offset + length;
    const uint64_t first_whole = (offset + block - 1) / block * block;
    const uint64_t end_whole = end / block * block;
    if (first_whole >= end_whole) {
      ops.push_back(Op{VolumeOp::kWriteZeroes, offset, length, nullptr, -1});
      return;
    }
    if (offset < first_whole) {
      ops.push_back(Op{VolumeOp::kWriteZeroes, offset, first_whole - offset, nullptr, -1});
    }
    ops.push_back(Op{VolumeOp::kWriteZeroes, first_whole, end_whole - first_whole, nullptr, -1});
    if (end_whole < end) {
      ops.push_back(Op{VolumeOp::kWriteZeroes, end_whole, end - end_whole, nullptr, -1});
    }
  }

  // Turns stream records into ops, reading at most kStepReadBytes.
  Status QueueOps() {
    size_t read = 0;
    size_t records = 0;
    while (read < kStepReadBytes && ops.size() < kImportMaxInFlight &&
           records < kCheckRecordsPerStep) {
      if (!have_record) {
        if (apply_reader->done()) return Status::OK();
        SNAPDISK_ASSIGN_OR_RETURN(record, apply_reader->Next());
        ++records;
        apply_summary.format = apply_reader->format();
        apply_summary.Add(record);
        if ((record.type != RecordType::kData && record.type != RecordType::kZero) ||
            record.length_bytes == 0) {
          continue;
        }
        have_record = true;
        record_done = 0;
      }
      const uint64_t at = record.offset_bytes + record_done;
      const uint64_t record_end = record.offset_bytes + record.length_bytes;
      if (record.type == RecordType::kZero) {
        const uint64_t n =
            std::min<uint64_t>(record_end, (at / kZeroPieceBytes + 1) * kZeroPieceBytes) - at;
        QueueZeroes(at, n);
        record_done += n;
      } else {
        if (free_buffers.empty()) return Status::OK();
        const uint64_t piece_end =
            std::min<uint64_t>(record_end, (at / kImportPieceBytes + 1) * kImportPieceBytes);
        const size_t n = static_cast<size_t>(piece_end - at);
        const int b = free_buffers.back();
        std::byte* data = buffers[static_cast<size_t>(b)].data();
        SNAPDISK_ASSIGN_OR_RETURN(size_t got, source->ReadAt(record.data_position + record_done,
                                                             std::span<std::byte>(data, n)));
        if (got != n) {
          return Status::IOError("diff stream " + Stream() +
                                 " changed while it was being imported (it is shorter now)");
        }
        read += n;
        free_buffers.pop_back();
        ForEachRun(data, at, n, pool.block_bytes(), [&](size_t start, size_t length, bool zero) {
          if (zero) {
            QueueZeroes(at + start, length);
          } else {
            ops.push_back(Op{VolumeOp::kWrite, at + start, length, data + start, b});
            ++buffer_pending[static_cast<size_t>(b)];
          }
        });
        // The buffer goes back once its writes are done (at once if none).
        ++buffer_pending[static_cast<size_t>(b)];
        ReleaseBuffer(b);
        record_done += n;
      }
      if (record_done == record.length_bytes) have_record = false;
    }
    return Status::OK();
  }

  // The whole stream is applied: check that it still is what was checked,
  // take the 't' snapshot, drop the undo snapshot, commit.
  Status Finish() {
    SNAPDISK_RETURN_IF_ERROR(source->CheckUnchanged());
    if (apply_summary.stream_bytes != summary.stream_bytes ||
        apply_summary.data_records != summary.data_records ||
        apply_summary.zero_records != summary.zero_records ||
        apply_summary.data_bytes != summary.data_bytes ||
        apply_summary.zero_bytes != summary.zero_bytes) {
      return Status::IOError("diff stream " + Stream() + " changed while it was being imported");
    }
    if (summary.to_snapshot) {
      SNAPDISK_ASSIGN_OR_RETURN(SnapshotInfo snap,
                                pool.CreateSnapshot(volume, *summary.to_snapshot));
      report.snapshot = snap;
    }
    ReleaseInUse();
    Status s = pool.DeleteSnapshot(volume, guard_name);
    if (s.ok()) guard_taken = false;
    if (s.ok()) s = pool.Commit();
    return s;
  }

  void ReleaseInUse() {
    if (!marked_in_use) return;
    vol->SetInUse(false);
    guard->SetInUse(false);
    marked_in_use = false;
  }

  // Puts the volume back as it was before the import (nothing in flight).
  Status Undo() {
    ReleaseInUse();
    if (!guard_taken) return Status::OK();
    Status s;
    if (report.snapshot) {
      s = pool.DeleteSnapshot(volume, report.snapshot->name);
      if (s.ok()) report.snapshot.reset();
    }
    // Nothing submitted: nothing to roll back (and the lineage stays).
    if (s.ok() && submitted_any) s = pool.Rollback(volume, guard_name);
    if (s.ok()) s = pool.DeleteSnapshot(volume, guard_name);
    if (s.ok()) guard_taken = false;
    if (s.ok()) s = pool.Commit();
    return s;
  }

  bool Step() {
    if (phase == Phase::kDone) return true;
    if (cancel.load() && error.ok()) error = Status::Cancelled("import-diff interrupted");
    if (phase == Phase::kCheck) {
      if (error.IsCancelled()) {
        return Done(Status::Cancelled("import-diff of " + Stream() +
                                      " interrupted before anything was written"));
      }
      for (size_t n = 0; n < kCheckRecordsPerStep && !check_reader.done(); ++n) {
        auto r = check_reader.Next();
        if (!r.ok()) return Done(r.status());
        summary.format = check_reader.format();
        summary.Add(*r);
      }
      if (!check_reader.done()) return false;
      if (Status s = BeginApply(); !s.ok()) {
        error = s;
        phase = Phase::kUndo;
        return Step();
      }
      phase = Phase::kApply;
    }
    if (phase == Phase::kApply) {
      if (error.ok() && !resized && target_size > old_size) {
        if (vol->in_flight() > 0) return false;  // the map's height may change
        error = pool.GrowVolume(volume, target_size);
      }
      resized = true;
      if (error.ok()) error = QueueOps();
      if (error.ok()) error = SubmitOps();
      if (!error.ok()) {
        phase = Phase::kUndo;
        return Step();
      }
      if (!apply_reader->done() || have_record || !ops.empty() || in_flight > 0) return false;
      if (Status s = Finish(); !s.ok()) {
        error = s;
        phase = Phase::kUndo;
        return Step();
      }
      report.volume = volume;
      report.stream = Stream();
      report.summary = summary;
      report.written_bytes = written_bytes;
      report.zeroed_bytes = zeroed_bytes;
      report.old_size_bytes = old_size;
      report.size_bytes = target_size;
      result = report;
      phase = Phase::kDone;
      return true;
    }
    // kUndo: wait for the requests in flight, then roll back.
    if (in_flight > 0) return false;
    ops.clear();
    const bool had_guard = guard_taken;
    const Status undo = Undo();
    std::string what =
        error.IsCancelled() ? "import-diff of " + Stream() + " interrupted" : error.message();
    if (!undo.ok()) {
      what += "; undoing it failed too: " + undo.ToString() + " (volume '" + volume +
              "' may be half-written: roll it back to snapshot '" + guard_name + "')";
    } else if (had_guard) {
      what += "; volume '" + volume + "' is as before the import";
      auto info = pool.GetVolume(volume);
      if (info.ok() && info->size_bytes > old_size) {
        what += " but keeps its new size, " + std::to_string(info->size_bytes) +
                " bytes (volumes never shrink)";
      }
    }
    return Done(error.WithMessage(what));  // error is never OK here
  }

  bool Done(Status s) {
    result = std::move(s);
    phase = Phase::kDone;
    return true;
  }

  DiffProgress Progress() const {
    if (phase == Phase::kCheck) {
      return {"check " + Stream(), check_reader.position(), source->size_bytes()};
    }
    return {"import-diff " + volume, applied_bytes, summary.data_bytes + summary.zero_bytes};
  }

  Pool& pool;
  const std::string volume;
  std::unique_ptr<FileSource> source;
  std::atomic<bool>& cancel;
  Phase phase = Phase::kCheck;
  DiffReader check_reader;
  DiffSummary summary;
  Status error;
  Result<ImportReport> result = Status::Busy("import-diff has not finished");
  ImportReport report;

  // Apply.
  Volume* vol = nullptr;
  Volume* guard = nullptr;
  std::string guard_name;
  bool guard_taken = false;
  bool marked_in_use = false;
  bool resized = false;  // grown to target_size (when it is larger)
  bool submitted_any = false;
  uint64_t old_size = 0;
  uint64_t target_size = 0;
  std::unique_ptr<DiffReader> apply_reader;
  DiffSummary apply_summary;
  Record record;
  bool have_record = false;
  uint64_t record_done = 0;  // bytes of `record` turned into ops
  std::deque<Op> ops;
  std::vector<AlignedBuffer> buffers;
  std::vector<int> free_buffers;
  std::vector<uint32_t> buffer_pending;  // ops in flight + 1 while being filled
  std::deque<VolumeRequest> requests;    // stable addresses
  std::vector<VolumeRequest*> free_requests;
  size_t in_flight = 0;
  uint64_t applied_bytes = 0;
  uint64_t written_bytes = 0;
  uint64_t zeroed_bytes = 0;
};

ImportJob::ImportJob(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ImportJob::~ImportJob() {
  if (!impl_) return;
  Cancel();
  while (!impl_->Step()) impl_->pool.Poll(1);
}

Result<std::unique_ptr<ImportJob>> ImportJob::Start(Pool& pool, std::string_view volume,
                                                    const std::string& path,
                                                    const std::string& shown) {
  SNAPDISK_RETURN_IF_ERROR(pool.GetVolume(volume).status());
  SNAPDISK_ASSIGN_OR_RETURN(auto source, FileSource::Open(path, shown));
  std::unique_ptr<ImportJob> job(new ImportJob(nullptr));
  job->impl_ = std::make_unique<Impl>(pool, std::string(volume), std::move(source), job->cancel_);
  Impl& impl = *job->impl_;
  // The header and the metadata records, so a wrong stream or target is
  // refused at once; the check phase goes on from the first data record.
  while (!impl.check_reader.done()) {
    SNAPDISK_ASSIGN_OR_RETURN(Record r, impl.check_reader.Next());
    impl.summary.format = impl.check_reader.format();
    impl.summary.Add(r);
    if (r.type == RecordType::kData || r.type == RecordType::kZero) break;
  }
  SNAPDISK_RETURN_IF_ERROR(impl.CheckTarget());
  return job;
}

bool ImportJob::Step() { return impl_->Step(); }

const Result<ImportReport>& ImportJob::result() const { return impl_->result; }

DiffProgress ImportJob::progress() const { return impl_->Progress(); }

namespace {

// Step and Poll a job until it finishes, reporting progress every 100 ms.
template <typename Job>
void RunJob(Pool& pool, Job& job, const std::function<bool(const DiffProgress&)>& progress) {
  auto last = std::chrono::steady_clock::now();
  bool cancelled = false;
  while (!job.Step()) {
    if (progress && !cancelled) {
      const auto now = std::chrono::steady_clock::now();
      if (now - last >= std::chrono::milliseconds(100)) {
        last = now;
        if (!progress(job.progress())) {
          cancelled = true;
          job.Cancel();
        }
      }
    }
    if (pool.in_flight() > 0) pool.Poll(1);
  }
  if (progress) (void)progress(job.progress());
}

}  // namespace

Result<ImportReport> ImportJob::Run(const std::function<bool(const DiffProgress&)>& progress) {
  RunJob(impl_->pool, *this, progress);
  return result();
}

Result<ImportReport> ImportDiff(Pool& pool, std::string_view volume, const std::string& path,
                                const std::function<bool(const DiffProgress&)>& progress) {
  SNAPDISK_ASSIGN_OR_RETURN(auto job, ImportJob::Start(pool, volume, path));
  return job->Run(progress);
}

// ---- Export ------------------------------------------------------------------

namespace {

// Buffered, in-order writes to a descriptor.
class FdSink : public ByteSink {
 public:
  FdSink(int fd, std::string name) : fd_(fd), name_(std::move(name)) {
    buffer_.reserve(kSinkBufferBytes);
  }
  Status Write(std::span<const std::byte> bytes) override {
    if (buffer_.size() + bytes.size() > kSinkBufferBytes) SNAPDISK_RETURN_IF_ERROR(Flush());
    if (bytes.size() >= kSinkBufferBytes) return WriteAll(fd_, bytes.data(), bytes.size(), name_);
    buffer_.insert(buffer_.end(), bytes.begin(), bytes.end());
    return Status::OK();
  }
  Status Flush() {
    Status s = WriteAll(fd_, buffer_.data(), buffer_.size(), name_);
    buffer_.clear();
    return s;
  }

 private:
  int fd_;
  std::string name_;
  std::vector<std::byte> buffer_;
};

}  // namespace

struct ExportJob::Impl {
  struct Slot {
    AlignedBuffer buffer{kMaxDataRecordBytes};
    VolumeRequest request;
    bool busy = false;  // a piece holds it
    bool done = false;  // its read completed
    Status status;
  };
  // A range of the diff, in order: a hole, or data read into a slot.
  struct Piece {
    uint64_t offset_bytes = 0;
    uint64_t length_bytes = 0;
    bool zero = false;
    int slot = -1;
  };

  Impl(Pool& pool_in, std::atomic<bool>& cancel_in) : pool(pool_in), cancel(cancel_in) {}

  ~Impl() {
    if (!temp_path.empty()) ::unlink(temp_path.c_str());
  }

  // Opens the output: a temporary file beside `path`, or the descriptor.
  Status OpenOutput(const std::string& path) {
    if (options.output_fd >= 0) {
      out_fd = options.output_fd;
      return Status::OK();
    }
    struct stat st;
    if (::stat(path.c_str(), &st) == 0) {
      if (S_ISDIR(st.st_mode)) return Status::InvalidArgument(shown + " is a directory");
      if (!S_ISREG(st.st_mode)) {
        // A FIFO or a device (/dev/null): written in order, not replaced.
        const int fd = ::open(path.c_str(), O_WRONLY | O_CLOEXEC);
        if (fd < 0) return Status::FromErrno(errno, "open " + shown);
        owned_fd = UniqueFd(fd);
        out_fd = fd;
        return Status::OK();
      }
      if (!options.overwrite) {
        return Status::AlreadyExists(shown + " already exists");
      }
    }
    std::string temp = path + ".partial-XXXXXX";
    const int fd = ::mkostemp(temp.data(), O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT || errno == ENOTDIR) {
        return Status::NotFound("directory of " + shown + " does not exist");
      }
      return Status::FromErrno(errno, "create " + shown);
    }
    (void)::fchmod(fd, 0644);
    owned_fd = UniqueFd(fd);
    out_fd = fd;
    temp_path = temp;
    final_path = path;
    return Status::OK();
  }

  // The stream is written: make it durable and put it in place.
  Status CloseOutput() {
    SNAPDISK_RETURN_IF_ERROR(sink->Flush());
    if (temp_path.empty()) return Status::OK();
    if (::fsync(out_fd) != 0) return Status::FromErrno(errno, "fsync " + shown);
    if (options.overwrite) {
      if (::rename(temp_path.c_str(), final_path.c_str()) != 0) {
        return Status::FromErrno(errno, "rename to " + shown);
      }
    } else {
      // No replacing a file that appeared meanwhile: link fails on it.
      if (::link(temp_path.c_str(), final_path.c_str()) != 0) {
        if (errno == EEXIST) return Status::AlreadyExists(shown + " already exists");
        return Status::FromErrno(errno, "link to " + shown);
      }
      ::unlink(temp_path.c_str());
    }
    temp_path.clear();
    const size_t slash = final_path.rfind('/');
    const std::string dir = slash == std::string::npos ? "." : final_path.substr(0, slash + 1);
    const int dfd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
      (void)::fsync(dfd);
      ::close(dfd);
    }
    return Status::OK();
  }

  Status FlushZero() {
    if (zero_length == 0) return Status::OK();
    Status s = writer->Zero(zero_offset, zero_length);
    report.zero_bytes += zero_length;
    zero_length = 0;
    return s;
  }

  Status AddZero(uint64_t offset, uint64_t length) {
    if (zero_length > 0 && zero_offset + zero_length == offset) {
      zero_length += length;
      return Status::OK();
    }
    SNAPDISK_RETURN_IF_ERROR(FlushZero());
    zero_offset = offset;
    zero_length = length;
    return Status::OK();
  }

  Status Emit(const Piece& piece) {
    if (piece.zero) return AddZero(piece.offset_bytes, piece.length_bytes);
    const std::byte* data = slots[static_cast<size_t>(piece.slot)].buffer.data();
    Status s;
    ForEachRun(data, piece.offset_bytes, static_cast<size_t>(piece.length_bytes),
               pool.block_bytes(), [&](size_t start, size_t length, bool zero) {
                 if (!s.ok()) return;
                 if (zero) {
                   s = AddZero(piece.offset_bytes + start, length);
                 } else {
                   s = FlushZero();
                   if (s.ok()) s = writer->Data(piece.offset_bytes + start, {data + start, length});
                   report.data_bytes += length;
                 }
               });
    return s;
  }

  // The next piece of the diff, or false at its end. Data pieces end at
  // multiples of kMaxDataRecordBytes in volume space.
  bool PeekPiece(Piece* piece) const {
    if (next_extent >= extents.size()) return false;
    const Extent& e = extents[next_extent];
    const uint64_t at = e.offset_bytes + extent_done;
    const uint64_t end = e.offset_bytes + e.length_bytes;
    piece->offset_bytes = at;
    piece->zero = e.zero;
    piece->length_bytes =
        e.zero ? end - at
               : std::min(end, (at / kMaxDataRecordBytes + 1) * kMaxDataRecordBytes) - at;
    piece->slot = -1;
    return true;
  }

  void TakePiece(const Piece& piece) {
    extent_done += piece.length_bytes;
    if (extent_done == extents[next_extent].length_bytes) {
      ++next_extent;
      extent_done = 0;
    }
  }

  // Submits reads for the next pieces while slots are free.
  Status Submit() {
    Piece piece;
    while (queue.size() < 2 * kExportBuffers && PeekPiece(&piece)) {
      if (!piece.zero) {
        int free_slot = -1;
        for (size_t i = 0; i < slots.size(); ++i) {
          if (!slots[i].busy) {
            free_slot = static_cast<int>(i);
            break;
          }
        }
        if (free_slot < 0) return Status::OK();
        Slot& slot = slots[static_cast<size_t>(free_slot)];
        slot.request.op = VolumeOp::kRead;
        slot.request.offset_bytes = piece.offset_bytes;
        slot.request.length_bytes = piece.length_bytes;
        slot.request.data = slot.buffer.data();
        slot.request.on_complete = [this, free_slot](VolumeRequest&, const Status& s) {
          Slot& done = slots[static_cast<size_t>(free_slot)];
          done.done = true;
          done.status = s;
          --in_flight;
        };
        slot.done = false;
        Status s = snap->Submit(slot.request);
        if (s.IsBusy()) return Status::OK();  // the pool is full: next step
        SNAPDISK_RETURN_IF_ERROR(s);
        slot.busy = true;
        ++in_flight;
        piece.slot = free_slot;
      }
      TakePiece(piece);
      queue.push_back(piece);
    }
    return Status::OK();
  }

  // Writes the pieces at the head of the queue that are ready.
  Status Drain() {
    while (!queue.empty()) {
      const Piece& piece = queue.front();
      if (piece.slot >= 0) {
        Slot& slot = slots[static_cast<size_t>(piece.slot)];
        if (!slot.done) return Status::OK();
        SNAPDISK_RETURN_IF_ERROR(slot.status);
        SNAPDISK_RETURN_IF_ERROR(Emit(piece));
        slot.busy = false;
      } else {
        SNAPDISK_RETURN_IF_ERROR(Emit(piece));
      }
      done_bytes += piece.length_bytes;
      queue.pop_front();
    }
    return Status::OK();
  }

  Status Finish() {
    SNAPDISK_RETURN_IF_ERROR(FlushZero());
    SNAPDISK_RETURN_IF_ERROR(writer->End());
    SNAPDISK_RETURN_IF_ERROR(CloseOutput());
    report.data_records = writer->data_records();
    report.zero_records = writer->zero_records();
    report.stream_bytes = writer->bytes_written();
    return Status::OK();
  }

  bool Step() {
    if (finished) return true;
    if (cancel.load() && error.ok()) {
      error = Status::Cancelled(
          "export-diff of '" + report.volume + "@" + report.snapshot + "' interrupted; " +
          (temp_path.empty() ? "the stream on " + shown + " is incomplete (no end record)"
                             : shown + " was not written"));
    }
    if (error.ok()) error = Drain();
    if (error.ok()) error = Submit();
    if (error.ok() && queue.empty() && next_extent >= extents.size())
      error = Finish();
    else if (error.ok())
      return false;
    if (in_flight > 0) return false;  // the reads must finish before the buffers go
    if (marked_in_use) snap->SetInUse(false);
    marked_in_use = false;
    if (!error.ok()) {
      if (!temp_path.empty()) ::unlink(temp_path.c_str());
      temp_path.clear();
      result = error;
    } else {
      result = report;
    }
    finished = true;
    return true;
  }

  DiffProgress Progress() const {
    return {"export-diff " + report.volume + "@" + report.snapshot, done_bytes, total_bytes};
  }

  Pool& pool;
  std::atomic<bool>& cancel;
  ExportOptions options;
  std::string shown;
  Volume* snap = nullptr;
  bool marked_in_use = false;
  std::vector<Extent> extents;
  size_t next_extent = 0;
  uint64_t extent_done = 0;
  std::vector<Slot> slots;
  std::deque<Piece> queue;
  size_t in_flight = 0;
  UniqueFd owned_fd;
  int out_fd = -1;
  std::string temp_path;
  std::string final_path;
  std::unique_ptr<FdSink> sink;
  std::unique_ptr<DiffWriter> writer;
  uint64_t zero_offset = 0;
  uint64_t zero_length = 0;
  uint64_t done_bytes = 0;
  uint64_t total_bytes = 0;
  Status error;
  bool finished = false;
  ExportReport report;
  Result<ExportReport> result = Status::Busy("export-diff has not finished");
};

ExportJob::ExportJob(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ExportJob::~ExportJob() {
  if (!impl_) return;
  Cancel();
  while (!impl_->Step()) impl_->pool.Poll(1);
}

Result<std::unique_ptr<ExportJob>> ExportJob::Start(Pool& pool, std::string_view volume,
                                                    std::string_view snapshot,
                                                    const std::string& path,
                                                    const ExportOptions& options,
                                                    const std::string& shown) {
  if (options.format != DiffFormat::kV1 && options.format != DiffFormat::kV2) {
    return Status::InvalidArgument("RBD diff format must be 1 or 2");
  }
  SNAPDISK_RETURN_IF_ERROR(pool.GetVolume(volume).status());
  SNAPDISK_ASSIGN_OR_RETURN(SnapshotInfo to, FindSnapshot(pool, volume, snapshot));
  if (!options.from_snapshot.empty()) {
    SNAPDISK_RETURN_IF_ERROR(FindSnapshot(pool, volume, options.from_snapshot).status());
  }
  std::unique_ptr<ExportJob> job(new ExportJob(nullptr));
  job->impl_ = std::make_unique<Impl>(pool, job->cancel_);
  Impl& impl = *job->impl_;
  impl.options = options;
  impl.shown = shown.empty() ? path : shown;
  impl.report.volume = std::string(volume);
  impl.report.snapshot = std::string(snapshot);
  impl.report.from_snapshot = options.from_snapshot;
  impl.report.stream = impl.shown;
  impl.report.format = options.format;
  impl.report.size_bytes = to.size_bytes;
  SNAPDISK_ASSIGN_OR_RETURN(impl.extents, pool.Diff(volume, options.from_snapshot, snapshot));
  for (const Extent& e : impl.extents) impl.total_bytes += e.length_bytes;
  SNAPDISK_ASSIGN_OR_RETURN(impl.snap, pool.OpenSnapshot(volume, snapshot));
  SNAPDISK_RETURN_IF_ERROR(impl.OpenOutput(path));
  impl.sink = std::make_unique<FdSink>(impl.out_fd, impl.shown);
  impl.writer = std::make_unique<DiffWriter>(*impl.sink, options.format);
  std::optional<std::string> from;
  if (!options.from_snapshot.empty()) from = options.from_snapshot;
  SNAPDISK_RETURN_IF_ERROR(impl.writer->Begin(from, std::string(snapshot), to.size_bytes));
  impl.slots.resize(kExportBuffers);
  impl.snap->SetInUse(true);  // nobody deletes the snapshot under the job
  impl.marked_in_use = true;
  return job;
}

bool ExportJob::Step() { return impl_->Step(); }

const Result<ExportReport>& ExportJob::result() const { return impl_->result; }

DiffProgress ExportJob::progress() const { return impl_->Progress(); }

Result<ExportReport> ExportJob::Run(const std::function<bool(const DiffProgress&)>& progress) {
  RunJob(impl_->pool, *this, progress);
  return result();
}

Result<ExportReport> ExportDiff(Pool& pool, std::string_view volume, std::string_view snapshot,
                                const std::string& path, const ExportOptions& options,
                                const std::function<bool(const DiffProgress&)>& progress) {
  SNAPDISK_ASSIGN_OR_RETURN(auto job, ExportJob::Start(pool, volume, snapshot, path, options));
  return job->Run(progress);
}

}  // namespace snapdisk::rbd
