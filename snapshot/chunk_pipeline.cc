#include "snapshot/chunk_pipeline.h"

#include <chrono>

#include "disk/thread_placement.h"

namespace snapdisk {

namespace {

// Variant keys tried after a chunk's own key turned out burned (expired: a
// WORM key is never written twice). A handful suffice: each one burns only
// when a whole generation of sets using it expired.
constexpr int kMaxChunkKeyVariants = 1000;

bool IsVariantOf(std::string_view key, std::string_view base) {
  if (key.size() <= base.size() + 1 || key.substr(0, base.size()) != base ||
      key[base.size()] != '.') {
    return false;
  }
  for (char c : key.substr(base.size() + 1)) {
    if (c < '0' || c > '9') return false;
  }
  return true;
}

// Shares an existing object: retained until `until` afterwards, or an error.
Status ShareExisting(WormStore& store, const WormObjectInfo& object, int64_t until,
                     ChunkInfo* info) {
  SNAPDISK_RETURN_IF_ERROR(
      store.RetainAtLeast(std::span<const std::string>(&object.key, 1), until));
  info->key = object.key;
  info->stored_bytes = object.size_bytes;
  info->new_in_set = false;
  return Status::OK();
}

}  // namespace

ChunkPipeline::ChunkPipeline(WormStore& store, const Options& options)
    : store_(store), options_(options) {
  SNAPDISK_CHECK(options.worker_threads >= 1 && options.buffers >= 1, "pipeline without workers");
  SNAPDISK_CHECK(::sem_init(&work_sem_, 0, 0) == 0, "sem_init failed");
  buffer_storage_.reserve(options.buffers);
  spare_buffers_.reserve(options.buffers);
  free_buffers_.reserve(options.buffers);
  for (uint32_t i = 0; i < options.buffers; ++i) {
    // Uninitialized: a buffer is always filled before it is read, and
    // zeroing 20 MiB of buffers up front took ~12 ms of the pool's thread at
    // the start of every backup (the comparator measured it).
    buffer_storage_.emplace_back(options.chunk_bytes, AlignedBuffer::kUninitialized);
    spare_buffers_.push_back(buffer_storage_.back().data());
  }
  outputs_.reserve(options.buffers + options.max_other_tasks);
  inbox_.reserve(options.buffers + options.max_other_tasks);
  workers_.reserve(options.worker_threads);
  for (uint32_t i = 0; i < options.worker_threads; ++i) {
    workers_.emplace_back([this] { WorkerLoop(); });
  }
}

ChunkPipeline::~ChunkPipeline() {
  {
    std::lock_guard<std::mutex> lock(mu_);
    stopping_ = true;
    queue_.clear();
  }
  for (size_t i = 0; i < workers_.size(); ++i) ::sem_post(&work_sem_);
  for (std::thread& t : workers_) t.join();
  ::sem_destroy(&work_sem_);
}

void ChunkPipeline::Exchange(bool wait) {
  std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
  if (wait) {
    lock.lock();
  } else if (!lock.try_lock()) {
    return;  // a worker holds it: the next call exchanges
  }
  const size_t queued = outbox_.size();
  for (Task& t : outbox_) queue_.push_back(std::move(t));
  outbox_.clear();
  spare_buffers_.insert(spare_buffers_.end(), free_buffers_.begin(), free_buffers_.end());
  free_buffers_.clear();
  for (Output& o : outputs_) inbox_.push_back(std::move(o));
  outputs_.clear();
  lock.unlock();
  for (size_t i = 0; i < queued; ++i) ::sem_post(&work_sem_);  // never blocks
}

std::byte* ChunkPipeline::AcquireBuffer() {
  if (spare_buffers_.empty()) Exchange(/*wait=*/false);
  if (spare_buffers_.empty()) return nullptr;
  std::byte* b = spare_buffers_.back();
  spare_buffers_.pop_back();
  return b;
}

void ChunkPipeline::ReleaseBuffer(std::byte* buffer) { spare_buffers_.push_back(buffer); }

void ChunkPipeline::SubmitChunk(std::byte* buffer, uint64_t length_bytes, uint64_t tag, Fill fill) {
  SNAPDISK_CHECK(length_bytes > 0 && length_bytes <= options_.chunk_bytes, "bad chunk length");
  if (cancelled_) {
    spare_buffers_.push_back(buffer);
    return;
  }
  outbox_.push_back(Task{tag, buffer, length_bytes, std::move(fill), {}});
  ++pending_;
  Exchange(/*wait=*/false);
}

bool ChunkPipeline::TrySubmitTask(std::function<Status()> task, uint64_t tag) {
  if (cancelled_) return true;  // dropped, as queued tasks are
  if (other_tasks_ >= options_.max_other_tasks) return false;
  ++other_tasks_;
  ++pending_;
  outbox_.push_back(Task{tag, nullptr, 0, {}, std::move(task)});
  Exchange(/*wait=*/false);
  return true;
}

void ChunkPipeline::TakeOutputs(std::vector<Output>& out) {
  Exchange(/*wait=*/false);
  for (Output& o : inbox_) {
    if (!o.is_chunk) --other_tasks_;
    --pending_;
    out.push_back(std::move(o));
  }
  inbox_.clear();
}

void ChunkPipeline::WaitForOutput(int64_t timeout_ns) {
  Exchange(/*wait=*/true);
  if (!inbox_.empty() || pending_ == 0) return;
  std::unique_lock<std::mutex> lock(mu_);
  output_cv_.wait_for(lock, std::chrono::nanoseconds(timeout_ns),
                      [this] { return !outputs_.empty() || (queue_.empty() && running_ == 0); });
}

size_t ChunkPipeline::pending() const { return pending_; }

void ChunkPipeline::Cancel() {
  cancelled_ = true;
  auto drop = [this](Task& t) {
    if (t.buffer != nullptr) {
      spare_buffers_.push_back(t.buffer);
    } else {
      --other_tasks_;
    }
    --pending_;
  };
  for (Task& t : outbox_) drop(t);
  outbox_.clear();
  std::lock_guard<std::mutex> lock(mu_);
  for (Task& t : queue_) drop(t);
  queue_.clear();
  output_cv_.notify_all();
}

// Chunks a job remembers having stored (for sharing repeats without a store
// lookup): ~200 bytes each, so at most ~13 MiB; past it, repeats are found
// by the store lookup as before (and may be stored twice if racing).
constexpr size_t kMaxRememberedChunks = 65536;

void ChunkPipeline::WorkerLoop() {
  MoveThisThreadTo(options_.worker_cpus);
  if (options_.lowest_priority) LowerThisThreadToLowest();
  std::vector<std::byte> encode_buffer;
  std::unique_lock<std::mutex> lock(mu_, std::defer_lock);
  while (true) {
    while (::sem_wait(&work_sem_) != 0) {
    }  // EINTR
    lock.lock();
    if (stopping_) return;
    if (queue_.empty()) {  // its task was cancelled
      lock.unlock();
      continue;
    }
    Task task = std::move(queue_.front());
    queue_.pop_front();
    ++running_;
    lock.unlock();

    Output out;
    out.tag = task.tag;
    if (task.buffer != nullptr) {
      out.is_chunk = true;
      if (task.fill) out.status = task.fill(task.buffer);
    }
    if (task.buffer != nullptr && out.status.ok()) {
      const std::span<const std::byte> raw(task.buffer, task.length_bytes);
      // A chunk this job stored already (or is storing: wait for it) is
      // shared, not looked up and put again: repeated content (a log stream
      // of one byte, identical blocks) is stored once even when two workers
      // get it at the same time.
      const std::string hash = ChunkHash(raw);
      bool shared = false;
      {
        std::unique_lock<std::mutex> seen_lock(mu_);
        seen_cv_.wait(seen_lock, [&] { return !storing_.contains(hash); });
        if (auto it = stored_.find(hash); it != stored_.end()) {
          out.chunk = it->second;
          out.chunk.new_in_set = false;
          shared = true;
        } else {
          storing_.insert(hash);
        }
      }
      if (!shared) {
        out.status = StoreChunk(store_, raw, options_.zstd_level, options_.retain_until_unix_ns,
                                encode_buffer, &out.chunk);
        std::lock_guard<std::mutex> seen_lock(mu_);
        storing_.erase(hash);
        if (out.status.ok() && stored_.size() < kMaxRememberedChunks) stored_.emplace(hash, out.chunk);
        seen_cv_.notify_all();
      }
      if (out.status.ok()) {
        if (options_.done_bytes) options_.done_bytes->fetch_add(task.length_bytes);
        if (options_.stored_bytes && out.chunk.new_in_set) {
          options_.stored_bytes->fetch_add(out.chunk.stored_bytes);
        }
      }
    } else if (task.buffer == nullptr) {
      out.status = task.work();
    }

    lock.lock();
    --running_;
    if (task.buffer != nullptr) free_buffers_.push_back(task.buffer);
    outputs_.push_back(std::move(out));
    output_cv_.notify_all();
    lock.unlock();
  }
}

Status ChunkPipeline::StoreChunk(WormStore& store, std::span<const std::byte> raw, int zstd_level,
                                 int64_t retain_until_unix_ns,
                                 std::vector<std::byte>& encode_buffer, ChunkInfo* info) {
  info->hash = ChunkHash(raw);
  info->raw_bytes = raw.size();
  const std::string key = ChunkKey(info->hash);
  auto context = [&](const Status& s) { return s.WithContext("storing chunk " + info->hash); };

  bool encoded = false;
  Result<WormObjectInfo> head = store.Head(key);
  if (head.ok()) {
    Status s = ShareExisting(store, *head, retain_until_unix_ns, info);
    if (s.ok()) return s;  // else: present but unusable (e.g. expired): try variants below
  } else if (!head.status().IsNotFound()) {
    return context(head.status());
  } else {
    EncodeChunkInto(raw, zstd_level, encode_buffer);
    encoded = true;
    Status put = store.Put(key, encode_buffer, retain_until_unix_ns);
    if (put.ok()) {
      info->key = key;
      info->stored_bytes = encode_buffer.size();
      info->new_in_set = true;
      return put;
    }
    if (!put.IsAlreadyExists()) return context(put);
    // Put by someone else just now (another worker, another job), or the key
    // is burned (it existed and expired).
    head = store.Head(key);
    if (head.ok() && ShareExisting(store, *head, retain_until_unix_ns, info).ok()) {
      return Status::OK();
    }
    if (!head.ok() && !head.status().IsNotFound()) return context(head.status());
  }

  // The content key cannot be used: share a live variant or put a new one.
  Result<std::vector<WormObjectInfo>> variants = store.List(key);
  if (!variants.ok()) return context(variants.status());
  for (const WormObjectInfo& v : *variants) {
    if (IsVariantOf(v.key, key) && ShareExisting(store, v, retain_until_unix_ns, info).ok()) {
      return Status::OK();
    }
  }
  if (!encoded) EncodeChunkInto(raw, zstd_level, encode_buffer);
  for (int n = 1; n <= kMaxChunkKeyVariants; ++n) {
    const std::string variant = key + "." + std::to_string(n);
    Status put = store.Put(variant, encode_buffer, retain_until_unix_ns);
    if (put.ok()) {
      info->key = variant;
      info->stored_bytes = encode_buffer.size();
      info->new_in_set = true;
      return put;
    }
    if (!put.IsAlreadyExists()) return context(put);
    Result<WormObjectInfo> vh = store.Head(variant);
    if (vh.ok() && ShareExisting(store, *vh, retain_until_unix_ns, info).ok()) return Status::OK();
  }
  return context(Status::IOError("no usable key among " + std::to_string(kMaxChunkKeyVariants) +
                                 " variants of '" + key + "'"));
}

}  // namespace snapdisk
