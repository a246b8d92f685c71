#include "tools/cli/policy_tick.h"

#include <algorithm>
#include <chrono>

#include "tools/cli/exit_codes.h"
#include "tools/cli/progress.h"
#include "tools/cli/job_registry.h"
#include "tools/cli/report.h"
#include "tools/cli/store_util.h"

namespace snapdisk::cli {

Result<ScheduleDecision> PlanVolume(const VolumeInfo& volume, const BackupPolicy& p,
                                    WormStore& store) {
  const int64_t now = store.NowUnixNs();
  auto sets = ListBackupSets(store, volume.name);
  if (!sets.ok()) return sets.status().WithContext("reading the store's sets");
  ScheduleFacts facts;
  facts.watch_from_unix_ns = now;
  const auto later = [](std::optional<int64_t>* slot, int64_t value) {
    if (!*slot || **slot < value) *slot = value;
  };
  for (const BackupSet& set : *sets) {
    if (set.volume_id != volume.id) continue;  // an earlier volume of the same name
    if (set.type == BackupType::kLog) {
      later(&facts.last_log_unix_ns, set.started_unix_ns);
      continue;
    }
    const bool in_family = p.method == PolicyMethod::kSnapshot ? set.type == BackupType::kSnapshot
                                                               : set.type != BackupType::kSnapshot;
    if (in_family) later(&facts.last_data_unix_ns, set.started_unix_ns);
    if (set.type == BackupType::kFull && set.lineage == volume.lineage) {
      later(&facts.last_full_unix_ns, set.started_unix_ns);
    }
  }
  return PlanSchedule(p, facts, now);
}

void PolicyTick::Plan(const std::string& only_store_dir) {
  for (const VolumeInfo& volume : pool_.ListVolumes()) {
    auto policy = GetPolicy(pool_, volume.name);
    if (!policy.ok()) {
      Problem(volume.name, BackupMethod::kAuto, 0, policy.status());
      continue;
    }
    if (!policy->has_value()) continue;
    const BackupPolicy& p = **policy;
    const std::string dir = CanonicalStoreDir(p.store_dir);
    if (!only_store_dir.empty() && dir != only_store_dir) {
      Problem(volume.name, BackupMethod::kAuto, 0,
              Status::InvalidArgument("the backup policy of volume '" + volume.name +
                                      "' names store " + p.store_dir + ", not " + only_store_dir +
                                      ": skipped"));
      continue;
    }
    policy_dirs_.insert(dir);
    auto store = View(dir);
    if (!store.ok()) {
      Problem(volume.name, BackupMethod::kAuto, 0, store.status());
      continue;
    }
    const int64_t now = (*store)->NowUnixNs();
    auto planned = PlanVolume(volume, p, **store);
    if (!planned.ok()) {
      Problem(volume.name, BackupMethod::kAuto, now, planned.status());
      continue;
    }
    const ScheduleDecision& plan = *planned;
    if (!plan.log_due && !plan.data_method) {
      if (!next_due_unix_ns_ || plan.next_due_unix_ns < *next_due_unix_ns_) {
        next_due_unix_ns_ = plan.next_due_unix_ns;
      }
      continue;
    }
    if (plan.log_due) {
      auto log = pool_.GetLogInfo(volume.name);
      if (!log.ok()) {
        Problem(volume.name, BackupMethod::kLog, plan.log_due_unix_ns, log.status());
      } else if (log->records > 0) {  // else nothing to ship
        queue_.push_back({volume.name, BackupMethod::kLog, plan.log_due_unix_ns,
                          p.log_retention_days, dir});
      }
    }
    if (plan.data_method) {
      queue_.push_back(
          {volume.name, *plan.data_method, plan.data_due_unix_ns, p.retention_days, dir});
    }
  }
}

bool PolicyTick::Step() {
  if (finished_) return true;
  if (job_) {
    if (!job_->Step()) return false;
    const PlannedJob& planned = queue_[next_ - 1];
    TickRun& run = runs_.back();
    const Result<BackupSet>& set = job_->result();
    if (set.ok()) {
      run.set = *set;
    } else {
      run.status = set.status();
      if (!cancelled_) FallBackToFull(planned, set.status());
    }
    job_.reset();
    ++done_jobs_;
    return false;
  }
  if (next_ < queue_.size() && !cancelled_) {
    const PlannedJob& planned = queue_[next_++];
    TickRun run;
    run.volume = planned.volume;
    run.method = planned.method;
    run.due_unix_ns = planned.due_unix_ns;
    BackupOptions options;
    options.trigger = "policy";
    options.method = planned.method;
    options.retain_days = planned.retain_days;
    auto store = Store(planned.store_dir);
    if (store.ok()) run.ran_unix_ns = (*store)->NowUnixNs();
    Result<std::unique_ptr<BackupJob>> job =
        store.ok() ? BackupJob::Start(pool_, **store, planned.volume, options)
                   : Result<std::unique_ptr<BackupJob>>(store.status());
    if (job.ok()) {
      job_ = std::move(job).value();
    } else {
      run.status = job.status();
      FallBackToFull(PlannedJob(planned), run.status);
      ++done_jobs_;
    }
    runs_.push_back(std::move(run));
    return false;
  }
  // Everything ran (or the tick was cancelled): the expiry pass of each
  // policy's store.
  if (!cancelled_) {
    for (const std::string& dir : policy_dirs_) {
      auto opened = Store(dir);
      if (!opened.ok()) continue;  // reported when its backups could not start
      WormStore* store = opened->get();
      auto expired = store->Expire();
      if (!expired.ok()) {
        Problem("-", BackupMethod::kAuto, store->NowUnixNs(),
                expired.status().WithContext("expiry pass of store " + dir));
        continue;
      }
      expired_objects_ += expired->objects;
      expired_bytes_ += expired->bytes;
    }
  }
  finished_ = true;
  return true;
}

Result<std::shared_ptr<WormStore>> PolicyTick::View(const std::string& dir) {
  if (auto it = views_.find(dir); it != views_.end()) return it->second;
  DirStoreOptions options;
  options.read_only = true;
  SNAPDISK_ASSIGN_OR_RETURN(std::unique_ptr<WormStore> view, OpenDirStore(dir, options));
  std::shared_ptr<WormStore> shared(std::move(view));
  views_[dir] = shared;
  return shared;
}

void PolicyTick::FallBackToFull(const PlannedJob& planned, const Status& why) {
  if (planned.method != BackupMethod::kIncr || !(why.IsNotFound() || why.IsInvalidArgument())) {
    return;
  }
  PlannedJob full = planned;
  full.method = BackupMethod::kFull;
  queue_.insert(queue_.begin() + static_cast<std::ptrdiff_t>(next_), std::move(full));
}

namespace {

std::string SetLine(const BackupSet& s) {
  return std::string(BackupTypeName(s.type)) + ", LSN " + LsnRangeText(s) + ", " +
         HumanBytes(s.stored_bytes) +
         " stored, retained until " + HumanTime(s.retain_until_unix_ns);
}

const char* MethodName(BackupMethod m) { return m == BackupMethod::kAuto ? "-" : BackupMethodName(m); }

}  // namespace

std::vector<std::string> PolicyTick::Lines() const {
  std::vector<std::string> lines;
  for (const TickRun& run : runs_) {
    std::string line = "volume '" + run.volume + "': policy " + MethodName(run.method) + " backup";
    if (run.set) line += " " + run.set->id;
    if (run.due_unix_ns != 0) line += " (due " + HumanTime(run.due_unix_ns) + ")";
    line += run.status.ok() ? ": " + (run.set ? SetLine(*run.set) : std::string("done"))
                            : ": " + ErrorMessage(run.status, "");
    lines.push_back(std::move(line));
  }
  if (expired_objects_ > 0) {
    lines.push_back("expired " + std::to_string(expired_objects_) + " objects (" +
                    HumanBytes(expired_bytes_) + ")");
  }
  return lines;
}

int PolicyTick::Finish(CommandContext& ctx) const {
  int code = kExitOk;
  for (const TickRun& run : runs_) {
    if (!run.status.ok()) {
      code = ExitCodeFor(run.status);
      break;
    }
  }
  if (cancelled_ && code == kExitOk) code = kExitInterrupted;
  if (ctx.json()) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const TickRun& run : runs_) {
      nlohmann::ordered_json r = {{"volume", run.volume}, {"method", MethodName(run.method)}};
      AddTime(r, "due", run.due_unix_ns, true);
      AddTime(r, "ran", run.ran_unix_ns, true);
      r["set"] = run.set ? BackupSetJson(*run.set) : nlohmann::ordered_json(nullptr);
      r["status"] = StatusCodeName(run.status.code());
      r["error"] = run.status.ok() ? nlohmann::ordered_json(nullptr)
                                   : nlohmann::ordered_json(ErrorMessage(run.status, ""));
      list.push_back(std::move(r));
    }
    nlohmann::ordered_json doc = {{"runs", list},
                                  {"expired_objects", expired_objects_},
                                  {"expired_bytes", expired_bytes_},
                                  {"cancelled", cancelled_}};
    AddTime(doc, "next_due", next_due_unix_ns_.value_or(0), true);
    ctx.PrintJson(doc);
  } else {
    if (!runs_.empty()) {
      Table table({"VOLUME", "RUN", "DUE", "SET", "RESULT"});
      for (const TickRun& run : runs_) {
        table.AddRow({run.volume, MethodName(run.method),
                      run.due_unix_ns == 0 ? "-" : HumanTime(run.due_unix_ns),
                      run.set ? run.set->id : "-",
                      run.status.ok() ? (run.set ? SetLine(*run.set) : "ok")
                                      : ErrorMessage(run.status, "")});
      }
      ctx.Print(table.Render());
    } else {
      ctx.Print("nothing was due" +
                (next_due_unix_ns_ ? "; next due " + HumanTime(*next_due_unix_ns_) : "") + "\n");
    }
    if (expired_objects_ > 0) {
      ctx.Print("expired " + std::to_string(expired_objects_) + " objects (" +
                HumanBytes(expired_bytes_) + ")\n");
    }
  }
  if (cancelled_) ctx.Note("policy run was cancelled");
  return code;
}

// ---- The server's own ticks ------------------------------------------------------

ServerPolicies::ServerPolicies(Pool& pool, int64_t check_interval_ns,
                               std::function<void(const std::string&)> log)
    : pool_(pool),
      check_interval_ns_(check_interval_ns),
      log_(std::move(log)),
      next_check_ns_(MonotonicNs()) {}

ServerPolicies::~ServerPolicies() {
  if (!tick_) return;
  tick_->Cancel();
  while (!tick_->Step()) WaitForPoolWork(pool_);
  End();
}

void ServerPolicies::Step() {
  if (tick_) {
    if (cancel_asked_) {
      cancel_asked_ = false;
      tick_->Cancel();
    }
    if (tick_->Step()) End();
    return;
  }
  const int64_t now = MonotonicNs();
  if (check_interval_ns_ <= 0 || now < next_check_ns_) return;
  next_check_ns_ = now + check_interval_ns_;
  // Planning opens each policy's store (replaying its audit log) and reads
  // its manifests: only when something may be due — the time the last plan
  // gave has come, or a policy, volume or lineage changed since.
  const std::string fingerprint = PoliciesFingerprint();
  const int64_t wall_ns = std::chrono::duration_cast<std::chrono::nanoseconds>(
                              std::chrono::system_clock::now().time_since_epoch())
                              .count();
  if (fingerprint == planned_fingerprint_ && next_due_unix_ns_ != 0 &&
      wall_ns < next_due_unix_ns_) {
    return;
  }
  planned_fingerprint_ = fingerprint;
  auto tick = std::make_unique<PolicyTick>(pool_);
  tick->Plan("");
  if (tick->idle()) {  // nothing due: its stores go with it
    next_due_unix_ns_ = tick->next_due_unix_ns().value_or(0);
    return;
  }
  next_due_unix_ns_ = 0;  // what runs now changes what is due next
  tick_ = std::move(tick);
  job_number_ = JobRegistry::Instance().Add(
      "policy (server)", [] { return std::string("policy"); },
      [this] { return tick_ ? tick_->Progress() : StepProgress{}; },
      [this] { cancel_asked_ = true; });
}

std::string ServerPolicies::PoliciesFingerprint() const {
  std::string fingerprint;
  for (const VolumeInfo& v : pool_.ListVolumes()) {
    Result<std::string> policy = pool_.GetAttribute(v.name, kPolicyAttribute);
    if (!policy.ok()) continue;
    fingerprint += v.name + '/' + std::to_string(v.id) + '/' + std::to_string(v.lineage) + '/' +
                   *policy + '\n';
  }
  return fingerprint;
}

void ServerPolicies::End() {
  JobRegistry::Instance().Remove(job_number_);
  job_number_ = 0;
  if (log_) {
    for (const std::string& line : tick_->Lines()) log_(line);
  }
  // Not at once, and a failure not before the retry interval (each try
  // takes a snapshot and adds a task to the history).
  next_check_ns_ = MonotonicNs() + (tick_->any_failed()
                                        ? std::max(check_interval_ns_, kRetryAfterFailureNs)
                                        : check_interval_ns_);
  tick_.reset();
}

}  // namespace snapdisk::cli
