#include "engine/hydration_fetcher.h"

#include <sys/eventfd.h>
#include <unistd.h>

#include <algorithm>
#include <cstring>
#include <utility>

namespace snapdisk {

HydrationFetcher::HydrationFetcher() : event_fd_(::eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC)) {}

HydrationFetcher::~HydrationFetcher() {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    stop_ = true;
  }
  wake_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (event_fd_ >= 0) ::close(event_fd_);
}

void HydrationFetcher::Start(Task task) {
  {
    std::lock_guard<std::mutex> lock(mutex_);
    tasks_.push_back(std::move(task));
  }
  ++in_flight_;
  if (!thread_.joinable()) thread_ = std::thread([this] { Loop(); });
  wake_.notify_all();
}

std::vector<HydrationFetcher::Result> HydrationFetcher::TakeDone() {
  // Reset the eventfd first: a result that comes after the swap signals it
  // again.
  if (event_fd_ >= 0) {
    uint64_t value;
    (void)!::read(event_fd_, &value, sizeof value);
  }
  std::vector<Result> out;
  {
    std::lock_guard<std::mutex> lock(mutex_);
    out.swap(done_);
  }
  in_flight_ -= out.size();
  return out;
}

void HydrationFetcher::WaitDone() {
  if (in_flight_ == 0) return;
  std::unique_lock<std::mutex> lock(mutex_);
  wake_.wait(lock, [&] { return !done_.empty(); });
}

void HydrationFetcher::Loop() {
  std::unique_lock<std::mutex> lock(mutex_);
  while (true) {
    wake_.wait(lock, [&] { return stop_ || !tasks_.empty(); });
    if (stop_) return;
    Task task = std::move(tasks_.front());
    tasks_.pop_front();
    lock.unlock();
    Result result = Fetch(task);
    task.source.reset();  // the pool may let the source go once it has the result
    lock.lock();
    done_.push_back(std::move(result));
    wake_.notify_all();
    if (event_fd_ >= 0) (void)!::eventfd_write(event_fd_, 1);
  }
}

HydrationFetcher::Result HydrationFetcher::Fetch(const Task& task) {
  Result result;
  result.id = task.id;
  result.volume_id = task.volume_id;
  const uint64_t block = task.block_bytes;
  const uint64_t volume_blocks = (task.volume_bytes + block - 1) / block;
  for (const Fetched& f : recent_) {
    if (f.volume_id == task.volume_id && f.first_vbn <= task.vbn && task.vbn < f.end_vbn) {
      return result;  // fetched already: nothing to bring
    }
  }
  auto named = task.source->FetchedWith(task.vbn * block);
  std::vector<std::pair<uint64_t, uint64_t>> units;
  if (named.ok()) units = *std::move(named);
  // The unit holding the block asked for goes first (the byte cap never
  // drops it); without one, the blocks asked for.
  auto holds = [&](const std::pair<uint64_t, uint64_t>& u) {
    return u.first / block <= task.vbn && task.vbn < (u.first + u.second + block - 1) / block;
  };
  auto first = std::find_if(units.begin(), units.end(), holds);
  if (first == units.end()) {
    units.insert(units.begin(), {task.vbn * block, (task.end_vbn - task.vbn) * block});
  } else {
    std::rotate(units.begin(), first, first + 1);
  }
  uint64_t total = 0;
  for (const auto& [offset, length] : units) {
    const uint64_t first_vbn = offset / block;
    const uint64_t end_vbn = std::min((offset + length + block - 1) / block, volume_blocks);
    if (first_vbn >= end_vbn) continue;
    const uint64_t bytes = (end_vbn - first_vbn) * block;
    if (total + bytes > kMaxFetchBytes && total > 0) break;  // the rest is the fill's
    Run run{first_vbn, end_vbn - first_vbn, AlignedBuffer(bytes, AlignedBuffer::kUninitialized)};
    const uint64_t readable = std::min(bytes, task.volume_bytes - first_vbn * block);
    Status s = task.source->Read(first_vbn * block, {run.data.data(), readable});
    if (!s.ok()) {
      result.status = std::move(s);
      result.runs.clear();
      return result;
    }
    std::memset(run.data.data() + readable, 0, bytes - readable);
    total += bytes;
    result.runs.push_back(std::move(run));
  }
  constexpr size_t kRecentRuns = 64;
  for (const Run& run : result.runs) {
    recent_.push_back({task.volume_id, run.first_vbn, run.first_vbn + run.blocks});
    if (recent_.size() > kRecentRuns) recent_.pop_front();
  }
  return result;
}

}  // namespace snapdisk
