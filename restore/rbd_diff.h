// Ceph RBD export-diff streams (Ceph's doc/dev/rbd-diff.rst, formats v1 and
// v2), both ways: a stream imported onto a volume as an incremental, and a
// volume's snapshot (or the change between two snapshots) exported as one.
//
// The format, little endian throughout:
//   header   "rbd diff v1\n" or "rbd diff v2\n"
//   metadata (any order, each at most once, all before the data records)
//            'f' from snapshot: le32 name length, name
//            't' to snapshot:   le32 name length, name
//            's' image size:    le64 size in bytes (the image's size at 't')
//   data     'w' updated data:  le64 offset, le64 length, `length` bytes
//            'z' zeroed data:   le64 offset, le64 length
//   end      'e'
// In v2 every record but 'e' has a le64 after its tag: the length of what
// follows (4 + name length; 8; 16 + data length; 16).
//
// What this reader accepts beyond the letter of the spec (each refusal is a
// Corruption naming the stream and the byte offset of the record):
//  - data records in any order, overlapping or not, as Ceph's own
//    `rbd import-diff` takes them: applied in stream order, a later record
//    winning where they overlap (rbd export-diff writes them in increasing
//    order, and so does ExportDiff here);
//  - no data beyond the 's' size; no offset + length overflowing 64 bits;
//  - nothing after the end record; a stream that stops before it is
//    truncated;
//  - no unknown tag, in v1 (where it cannot be skipped) and in v2 alike: the
//    spec lets a v2 reader skip one, but a skipped record could hold data and
//    the imported image would silently differ;
//  - in v2, each record's length field must be exactly what its fields take;
//  - snapshot names of 1-4096 bytes (import also needs a snapdisk name);
//  - zero-length 'w'/'z' records are accepted and change nothing.
// A file that does not start with an RBD diff header at all is
// InvalidArgument ("is not an RBD export-diff stream"); "rbd diff vN\n" with
// another N is Unsupported.
//
// Import (like `rbd import-diff`): the whole stream is checked first — every
// record header read and checked, data payloads skipped by their length (no
// data is read) — so a malformed or truncated stream is refused before any
// block is written. Then the target is checked:
//  - 'f' present: the volume must have that snapshot and still equal it (no
//    write, trim or resize since: Pool::Diff empty, same size); a stream
//    without 'f' is a diff from an empty image and applies to any volume
//    (only the ranges it names change: on a volume that is not all zeros the
//    result is not the 't' image).
//  - 't' present: it must be a valid snapshot name the volume does not have
//    (AlreadyExists).
//  - 's' larger than the volume grows it; smaller is Unsupported (volumes
//    never shrink); not a multiple of 512 is InvalidArgument. Without 's',
//    every record must lie inside the volume.
//  - the volume must not be in use by a client (Busy, as rollback), nor
//    still hydrating from a backup (Busy: snapshots would not see that data).
// Then the data is applied ('w' as writes, all-zero blocks of them as
// write-zeroes; 'z' as write-zeroes, so the range reads zeros and whole
// blocks become holes), snapshot 't' is taken and the pool committed.
// Undo: before writing, the job takes a snapshot "import-diff-undo-N" of the
// volume; if the apply fails or is cancelled, the volume is rolled back to it
// (its content is as before; like any rollback this starts a new lineage, and
// a volume the stream grew keeps its new size — the new part reads zeros);
// the undo snapshot is deleted either way. A crash mid-import leaves that
// snapshot behind (delete it, or roll back to it). If the stream file
// changes while it is imported (size or modification time), the import is
// undone with IOError.
//
// Export writes 'f' (with a from snapshot), 't', 's', then the changed
// extents from Pool::Diff in order — 'z' for ranges that are holes in the
// newer snapshot and for all-zero blocks of mapped ranges, 'w' records of at
// most kMaxDataRecordBytes for the rest — then 'e'. Without a from snapshot:
// every mapped range of the snapshot (a diff from an empty image). Output to
// a path goes to a temporary file beside it, fsynced and renamed over the
// path at the end, so a failed or cancelled export leaves no partial stream
// (an existing file is refused unless `overwrite`); to a descriptor (a pipe,
// stdout) it is written in order.
//
// Driving: imports and exports are jobs like backups (snapshot/backup.h):
// Step() does a bounded slice of work and never waits for volume I/O (the
// caller drives Pool::Poll; the stream file is read and written with
// blocking calls of at most a few MiB a step), so the NBD server runs them in
// its event loop while clients keep writing other volumes. While a job runs,
// the volume (import) or snapshot (export) is marked in use, so rollback and
// delete answer Busy. Run(), ImportDiff() and ExportDiff() are the blocking
// forms.
//
// Thread safety: a job, reader or writer belongs to the pool's thread;
// progress() may be read from it between steps, Cancel() from any thread.
// The pool must outlive its jobs.
#pragma once

#include <atomic>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "disk/status.h"
#include "engine/pool.h"

namespace snapdisk::rbd {

enum class DiffFormat : uint8_t { kV1 = 1, kV2 = 2 };

inline constexpr std::string_view kHeaderV1 = "rbd diff v1\n";
inline constexpr std::string_view kHeaderV2 = "rbd diff v2\n";
// Longest snapshot name a stream may carry.
inline constexpr uint32_t kMaxStreamNameBytes = 4096;
// Export cuts updated data into records of at most this many bytes.
inline constexpr uint64_t kMaxDataRecordBytes = uint64_t{4} << 20;

enum class RecordType : char {
  kFromSnap = 'f',
  kToSnap = 't',
  kSize = 's',
  kData = 'w',
  kZero = 'z',
  kEnd = 'e',
};

struct Record {
  RecordType type = RecordType::kEnd;
  uint64_t position = 0;       // stream offset of the tag byte
  std::string snapshot;        // kFromSnap, kToSnap
  uint64_t size_bytes = 0;     // kSize
  uint64_t offset_bytes = 0;   // kData, kZero
  uint64_t length_bytes = 0;   // kData, kZero
  uint64_t data_position = 0;  // kData: stream offset of the payload
};

// What a whole stream says.
struct DiffSummary {
  DiffFormat format = DiffFormat::kV2;
  std::optional<std::string> from_snapshot;
  std::optional<std::string> to_snapshot;
  std::optional<uint64_t> size_bytes;
  uint64_t data_records = 0;
  uint64_t zero_records = 0;
  uint64_t data_bytes = 0;    // payload bytes of 'w' records
  uint64_t zero_bytes = 0;    // bytes covered by 'z' records
  uint64_t end_bytes = 0;     // highest offset + length of a data record (0: none)
  uint64_t stream_bytes = 0;  // through the end record

  // Folds `record` in (the reader has checked it).
  void Add(const Record& record);
};

// Where a stream is read from: positioned reads.
class ByteSource {
 public:
  virtual ~ByteSource() = default;
  // Bytes in the source.
  virtual uint64_t size_bytes() const = 0;
  // Reads min(out.size(), size - position) bytes at `position`; IOError from
  // the system.
  virtual Result<size_t> ReadAt(uint64_t position, std::span<std::byte> out) = 0;
  // For messages: the path, or what the caller named it.
  virtual const std::string& name() const = 0;
};

// A regular file (or block device), opened read-only. NotFound when missing,
// InvalidArgument for a directory or anything that cannot be read by offset.
// `shown`: the name messages use (default: the path).
class FileSource : public ByteSource {
 public:
  static Result<std::unique_ptr<FileSource>> Open(const std::string& path,
                                                  const std::string& shown = "");
  ~FileSource() override;
  uint64_t size_bytes() const override { return size_bytes_; }
  Result<size_t> ReadAt(uint64_t position, std::span<std::byte> out) override;
  const std::string& name() const override { return name_; }
  // OK while the file's size and modification time are what Open saw.
  Status CheckUnchanged() const;

 private:
  FileSource(int fd, std::string name, uint64_t size_bytes, int64_t mtime_ns)
      : fd_(fd), name_(std::move(name)), size_bytes_(size_bytes), mtime_ns_(mtime_ns) {}
  int fd_;
  std::string name_;
  uint64_t size_bytes_;
  int64_t mtime_ns_;
};

// Bytes in memory (tests, small streams). The bytes must outlive it.
class MemorySource : public ByteSource {
 public:
  MemorySource(std::span<const std::byte> bytes, std::string name)
      : bytes_(bytes), name_(std::move(name)) {}
  uint64_t size_bytes() const override { return bytes_.size(); }
  Result<size_t> ReadAt(uint64_t position, std::span<std::byte> out) override;
  const std::string& name() const override { return name_; }

 private:
  std::span<const std::byte> bytes_;
  std::string name_;
};

// Decodes a stream record by record, checking each against the spec and the
// records before it (see the file comment). Payloads are not read: a data
// record gives where its bytes are (Record::data_position). Errors are
// sticky: after one, Next() returns it again.
class DiffReader {
 public:
  // `source` must outlive the reader.
  explicit DiffReader(ByteSource& source);

  // The next record: the header is read by the first call. After the end
  // record (checked to be the last byte of the source), done() is true and
  // Next() must not be called.
  Result<Record> Next();
  bool done() const { return done_; }
  // Valid after the first successful Next().
  DiffFormat format() const { return format_; }
  // Stream offset of the next record.
  uint64_t position() const { return position_; }

 private:
  Status Fail(Status status);
  Status Corrupt(uint64_t at, const std::string& what);
  // Reads exactly out.size() bytes at position_ (through a read-ahead
  // window) and moves on; Corruption naming `field` when the stream ends.
  Status ReadField(std::span<std::byte> out, uint64_t record_at, const char* field);
  Result<uint64_t> ReadLe64(uint64_t record_at, const char* field);
  Result<uint32_t> ReadLe32(uint64_t record_at, const char* field);
  Status ReadHeader();

  ByteSource& source_;
  DiffFormat format_ = DiffFormat::kV2;
  bool started_ = false;
  bool done_ = false;
  bool in_data_ = false;  // a data record was read: no more metadata
  bool seen_from_ = false, seen_to_ = false, seen_size_ = false;
  uint64_t size_bytes_ = 0;  // from 's'
  uint64_t position_ = 0;
  Status error_;
  std::vector<std::byte> window_;
  uint64_t window_position_ = 0;
  size_t window_bytes_ = 0;
};

// Reads the whole stream and returns what it says, or the first problem.
Result<DiffSummary> ScanDiff(ByteSource& source);

// Where a stream is written: in order.
class ByteSink {
 public:
  virtual ~ByteSink() = default;
  virtual Status Write(std::span<const std::byte> bytes) = 0;
};

// Encodes a stream. Records are checked as the reader would check them
// (InvalidArgument otherwise), so a writer never produces a stream the
// reader refuses. `sink` must outlive the writer.
class DiffWriter {
 public:
  DiffWriter(ByteSink& sink, DiffFormat format) : sink_(sink), format_(format) {}

  // The header and the metadata records present in the arguments, in the
  // order f, t, s. Once, first.
  Status Begin(const std::optional<std::string>& from_snapshot,
               const std::optional<std::string>& to_snapshot,
               const std::optional<uint64_t>& size_bytes);
  Status Data(uint64_t offset_bytes, std::span<const std::byte> data);
  Status Zero(uint64_t offset_bytes, uint64_t length_bytes);
  // The end record. Once, last.
  Status End();

  uint64_t bytes_written() const { return bytes_written_; }
  uint64_t data_records() const { return data_records_; }
  uint64_t zero_records() const { return zero_records_; }

 private:
  Status Put(std::span<const std::byte> bytes);
  Status CheckRange(uint64_t offset_bytes, uint64_t length_bytes);
  Status SnapRecord(char tag, const std::string& name);

  ByteSink& sink_;
  const DiffFormat format_;
  bool begun_ = false;
  bool ended_ = false;
  std::optional<uint64_t> size_bytes_;
  uint64_t data_end_ = 0;
  uint64_t bytes_written_ = 0;
  uint64_t data_records_ = 0;
  uint64_t zero_records_ = 0;
};

// ---- Jobs ------------------------------------------------------------------

struct DiffProgress {
  std::string label;  // "check STREAM", "import-diff VOL", "export-diff VOL@SNAP"
  uint64_t done_bytes = 0;
  uint64_t total_bytes = 0;
};

struct ImportReport {
  std::string volume;
  std::string stream;  // the stream's name (path as given)
  DiffSummary summary;
  uint64_t written_bytes = 0;  // data written as data
  uint64_t zeroed_bytes = 0;   // 'z' ranges and all-zero blocks of 'w' data
  uint64_t old_size_bytes = 0;
  uint64_t size_bytes = 0;               // the volume's size afterwards
  std::optional<SnapshotInfo> snapshot;  // taken for 't'
};

class ImportJob {
 public:
  // Opens and checks the stream's header and metadata records and the target
  // volume (see the file comment). Changes nothing. `shown`: the stream's
  // name in messages (default: the path).
  static Result<std::unique_ptr<ImportJob>> Start(Pool& pool, std::string_view volume,
                                                  const std::string& path,
                                                  const std::string& shown = "");
  // Destroying a running job cancels it and waits (driving Pool::Poll) until
  // it is undone: call on the pool's thread.
  ~ImportJob();

  // A bounded slice of work; true once finished (then result()). The step
  // that finishes commits the pool.
  bool Step();
  // Step and Poll until finished; `progress` about every 100 ms (false:
  // cancel).
  Result<ImportReport> Run(const std::function<bool(const DiffProgress&)>& progress = {});
  // The report once finished, else the error (Cancelled after Cancel()).
  const Result<ImportReport>& result() const;
  DiffProgress progress() const;
  void Cancel() { cancel_.store(true); }

  struct Impl;

 private:
  explicit ImportJob(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> cancel_{false};
};

// Imports the stream at `path` onto `volume` (blocking).
Result<ImportReport> ImportDiff(Pool& pool, std::string_view volume, const std::string& path,
                                const std::function<bool(const DiffProgress&)>& progress = {});

struct ExportOptions {
  DiffFormat format = DiffFormat::kV2;
  std::string from_snapshot;  // empty: from an empty image
  bool overwrite = false;     // replace an existing file at the path
  // >= 0: write the stream to this descriptor (not owned; a pipe or stdout)
  // instead of the path, which then only names it in messages.
  int output_fd = -1;
};

struct ExportReport {
  std::string volume;
  std::string snapshot;
  std::string from_snapshot;  // empty: none
  std::string stream;         // the path (or name) written
  DiffFormat format = DiffFormat::kV2;
  uint64_t size_bytes = 0;
  uint64_t data_records = 0;
  uint64_t zero_records = 0;
  uint64_t data_bytes = 0;
  uint64_t zero_bytes = 0;
  uint64_t stream_bytes = 0;
};

class ExportJob {
 public:
  // Resolves the snapshots, computes the diff, creates the output and writes
  // the header and metadata. NotFound (volume, snapshot, from snapshot, the
  // output's directory), AlreadyExists (the file, without overwrite),
  // InvalidArgument (the output is a directory).
  static Result<std::unique_ptr<ExportJob>> Start(Pool& pool, std::string_view volume,
                                                  std::string_view snapshot,
                                                  const std::string& path,
                                                  const ExportOptions& options,
                                                  const std::string& shown = "");
  // Cancels a running job and waits for its reads (drives Pool::Poll).
  ~ExportJob();

  bool Step();
  Result<ExportReport> Run(const std::function<bool(const DiffProgress&)>& progress = {});
  const Result<ExportReport>& result() const;
  DiffProgress progress() const;
  void Cancel() { cancel_.store(true); }

  struct Impl;

 private:
  explicit ExportJob(std::unique_ptr<Impl> impl);
  std::unique_ptr<Impl> impl_;
  std::atomic<bool> cancel_{false};
};

// Exports `volume`@`snapshot` (from options.from_snapshot) to `path`
// (blocking).
Result<ExportReport> ExportDiff(Pool& pool, std::string_view volume, std::string_view snapshot,
                                const std::string& path, const ExportOptions& options = {},
                                const std::function<bool(const DiffProgress&)>& progress = {});

}  // namespace snapdisk::rbd
