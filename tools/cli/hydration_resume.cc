// Server-owned fills of instantly restored volumes. Contract:
// tools/cli/hydration_resume.h.
#include "tools/cli/hydration_resume.h"

#include <unistd.h>

#include "restore/lazy_restore.h"
#include "tools/cli/job_registry.h"
#include "tools/cli/report.h"
#include "tools/cli/store_util.h"

namespace snapdisk::cli {

std::string FillJobLabel(std::string_view volume, std::string_view set_id) {
  return "hydrate " + std::string(volume) + " from " + std::string(set_id);
}

std::optional<uint64_t> FindFillJob(std::string_view volume) {
  const std::string prefix = FillJobLabel(volume, "");  // "hydrate VOL from "
  for (const RunningJob& job : JobRegistry::Instance().List()) {
    if (job.progress.label.rfind(prefix, 0) == 0) return job.number;
  }
  return std::nullopt;
}

struct ServerFills::Fill {
  std::string volume;
  std::string store_dir;
  // Declared before the job: the job's source reads from the store, so the
  // job (and the pool's hold on its source, see End) goes first.
  std::shared_ptr<WormStore> store;
  std::unique_ptr<HydrationJob> job;
  uint64_t job_number = 0;  // in JobRegistry while running
  std::string stop_reason;  // why it was cancelled; "" while nobody asked
};

ServerFills::ServerFills(Pool& pool, ServerFillOptions options)
    : pool_(pool), options_(std::move(options)) {}

ServerFills::~ServerFills() {
  CancelAll();
  while (!idle()) Step();  // a cancelled fill ends at its next step, without I/O
}

void ServerFills::Log(const std::string& line) const {
  if (options_.log) options_.log(line);
}

Result<std::unique_ptr<ServerFills::Fill>> ServerFills::Resume(const std::string& volume) {
  Result<HydrationSourceRecord> recorded = GetHydrationSourceRecord(pool_, volume);
  if (!recorded.ok()) {
    return recorded.status().WithContext("volume '" + volume +
                                         "' is hydrating but names no backup to fill it from");
  }
  if (recorded->store_locator.empty()) {
    return Status::NotFound("volume '" + volume + "' is hydrating from set " +
                            recorded->set_id + ", but its " + kHydrationSourceAttribute +
                            " attribute names no store");
  }
  const std::string& dir = recorded->store_locator;
  const std::string what = "volume '" + volume + "' (set " + recorded->set_id + " of store " + dir +
                           ") stays unattached";
  Result<std::shared_ptr<WormStore>> store = OpenStore(dir);
  if (!store.ok()) {
    // OpenStore's NotFound suggests `store create`, which would make an
    // empty store: not what a recorded store that went missing needs.
    if (store.status().IsNotFound() && ::access(dir.c_str(), F_OK) != 0) {
      return Status::NotFound(what + ": the store does not exist");
    }
    return store.status().WithContext(what + ": cannot open the store");
  }
  LazyRestoreOptions lazy;
  lazy.store_locator = dir;
  lazy.rate_mb_per_s =
      options_.rate_mb_per_s > 0 ? options_.rate_mb_per_s : recorded->rate_mb_per_s;
  // ResumeHydration attaches nothing when it fails.
  Result<std::unique_ptr<HydrationJob>> job = ResumeHydration(pool_, volume, **store, lazy);
  if (!job.ok()) return job.status().WithContext(what);
  auto fill = std::make_unique<Fill>();
  fill->volume = volume;
  fill->store_dir = dir;
  fill->store = std::move(store).value();
  fill->job = std::move(job).value();
  return fill;
}

size_t ServerFills::ResumeAll() {
  size_t started = 0;
  for (const VolumeInfo& v : pool_.ListVolumes()) {
    Result<HydrationInfo> info = pool_.GetHydrationInfo(v.name);
    if (!info.ok()) {
      Log("volume '" + v.name + "': cannot read its hydration state: " + info.status().message());
      continue;
    }
    if (!info->hydrating) continue;
    Result<std::unique_ptr<Fill>> resumed = Resume(v.name);
    if (!resumed.ok()) {
      Result<HydrationSourceRecord> recorded = GetHydrationSourceRecord(pool_, v.name);
      const std::string dir = recorded.ok() ? recorded->store_locator : "";
      Log(resumed.status().message() + "; its " + HumanBytes(info->pending_bytes) +
          " not yet filled fail to read until `snapdisk restore resume --store " +
          (dir.empty() ? std::string("DIR") : dir) + " " + options_.pool_path + " " + v.name +
          "`");
      continue;
    }
    fills_.push_back(std::move(resumed).value());
    Fill* fill = fills_.back().get();
    const HydrationProgress p = fill->job->progress();
    fill->job_number = JobRegistry::Instance().Add(
        "restore resume --store " + fill->store_dir + " " + options_.pool_path + " " + fill->volume +
            " (started by the server)",
        [fill] { return fill->job->progress().set_id; },
        [fill] {
          const HydrationProgress now = fill->job->progress();
          return StepProgress{FillJobLabel(now.volume, now.set_id), now.done_bytes,
                              now.total_bytes, ProgressUnit::kBytes};
        },
        [fill] {
          if (fill->stop_reason.empty()) fill->stop_reason = "cancelled by `snapdisk backup cancel`";
          fill->job->Cancel();
        });
    Log("volume '" + fill->volume + "': filling the " + HumanBytes(p.pending_bytes) +
        " not yet hydrated from set " + p.set_id + " of store " + fill->store_dir +
        " in the background (job " + std::to_string(fill->job_number) + ")");
    ++started;
  }
  return started;
}

void ServerFills::End(Fill& fill) {
  JobRegistry::Instance().Remove(fill.job_number);
  const HydrationProgress p = fill.job->progress();
  const Status& result = fill.job->result();
  if (result.ok()) {
    // The pool dropped the source with the last pending block.
    Log("volume '" + fill.volume + "' is hydrated: " + HumanBytes(p.filled_bytes) +
        " filled from set " + p.set_id + " of store " + fill.store_dir);
  } else {
    // The store goes with this fill, so the source reading it must go too,
    // unless another fill of the volume (a `restore resume` forwarded since)
    // has attached its own: that one the pool holds now, and it keeps the
    // store open itself.
    std::string detached = "its source is detached";
    if (FindFillJob(fill.volume)) {
      detached = "another job fills it";
    } else {
      Status s = pool_.AttachHydrationSource(fill.volume, nullptr);
      if (!s.ok() && !s.IsNotFound()) detached = "detaching its source: " + s.message();
    }
    const std::string why = !fill.stop_reason.empty() ? fill.stop_reason
                            : result.IsCancelled()    ? std::string("cancelled")
                                                      : result.message();
    Log("volume '" + fill.volume + "': filling from set " + p.set_id + " of store " +
        fill.store_dir + " stopped (" + why + "); it stays hydrating with " +
        HumanBytes(p.pending_bytes) + " not yet filled, " + detached +
        "; `snapdisk restore resume --store " + fill.store_dir + " " + options_.pool_path + " " +
        fill.volume + "` continues");
  }
  fill.job.reset();
  fill.store.reset();
}

void ServerFills::Step() {
  for (size_t i = 0; i < fills_.size();) {
    if (fills_[i]->job->Step()) {
      End(*fills_[i]);
      fills_.erase(fills_.begin() + static_cast<std::ptrdiff_t>(i));
    } else {
      ++i;
    }
  }
}

void ServerFills::CancelAll() {
  for (auto& fill : fills_) {
    if (fill->stop_reason.empty()) fill->stop_reason = "the server is stopping";
    fill->job->Cancel();
  }
}

}  // namespace snapdisk::cli
