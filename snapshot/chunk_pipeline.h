// ChunkPipeline: the worker threads of a backup job (internal to snapshot/).
//
// The pool thread takes a buffer (AcquireBuffer), reads one chunk of the
// volume into it and hands it over (SubmitChunk) — or hands it over with a
// fill that the worker runs to read it (a snapshot read off the pool's
// thread, Pool::ReadResolvedBlocks). A worker then hashes the
// chunk (XXH3-128); a chunk this pipeline stored before (or another worker
// is storing: it waits) is shared at once; else it looks the object up in
// the store — an existing object is shared: only its retention is extended
// to the set's retain-until — and otherwise compresses it and puts it. Other store work of a job
// (extending the retention of objects a set depends on, the manifest put) runs on the same workers
// as generic tasks, so the pool thread never waits on the store.
//
// Memory is fixed at construction: `buffers` chunk buffers of chunk_bytes,
// and per worker one compression buffer, grown once to the largest chunk.
// Queues are bounded: at most `buffers` chunk tasks (one per buffer) and
// `max_other_tasks` other tasks.
//
// Thread safety: the owner (the job, on the pool's thread) calls every
// method; the counters passed in are updated from the workers. Outputs carry
// a Status; nothing throws. The owner never waits for a worker except in
// WaitForOutput and Cancel: it hands tasks over and takes buffers and
// outputs back only when the shared lock is free (try_lock), else at its
// next call — a worker at the lowest priority that lost its CPU while
// holding the lock held the pool's thread for 2-9 ms when the owner waited.
// For the same reason the owner wakes workers with a semaphore, never a
// condition variable: glibc's pthread_cond_broadcast waits until the
// waiters it woke before have run, and a woken SCHED_IDLE worker may not
// run for a scheduler slice (measured: the comparator's pool thread blocked
// 4-8 ms in a broadcast while a snapshot backup started).
//
// CPUs: Options::worker_cpus (a job gives the CPUs beside its pinned pool
// thread: disk/thread_placement.h).
#pragma once

#include <semaphore.h>

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

#include "disk/status.h"
#include "engine/aligned_buffer.h"
#include "engine/worm_store.h"
#include "snapshot/backup_set.h"

namespace snapdisk {

class ChunkPipeline {
 public:
  struct Options {
    uint32_t worker_threads = 2;  // >= 1
    uint32_t buffers = 8;         // >= 1
    uint64_t chunk_bytes = uint64_t{1} << 20;
    int zstd_level = 1;
    // Every chunk object the pipeline puts or shares is retained until then.
    int64_t retain_until_unix_ns = 0;
    uint32_t max_other_tasks = 64;
    // Updated by the workers (may be null): raw bytes of chunks finished
    // (stored or shared), and bytes of new chunk objects.
    std::atomic<uint64_t>* done_bytes = nullptr;
    std::atomic<uint64_t>* stored_bytes = nullptr;
    // The workers run at the lowest CPU and I/O priority (BackupOptions::
    // lowest_priority); best effort.
    bool lowest_priority = false;
    // The CPUs the workers run on (empty: any). A job whose pool thread is
    // pinned gives the others (CpusBesideThisThread, disk/thread_placement.h).
    std::vector<int> worker_cpus;
  };

  struct Output {
    uint64_t tag = 0;
    bool is_chunk = false;
    Status status;
    // Chunks: hash, key, raw_bytes, stored_bytes (the object's size) and
    // new_in_set (this job put it).
    ChunkInfo chunk;
  };

  // `store` must outlive the pipeline. Starts the workers.
  ChunkPipeline(WormStore& store, const Options& options);
  // Cancel(), then joins the workers (a put in progress finishes first).
  ~ChunkPipeline();
  ChunkPipeline(const ChunkPipeline&) = delete;
  ChunkPipeline& operator=(const ChunkPipeline&) = delete;

  // A free chunk buffer (chunk_bytes long, 4 KiB-aligned), or null when all
  // are in use.
  std::byte* AcquireBuffer();
  // Gives back an acquired buffer that will not be submitted.
  void ReleaseBuffer(std::byte* buffer);
  // Queues the first `length_bytes` of an acquired buffer as a chunk; the
  // buffer comes back to the free list when the worker is done with it.
  // Never blocks (there is a queue slot for every buffer). With `fill`, the
  // worker first calls it to read the chunk's bytes into the buffer (a
  // snapshot read off the pool's thread); its error is the chunk's output.
  using Fill = std::function<Status(std::byte* buffer)>;
  void SubmitChunk(std::byte* buffer, uint64_t length_bytes, uint64_t tag, Fill fill = {});
  // Queues other store work; false (nothing queued) when max_other_tasks are
  // already queued or running.
  bool TrySubmitTask(std::function<Status()> task, uint64_t tag);

  // Appends the outputs finished so far to `out`; never blocks.
  void TakeOutputs(std::vector<Output>& out);
  // Waits until an output is ready, nothing is pending, or `timeout_ns`.
  void WaitForOutput(int64_t timeout_ns);
  // Tasks queued or running plus outputs not yet taken.
  size_t pending() const;
  // Drops queued tasks (their buffers come back, no outputs); running tasks
  // finish and still produce outputs. Later submissions are dropped too.
  void Cancel();

  // Stores one chunk: dedup by its content key, else compress and put (see
  // backup_set.h for the ".<n>" variant keys). `encode_buffer` is scratch.
  // Public for tests.
  static Status StoreChunk(WormStore& store, std::span<const std::byte> raw, int zstd_level,
                           int64_t retain_until_unix_ns, std::vector<std::byte>& encode_buffer,
                           ChunkInfo* info);

 private:
  struct Task {
    uint64_t tag = 0;
    std::byte* buffer = nullptr;  // chunk tasks
    uint64_t length_bytes = 0;
    Fill fill;                     // chunk tasks: reads the buffer first (optional)
    std::function<Status()> work;  // other tasks
  };

  void WorkerLoop();
  // Hands the outbox to the workers and takes back freed buffers and
  // outputs: at once when `wait`, else only if the lock is free.
  void Exchange(bool wait);

  WormStore& store_;
  const Options options_;
  std::vector<AlignedBuffer> buffer_storage_;  // 4 KiB-aligned: pools may use O_DIRECT

  // The owner's side (owner only, no lock).
  std::vector<Task> outbox_;               // submitted, not yet queued
  std::vector<std::byte*> spare_buffers_;  // free buffers the owner holds
  std::vector<Output> inbox_;              // outputs taken, not yet returned
  size_t pending_ = 0;        // submitted tasks whose output was not returned (or dropped)
  uint32_t other_tasks_ = 0;  // of those, other tasks
  bool cancelled_ = false;

  mutable std::mutex mu_;
  sem_t work_sem_;                        // one post per queued task; per worker at stop
  std::condition_variable output_cv_;     // an output is ready, or nothing pending
  std::vector<std::byte*> free_buffers_;  // returned by workers; guarded by mu_
  std::deque<Task> queue_;                // guarded by mu_
  uint32_t running_ = 0;                  // guarded by mu_
  std::vector<Output> outputs_;           // guarded by mu_
  // In-job dedup: hashes a worker is storing now, and what was stored.
  std::condition_variable seen_cv_;                   // a chunk left storing_
  std::set<std::string> storing_;                     // guarded by mu_
  std::unordered_map<std::string, ChunkInfo> stored_;  // guarded by mu_
  bool stopping_ = false;                 // guarded by mu_
  std::vector<std::thread> workers_;
};

}  // namespace snapdisk
