#include "tools/cli/transfer.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <deque>
#include <functional>

#include "disk/bytes.h"
#include "engine/aligned_buffer.h"
#include "engine/pool.h"
#include "engine/volume.h"
#include "restore/restore_apply.h"
#include "tools/cli/exit_codes.h"
#include "tools/cli/progress.h"
#include "tools/cli/report.h"

namespace snapdisk::cli {

namespace {

constexpr size_t kChunkBytes = size_t{1} << 20;
constexpr size_t kSlots = 32;
// A pipe's volume grows once per batch; half the slots, so the next batch is
// read while the previous one is written.
constexpr size_t kStreamBatch = kSlots / 2;

// Calls fn(start, length) for each maximal run of `data` (placed at volume
// offset `offset`) made of pool blocks that are not all zeros. Blocks are cut
// at multiples of `block` in volume space.
void ForEachNonZeroRun(const std::byte* data, uint64_t offset, size_t length, uint32_t block,
                       const std::function<void(size_t, size_t)>& fn) {
  size_t run_start = 0, run_length = 0;
  size_t pos = 0;
  while (pos < length) {
    const uint64_t abs = offset + pos;
    const size_t piece = static_cast<size_t>(std::min<uint64_t>(length - pos, block - abs % block));
    if (IsAllZero(data + pos, piece)) {
      if (run_length > 0) fn(run_start, run_length);
      run_length = 0;
    } else {
      if (run_length == 0) run_start = pos;
      run_length += piece;
    }
    pos += piece;
  }
  if (run_length > 0) fn(run_start, run_length);
}

class FdCloser {
 public:
  FdCloser(int fd, bool own) : fd_(fd), own_(own) {}
  ~FdCloser() {
    if (own_ && fd_ >= 0) ::close(fd_);
  }
  FdCloser(const FdCloser&) = delete;
  FdCloser& operator=(const FdCloser&) = delete;

 private:
  int fd_;
  bool own_;
};

// Reads up to `length` bytes at `offset` (pread) or from the stream (read),
// retrying short reads; returns the bytes read (fewer only at end of input).
Result<size_t> ReadFull(int fd, std::byte* buf, size_t length, int64_t offset,
                        const std::string& what) {
  size_t done = 0;
  while (done < length) {
    const ssize_t n = offset >= 0 ? ::pread(fd, buf + done, length - done,
                                            static_cast<off_t>(offset + static_cast<int64_t>(done)))
                                  : ::read(fd, buf + done, length - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "read " + what);
    }
    if (n == 0) break;
    done += static_cast<size_t>(n);
  }
  return done;
}

Status WriteFull(int fd, const std::byte* buf, size_t length, int64_t offset,
                 const std::string& what) {
  size_t done = 0;
  while (done < length) {
    const ssize_t n = offset >= 0
                          ? ::pwrite(fd, buf + done, length - done,
                                     static_cast<off_t>(offset + static_cast<int64_t>(done)))
                          : ::write(fd, buf + done, length - done);
    if (n < 0) {
      if (errno == EINTR) continue;
      return Status::FromErrno(errno, "write " + what);
    }
    done += static_cast<size_t>(n);
  }
  return Status::OK();
}

// Fixed buffers and volume requests for many I/Os in flight; a buffer is
// free again once every request that uses it has completed.
class Pipeline {
 public:
  Pipeline(Pool& pool, Volume& volume) : pool_(pool), volume_(volume), block_(pool.block_bytes()) {
    for (size_t i = 0; i < kSlots; ++i) {
      slots_.emplace_back(kChunkBytes);
      free_.push_back(i);
    }
    pending_.assign(kSlots, 0);
  }
  ~Pipeline() { (void)Drain(); }

  std::byte* data(size_t slot) { return slots_[slot].data(); }
  uint32_t block_bytes() const { return block_; }
  const Status& error() const { return error_; }
  bool has_free_slot() const { return !free_.empty(); }

  // A free buffer, polling the pool until one is. The caller holds it until
  // Release(); it is free again once released and its requests are done.
  Result<size_t> TakeSlot() {
    while (free_.empty()) {
      SNAPDISK_RETURN_IF_ERROR(error_);
      SNAPDISK_CHECK(outstanding_ > 0, "no free buffer and nothing in flight");
      pool_.Poll(1);
    }
    SNAPDISK_RETURN_IF_ERROR(error_);
    const size_t slot = free_.back();
    free_.pop_back();
    held_[slot] = true;
    return slot;
  }
  void Release(size_t slot) {
    SNAPDISK_CHECK(held_[slot], "releasing a buffer not taken");
    held_[slot] = false;
    if (pending_[slot] == 0) free_.push_back(slot);
  }

  // Submits `op` on [offset, offset+length) of the volume with the buffer at
  // `slot` + `buffer_offset` (a slot the caller holds). `done` runs on
  // completion.
  Status Submit(size_t slot, VolumeOp op, uint64_t offset, size_t buffer_offset, size_t length,
                std::function<void(const Status&)> done = {}) {
    VolumeRequest* r = GetRequest();
    r->op = op;
    r->offset_bytes = offset;
    r->length_bytes = length;
    r->data = data(slot) + buffer_offset;
    ++pending_[slot];
    ++outstanding_;
    r->on_complete = [this, slot, done = std::move(done)](VolumeRequest& req, const Status& s) {
      if (!s.ok() && error_.ok()) error_ = s;
      if (done) done(s);
      --outstanding_;
      requests_free_.push_back(&req);
      if (--pending_[slot] == 0 && !held_[slot]) free_.push_back(slot);
    };
    for (;;) {
      Status s = volume_.Submit(*r);
      if (s.ok()) break;
      if (s.IsBusy() && pool_.in_flight() > 0) {  // the pool's request limit: wait for room
        pool_.Poll(1);
        continue;
      }
      --pending_[slot];
      --outstanding_;
      requests_free_.push_back(r);
      if (error_.ok()) error_ = s;
      return s;
    }
    return Status::OK();
  }

  // Waits for every request in flight.
  Status Drain() {
    while (outstanding_ > 0) pool_.Poll(1);
    return error_;
  }
  void Poll() {
    if (outstanding_ > 0) pool_.Poll(1);
  }

 private:
  VolumeRequest* GetRequest() {
    if (requests_free_.empty()) {
      requests_.emplace_back();
      return &requests_.back();
    }
    VolumeRequest* r = requests_free_.back();
    requests_free_.pop_back();
    return r;
  }

  Pool& pool_;
  Volume& volume_;
  const uint32_t block_;
  std::vector<AlignedBuffer> slots_;
  std::vector<size_t> free_;
  std::vector<uint32_t> pending_;
  std::vector<bool> held_ = std::vector<bool>(kSlots, false);
  uint64_t outstanding_ = 0;
  std::deque<VolumeRequest> requests_;  // stable addresses
  std::vector<VolumeRequest*> requests_free_;
  Status error_;
};

uint64_t RoundUp512(uint64_t v) { return (v + 511) / 512 * 512; }

// ---- Import -----------------------------------------------------------------

class Importer {
 public:
  Importer(CommandContext& ctx, const ImportArgs& args, int fd, std::string shown)
      : ctx_(ctx), pool_(ctx.pool()), args_(args), fd_(fd), shown_(std::move(shown)) {}

  // Seekable input of `image_bytes` from `base`: creates the volume, writes
  // the data segments.
  Status FromFile(int64_t base, uint64_t image_bytes, bool use_seek_data) {
    SNAPDISK_RETURN_IF_ERROR(Create(args_.size_bytes ? args_.size_bytes : image_bytes));
    Pipeline pipe(pool_, *volume_);
    total_ = image_bytes;
    uint64_t pos = 0;  // relative to base
    while (pos < image_bytes) {
      uint64_t data_start = pos, data_end = image_bytes;
      if (use_seek_data) {
        const off_t d =
            ::lseek(fd_, static_cast<off_t>(base + static_cast<int64_t>(pos)), SEEK_DATA);
        if (d < 0 && errno == ENXIO) break;  // only a hole is left
        if (d >= 0) {
          data_start = static_cast<uint64_t>(d - base);
          const off_t h = ::lseek(fd_, d, SEEK_HOLE);
          if (h >= 0) data_end = std::min<uint64_t>(image_bytes, static_cast<uint64_t>(h - base));
        }
        // Anything else (EINVAL: no SEEK_DATA here): read it all.
      }
      if (data_start >= image_bytes) break;
      for (uint64_t at = data_start; at < data_end;) {
        if (ctx_.out().Cancelled()) return Status::Cancelled("interrupted");
        const uint64_t chunk_end = std::min(data_end, (at / kChunkBytes + 1) * kChunkBytes);
        const size_t length = static_cast<size_t>(chunk_end - at);
        SNAPDISK_ASSIGN_OR_RETURN(size_t slot, pipe.TakeSlot());
        SNAPDISK_ASSIGN_OR_RETURN(size_t got, ReadFull(fd_, pipe.data(slot), length,
                                                       base + static_cast<int64_t>(at), shown_));
        Status s = got < length
                       ? Status::IOError("image " + shown_ + " shrank while it was being imported")
                       : WriteNonZero(pipe, slot, at, length);
        pipe.Release(slot);
        SNAPDISK_RETURN_IF_ERROR(s);
        at = chunk_end;
        ctx_.out().Progress(label(), at, total_, ProgressUnit::kBytes);
      }
      pos = data_end;
    }
    SNAPDISK_RETURN_IF_ERROR(pipe.Drain());
    read_bytes_ = image_bytes;
    return Status::OK();
  }

  // A pipe: the size is known only at its end.
  Status FromStream() {
    uint64_t pos = 0;
    bool eof = false;
    std::unique_ptr<Pipeline> pipe;
    // Before the volume exists there is no pipeline: read the first chunk
    // into a buffer of our own.
    AlignedBuffer first(kChunkBytes);
    SNAPDISK_ASSIGN_OR_RETURN(size_t got, ReadFull(fd_, first.data(), kChunkBytes, -1, shown_));
    if (got == 0) return Status::InvalidArgument("image " + shown_ + " is empty");
    eof = got < kChunkBytes;
    if (args_.size_bytes && got > args_.size_bytes) return TooLarge();
    SNAPDISK_RETURN_IF_ERROR(Create(args_.size_bytes ? args_.size_bytes : RoundUp512(got)));
    pipe = std::make_unique<Pipeline>(pool_, *volume_);
    {
      SNAPDISK_ASSIGN_OR_RETURN(size_t slot, pipe->TakeSlot());
      std::memcpy(pipe->data(slot), first.data(), got);
      Status s = WriteNonZero(*pipe, slot, 0, got);
      pipe->Release(slot);
      SNAPDISK_RETURN_IF_ERROR(s);
      pos = got;
      ctx_.out().Progress(label(), pos, args_.size_bytes, ProgressUnit::kBytes);
    }
    while (!eof) {
      // Read a batch while earlier writes are in flight.
      std::vector<std::pair<size_t, size_t>> batch;  // slot, length
      uint64_t batch_end = pos;
      while (!eof && batch.size() < kStreamBatch) {
        if (ctx_.out().Cancelled()) return Status::Cancelled("interrupted");
        auto slot = pipe->TakeSlot();
        auto n = slot.ok() ? ReadFull(fd_, pipe->data(*slot), kChunkBytes, -1, shown_)
                           : Result<size_t>(slot.status());
        if (!n.ok()) {
          if (slot.ok()) pipe->Release(*slot);
          for (auto& [taken, length] : batch) pipe->Release(taken);
          return n.status();
        }
        eof = *n < kChunkBytes;
        if (*n == 0) {
          pipe->Release(*slot);
          break;
        }
        batch.emplace_back(*slot, *n);
        batch_end += *n;
      }
      if (batch.empty()) break;
      Status s;
      if (args_.size_bytes) {
        if (batch_end > args_.size_bytes) s = TooLarge();
      } else if (RoundUp512(batch_end) > volume_->size_bytes()) {
        // Grow with nothing in flight: the map's height may change.
        s = pipe->Drain();
        if (s.ok()) s = pool_.GrowVolume(args_.volume, RoundUp512(batch_end));
      }
      for (auto& [slot, length] : batch) {
        if (s.ok()) {
          s = WriteNonZero(*pipe, slot, pos, length);
          pos += length;
        }
        pipe->Release(slot);
      }
      SNAPDISK_RETURN_IF_ERROR(s);
      ctx_.out().Progress(label(), pos, args_.size_bytes, ProgressUnit::kBytes);
    }
    SNAPDISK_RETURN_IF_ERROR(pipe->Drain());
    pipe.reset();
    read_bytes_ = pos;
    if (!args_.size_bytes && pos % 512 != 0) return NotSectorMultiple(pos);
    return Status::OK();
  }

  // Undoes a failed import: deletes the volume and commits.
  void Undo() {
    if (!created_) return;
    Status s = pool_.DeleteVolume(args_.volume);
    if (s.ok()) s = pool_.Commit();
    if (!s.ok())
      ctx_.Note("could not delete the half-imported volume '" + args_.volume +
                "': " + s.ToString());
    created_ = false;
  }

  Status NotSectorMultiple(uint64_t bytes) const {
    return Status::InvalidArgument("image " + shown_ + " is " + std::to_string(bytes) +
                                   " bytes, not a multiple of 512: pad it (truncate -s %512 FILE) "
                                   "or give --size");
  }

  uint64_t read_bytes() const { return read_bytes_; }
  uint64_t data_bytes() const { return data_bytes_; }

 private:
  std::string label() const { return "import " + args_.volume; }

  Status TooLarge() const {
    return Status::InvalidArgument("image " + shown_ + " is larger than --size " +
                                   std::to_string(args_.size_bytes) + " bytes");
  }

  Status Create(uint64_t size_bytes) {
    SNAPDISK_RETURN_IF_ERROR(pool_.CreateVolume(args_.volume, size_bytes, args_.profile).status());
    created_ = true;
    SNAPDISK_ASSIGN_OR_RETURN(volume_, pool_.OpenVolume(args_.volume));
    return Status::OK();
  }

  // Queues writes of the slot's non-zero blocks (the volume is all zeros).
  Status WriteNonZero(Pipeline& pipe, size_t slot, uint64_t offset, size_t length) {
    Status s;
    ForEachNonZeroRun(pipe.data(slot), offset, length, pipe.block_bytes(),
                      [&](size_t start, size_t run) {
                        if (!s.ok()) return;
                        s = pipe.Submit(slot, VolumeOp::kWrite, offset + start, start, run);
                        if (s.ok()) data_bytes_ += run;
                      });
    return s;
  }

  CommandContext& ctx_;
  Pool& pool_;
  const ImportArgs& args_;
  const int fd_;
  const std::string shown_;
  Volume* volume_ = nullptr;
  bool created_ = false;
  uint64_t total_ = 0;
  uint64_t read_bytes_ = 0;
  uint64_t data_bytes_ = 0;
};

}  // namespace

int ImportImage(CommandContext& ctx, const ImportArgs& args) {
  Pool& pool = ctx.pool();
  if (pool.GetVolume(args.volume).ok()) {
    return ctx.Fail(Status::AlreadyExists("volume '" + args.volume + "' already exists"));
  }
  const bool from_stdin = args.file == "-";
  const std::string shown = from_stdin ? "on stdin" : args.file;
  int fd = ctx.stdin_fd();
  if (!from_stdin) {
    fd = ::open(ctx.ResolvePath(args.file).c_str(), O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
      if (errno == ENOENT) {
        return ctx.Fail(Status::NotFound("image " + args.file + " does not exist"));
      }
      return ctx.Fail(Status::FromErrno(errno, "open image " + args.file));
    }
  }
  FdCloser closer(fd, !from_stdin);
  struct stat st;
  if (::fstat(fd, &st) != 0) return ctx.Fail(Status::FromErrno(errno, "stat image " + shown));
  if (S_ISDIR(st.st_mode)) {
    return ctx.Fail(Status::InvalidArgument("image " + args.file + " is a directory"));
  }
  const int64_t start_ns = MonotonicNs();
  Importer importer(ctx, args, fd, shown);
  Status s;
  if (S_ISREG(st.st_mode) || S_ISBLK(st.st_mode)) {
    int64_t base = 0;
    if (from_stdin) base = std::max<int64_t>(0, ::lseek(fd, 0, SEEK_CUR));
    const int64_t end = S_ISREG(st.st_mode) ? st.st_size : ::lseek(fd, 0, SEEK_END);
    const uint64_t image_bytes = end > base ? static_cast<uint64_t>(end - base) : 0;
    if (image_bytes == 0) {
      s = Status::InvalidArgument("image " + shown + " is empty");
    } else if (args.size_bytes == 0 && image_bytes % 512 != 0) {
      s = importer.NotSectorMultiple(image_bytes);
    } else if (args.size_bytes != 0 && image_bytes > args.size_bytes) {
      s = Status::InvalidArgument("image " + shown + " is " + std::to_string(image_bytes) +
                                  " bytes, larger than --size " + std::to_string(args.size_bytes));
    } else {
      s = importer.FromFile(base, image_bytes, S_ISREG(st.st_mode));
    }
  } else {
    if (args.size_bytes == 0 && args.profile != EssdLevel::kUnlimited) {
      s = Status::InvalidArgument(
          "the size of an image on a pipe is not known in advance: give --size with --profile " +
          std::string(EssdLevelName(args.profile)));
    } else {
      s = importer.FromStream();
    }
  }
  if (s.ok() && !args.snapshot.empty()) {
    s = pool.CreateSnapshot(args.volume, args.snapshot).status();
  }
  if (s.ok()) s = pool.Commit();
  ctx.out().ProgressEnd();
  if (!s.ok()) {
    importer.Undo();
    if (s.IsCancelled()) {
      return ctx.Fail(
          Status::Cancelled("import interrupted; volume '" + args.volume + "' was not created"));
    }
    return ctx.Fail(s);
  }
  auto info = pool.GetVolume(args.volume);
  if (!info.ok()) return ctx.Fail(info.status());
  const double seconds = static_cast<double>(MonotonicNs() - start_ns) / 1e9;
  if (ctx.json()) {
    ctx.PrintJson({{"volume", VolumeJson(*info)},
                   {"snapshot", args.snapshot.empty() ? nlohmann::ordered_json(nullptr)
                                                      : nlohmann::ordered_json(args.snapshot)},
                   {"image_bytes", importer.read_bytes()},
                   {"written_bytes", importer.data_bytes()},
                   {"seconds", seconds}});
  } else {
    ctx.Print("Imported " + HumanBytes(importer.read_bytes()) + " into volume '" + args.volume +
              "' (" + HumanBytes(info->size_bytes) + ", " + HumanBytes(importer.data_bytes()) +
              " of data, the rest holes) in " + HumanSeconds(seconds) +
              (args.snapshot.empty() ? std::string()
                                     : "; created snapshot '" + args.volume + "@" +
                                           args.snapshot + "'") +
              "\n");
  }
  return kExitOk;
}

// ---- Export -----------------------------------------------------------------

namespace {

// Volume maps are read a window at a time, so memory does not grow with the
// volume's size.
constexpr uint64_t kMapWindowBytes = uint64_t{1} << 30;

struct Piece {
  uint64_t offset = 0;
  uint64_t length = 0;
  bool hole = false;
  size_t slot = 0;
  bool done = false;
};

// The volume's extents in order, cut into pieces of at most kChunkBytes
// (aligned to kChunkBytes); holes skipped unless `with_holes`.
class PieceCursor {
 public:
  PieceCursor(Volume& volume, bool with_holes)
      : volume_(volume), size_(volume.size_bytes()), with_holes_(with_holes) {}

  // The next piece; false at the end.
  Result<bool> Next(Piece* piece) {
    for (;;) {
      if (index_ < extents_.size()) {
        const Extent& e = extents_[index_];
        if (e.zero && !with_holes_) {
          ++index_;
          continue;
        }
        const uint64_t at = e.offset_bytes + within_;
        const uint64_t end =
            std::min(e.offset_bytes + e.length_bytes, (at / kChunkBytes + 1) * kChunkBytes);
        *piece = Piece{at, end - at, e.zero};
        within_ += end - at;
        if (within_ == e.length_bytes) {
          ++index_;
          within_ = 0;
        }
        return true;
      }
      if (window_ >= size_) return false;
      const uint64_t length = std::min(kMapWindowBytes, size_ - window_);
      SNAPDISK_ASSIGN_OR_RETURN(extents_, volume_.MapExtents(window_, length));
      window_ += length;
      index_ = 0;
      within_ = 0;
    }
  }

 private:
  Volume& volume_;
  const uint64_t size_;
  const bool with_holes_;
  uint64_t window_ = 0;  // where the next window of the map starts
  std::vector<Extent> extents_;
  size_t index_ = 0;
  uint64_t within_ = 0;  // bytes of extents_[index_] already given out
};

}  // namespace

Result<uint64_t> MappedBytes(Volume& volume) {
  uint64_t mapped = 0;
  for (uint64_t at = 0; at < volume.size_bytes(); at += kMapWindowBytes) {
    SNAPDISK_ASSIGN_OR_RETURN(
        auto extents, volume.MapExtents(at, std::min(kMapWindowBytes, volume.size_bytes() - at)));
    for (const Extent& e : extents) mapped += e.zero ? 0 : e.length_bytes;
  }
  return mapped;
}

int ExportImage(CommandContext& ctx, const ExportArgs& args) {
  Pool& pool = ctx.pool();
  const std::string what = args.snapshot.empty()
                               ? "volume '" + args.volume + "'"
                               : "snapshot '" + args.volume + "@" + args.snapshot + "'";
  auto opened = args.snapshot.empty() ? pool.OpenVolume(args.volume)
                                      : pool.OpenSnapshot(args.volume, args.snapshot);
  if (!opened.ok()) return ctx.Fail(opened.status());
  if (Status s = CheckNotRestoring(pool, args.volume, "exported"); !s.ok()) return ctx.Fail(s);
  Volume& volume = **opened;
  const uint64_t size = volume.size_bytes();
  auto mapped = MappedBytes(volume);
  if (!mapped.ok()) return ctx.Fail(mapped.status());
  const uint64_t data_total = *mapped;

  const bool to_stdout = args.file == "-";
  const std::string shown = to_stdout ? "stdout" : args.file;
  const std::string path = to_stdout ? std::string() : ctx.ResolvePath(args.file);
  int fd = ctx.stdout_fd();
  if (to_stdout) {
    if (::isatty(fd) == 1) {
      return ctx.Fail(Status::InvalidArgument(
          "refusing to write a disk image to a terminal; redirect stdout or give a FILE"));
    }
  } else {
    struct stat target, pool_st;
    if (::stat(path.c_str(), &target) == 0) {
      if (S_ISDIR(target.st_mode)) {
        return ctx.Fail(Status::InvalidArgument(args.file + " is a directory"));
      }
      const std::string pool_file = ctx.ResolvePath(ctx.pool_path());
      if (::stat(pool_file.c_str(), &pool_st) == 0 && pool_st.st_dev == target.st_dev &&
          pool_st.st_ino == target.st_ino) {
        return ctx.Fail(Status::InvalidArgument(args.file + " is the pool file itself"));
      }
    }
    fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) {
      if (errno == ENOENT) {
        return ctx.Fail(Status::NotFound("directory of " + args.file + " does not exist"));
      }
      return ctx.Fail(Status::FromErrno(errno, "open " + args.file));
    }
  }
  FdCloser closer(fd, !to_stdout);
  struct stat st;
  if (::fstat(fd, &st) != 0) return ctx.Fail(Status::FromErrno(errno, "stat " + shown));
  // Sparse output needs a regular file written by offset from its start:
  // not one opened for appending, nor a redirected stdout already written to.
  const int flags = ::fcntl(fd, F_GETFL);
  const bool sparse = S_ISREG(st.st_mode) && flags >= 0 && !(flags & O_APPEND) &&
                      (!to_stdout || ::lseek(fd, 0, SEEK_CUR) == 0);
  const int64_t start_ns = MonotonicNs();

  const uint64_t total = sparse ? data_total : size;

  Status s;
  if (sparse && (::ftruncate(fd, 0) != 0 || ::ftruncate(fd, static_cast<off_t>(size)) != 0)) {
    s = Status::FromErrno(errno, "truncate " + args.file);
  }
  uint64_t done_bytes = 0, written_bytes = 0;
  {
    Pipeline pipe(pool, volume);
    PieceCursor cursor(volume, /*with_holes=*/!sparse);
    std::deque<Piece> window;  // pieces started, in order (deque: stable references)
    bool more = true;
    static const AlignedBuffer kZeros(kChunkBytes);
    while (s.ok() && (more || !window.empty())) {
      if (ctx.out().Cancelled()) {
        s = Status::Cancelled("interrupted");
        break;
      }
      // Start reads while buffers are free.
      while (more && pipe.has_free_slot() && window.size() < 4 * kSlots) {
        Piece next;
        auto got = cursor.Next(&next);
        if (!got.ok()) {
          s = got.status();
          break;
        }
        more = *got;
        if (!more) break;
        window.push_back(next);
        Piece& p = window.back();
        if (p.hole) {
          p.done = true;
          continue;
        }
        auto slot = pipe.TakeSlot();  // has_free_slot: no wait
        if (!slot.ok()) {
          s = slot.status();
          window.pop_back();
          break;
        }
        p.slot = *slot;
        s = pipe.Submit(p.slot, VolumeOp::kRead, p.offset, 0, p.length,
                        [&p](const Status&) { p.done = true; });
        if (!s.ok()) {
          pipe.Release(p.slot);
          window.pop_back();
          break;
        }
      }
      if (!s.ok()) break;
      // Write out what is ready, in order.
      while (!window.empty() && window.front().done) {
        Piece& p = window.front();
        s = pipe.error();
        if (!s.ok()) break;
        if (p.hole) {
          s = WriteFull(fd, kZeros.data(), p.length, -1, shown);
        } else if (sparse) {
          ForEachNonZeroRun(pipe.data(p.slot), p.offset, p.length, pool.block_bytes(),
                            [&](size_t start, size_t run) {
                              if (!s.ok()) return;
                              s = WriteFull(fd, pipe.data(p.slot) + start, run,
                                            static_cast<int64_t>(p.offset + start), shown);
                              written_bytes += run;
                            });
        } else {
          s = WriteFull(fd, pipe.data(p.slot), p.length, -1, shown);
          written_bytes += p.length;
        }
        if (!p.hole) pipe.Release(p.slot);
        done_bytes += p.length;
        window.pop_front();
        ctx.out().Progress("export " + args.volume, done_bytes, total, ProgressUnit::kBytes);
      }
      if (!s.ok()) break;
      if (!window.empty() && !window.front().done) pipe.Poll();
    }
    Status drained = pipe.Drain();
    if (s.ok()) s = drained;
    for (const Piece& p : window) {
      if (!p.hole) pipe.Release(p.slot);
    }
  }
  ctx.out().ProgressEnd();
  if (!s.ok()) {
    if (!to_stdout) ::unlink(path.c_str());
    if (s.IsCancelled()) {
      return ctx.Fail(Status::Cancelled("export interrupted" +
                                        std::string(to_stdout ? "" : "; removed " + args.file)));
    }
    return ctx.Fail(s.WithContext("export of " + what + " failed" +
                                  (to_stdout ? "" : " (removed " + args.file + ")")));
  }
  const double seconds = static_cast<double>(MonotonicNs() - start_ns) / 1e9;
  if (ctx.json()) {
    ctx.PrintJson({{"volume", args.volume},
                   {"snapshot", args.snapshot.empty() ? nlohmann::ordered_json(nullptr)
                                                      : nlohmann::ordered_json(args.snapshot)},
                   {"file", to_stdout ? "-" : args.file},
                   {"size_bytes", size},
                   {"data_bytes", data_total},
                   {"written_bytes", written_bytes},
                   {"seconds", seconds}});
  } else {
    const std::string line = "Exported " + what + " (" + HumanBytes(size) + ", " +
                             HumanBytes(data_total) + " mapped) to " + shown + " in " +
                             HumanSeconds(seconds) + "\n";
    if (to_stdout) {
      ctx.out().Stderr(line);
    } else {
      ctx.Print(line);
    }
  }
  return kExitOk;
}

}  // namespace snapdisk::cli
