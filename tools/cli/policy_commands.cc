// `snapdisk policy set|show|remove|run`: backup policies (snapshot/policy.h),
// kept in the pool with their volume.
//
// `policy run` is one scheduler tick, now: it plans with PlanSchedule (what
// the Scheduler decides, from the store's sets) and runs what is due as one
// stepped job — each backup a BackupJob stepped like `snapdisk backup`, so
// inside `snapdisk serve` NBD clients keep being served meanwhile — then the
// expiry pass of each store it used. (Scheduler::Tick itself runs its jobs to
// completion, which would hold the server's loop for the whole backup.)
#include <unistd.h>

#include <algorithm>
#include <map>

#include "tools/cli/command_util.h"
#include "tools/cli/exit_codes.h"
#include "tools/cli/report.h"
#include "tools/cli/store_util.h"

namespace snapdisk::cli {

namespace {

struct PolicyArgs {
  std::string pool;
  std::string volume;
  std::string store;
  std::string method;
  std::string retention;
  std::string cycle;
  std::string window;
  std::string log_frequency;
  std::string incremental = "off";
  std::string log_retention;
  bool json = false;
};

Status CheckDays(const std::string& text, const std::string& what, uint32_t min, uint32_t max) {
  auto days = ParseDays(text);
  if (!days.ok() || *days < min || *days > max) {
    return Status::InvalidArgument(what + " must be " + std::to_string(min) + "-" +
                                   std::to_string(max) + " days (got " + text + ")");
  }
  return Status::OK();
}

// The policy the options describe (each option already validated alone);
// `store_dir` as given.
BackupPolicy PolicyOf(const PolicyArgs& args) {
  BackupPolicy p;
  p.store_dir = args.store;
  p.method = ParsePolicyMethod(args.method).value();
  p.incremental = args.incremental == "on";
  p.retention_days = ParseDays(args.retention).value();
  p.cycle_days = ParseCycle(args.cycle).value();
  Status window = ParseWindow(args.window, &p.window_start_min, &p.window_end_min);
  SNAPDISK_CHECK(window.ok(), "window validated by its option");
  p.log_frequency = ParseLogFrequency(args.log_frequency).value();
  p.log_retention_days =
      args.log_retention.empty() ? kMinRetentionDays : ParseDays(args.log_retention).value();
  return p;
}

std::string DescribePolicy(const BackupPolicy& p) {
  std::string text = p.method == PolicyMethod::kSnapshot
                         ? "snapshot backups"
                         : std::string("physical backups (weekly full") +
                               (p.incremental ? ", incremental between)" : ", full otherwise)");
  text += " on " + FormatCycle(p.cycle_days) + " at " +
          FormatWindow(p.window_start_min, p.window_end_min) + " UTC, kept " +
          std::to_string(p.retention_days) + " days; log backups " +
          (p.log_frequency == LogFrequency::kWithData
               ? std::string("with each data backup")
               : "every " + std::string(p.log_frequency == LogFrequency::kEvery5Min ? "5" : "30") +
                     " minutes") +
          ", kept " + std::to_string(p.log_retention_days) + " days; store " + p.store_dir;
  return text;
}

int SetVolumePolicy(CommandContext& ctx, const PolicyArgs& args) {
  BackupPolicy policy = PolicyOf(args);
  const std::string dir = CanonicalStoreDir(ctx.ResolvePath(args.store));
  if (::access((dir + "/store.json").c_str(), F_OK) != 0) {
    return ctx.Fail(Status::NotFound("store " + args.store +
                                     " does not exist (make it with `snapdisk store create " +
                                     args.store + "`)"));
  }
  policy.store_dir = dir;  // absolute: the server and the scheduler run elsewhere
  if (Status s = SetPolicy(ctx.pool(), args.volume, policy); !s.ok()) return ctx.Fail(s);
  if (Status s = ctx.pool().Commit(); !s.ok()) return ctx.Fail(s);
  if (ctx.json()) {
    ctx.PrintJson({{"volume", args.volume}, {"policy", PolicyJson(policy)}});
  } else {
    ctx.Print("Backup policy of volume '" + args.volume + "': " + DescribePolicy(policy) +
              ". Its write log is kept until shipped.\n");
  }
  return kExitOk;
}

int ShowVolumePolicy(CommandContext& ctx, const PolicyArgs& args) {
  auto policy = GetPolicy(ctx.pool(), args.volume);
  if (!policy.ok()) return ctx.Fail(policy.status());
  if (!policy->has_value()) {
    return ctx.Fail(Status::NotFound("volume '" + args.volume + "' has no backup policy"));
  }
  const BackupPolicy& p = **policy;
  auto log = ctx.pool().GetLogInfo(args.volume);
  if (!log.ok()) return ctx.Fail(log.status());
  if (ctx.json()) {
    ctx.PrintJson({{"volume", args.volume},
                   {"policy", PolicyJson(p)},
                   {"log",
                    {{"enabled", log->enabled},
                     {"required", log->required},
                     {"records", log->records},
                     {"referenced_bytes", log->referenced_bytes}}}});
    return kExitOk;
  }
  ctx.Print(KeyValues({
      {"volume", args.volume},
      {"store", p.store_dir},
      {"method", PolicyMethodName(p.method)},
      {"incremental", p.incremental ? "on" : "off"},
      {"retention", std::to_string(p.retention_days) + " days"},
      {"cycle", FormatCycle(p.cycle_days)},
      {"window", FormatWindow(p.window_start_min, p.window_end_min) + " UTC"},
      {"log frequency", LogFrequencyName(p.log_frequency)},
      {"log retention", std::to_string(p.log_retention_days) + " days"},
      {"log unshipped", std::to_string(log->records) + " records, " +
                            HumanBytes(log->referenced_bytes) + " referenced"},
  }));
  return kExitOk;
}

int RemoveVolumePolicy(CommandContext& ctx, const PolicyArgs& args) {
  if (Status s = RemovePolicy(ctx.pool(), args.volume); !s.ok()) {
    if (s.IsNotFound() && ctx.pool().GetVolume(args.volume).ok()) {
      return ctx.Fail(Status::NotFound("volume '" + args.volume + "' has no backup policy"));
    }
    return ctx.Fail(s);
  }
  if (Status s = ctx.pool().Commit(); !s.ok()) return ctx.Fail(s);
  if (ctx.json()) {
    ctx.PrintJson({{"volume", args.volume}, {"removed", true}});
  } else {
    ctx.Print("Removed the backup policy of volume '" + args.volume +
              "' (its write log is no longer kept for it)\n");
  }
  return kExitOk;
}

// ---- policy run ----------------------------------------------------------------

// A backup the tick will run.
struct PlannedJob {
  std::string volume;
  BackupMethod method = BackupMethod::kFull;
  int64_t due_unix_ns = 0;
  uint32_t retain_days = 7;
  std::shared_ptr<WormStore> store;
  std::string store_dir;
};

// What the tick did for one job (or one problem).
struct TickRun {
  std::string volume;
  BackupMethod method = BackupMethod::kAuto;  // kAuto: a problem, no backup
  int64_t due_unix_ns = 0;
  int64_t ran_unix_ns = 0;
  std::optional<BackupSet> set;
  Status status;
};

// The tick's state, shared by the stepped job's functions.
class PolicyTick {
 public:
  explicit PolicyTick(Pool& pool) : pool_(pool) {}

  // Plans every volume with a policy (whose store is `only_store_dir`, when
  // given); problems become runs.
  void Plan(const std::string& only_store_dir);

  bool Step();
  void Cancel() {
    cancelled_ = true;
    if (job_) job_->Cancel();
  }
  StepProgress Progress() const {
    if (!job_) return {"policy run", done_jobs_, queue_.size(), ProgressUnit::kBlocks};
    const BackupProgress p = job_->progress();
    return {"backup " + p.id + " of " + p.volume, p.done_bytes, p.total_bytes,
            ProgressUnit::kBytes};
  }
  int Finish(CommandContext& ctx) const;

 private:
  void Problem(const std::string& volume, BackupMethod method, int64_t due, Status status) {
    TickRun run;
    run.volume = volume;
    run.method = method;
    run.due_unix_ns = due;
    run.ran_unix_ns = due;
    run.status = std::move(status);
    runs_.push_back(std::move(run));
  }
  Result<std::shared_ptr<WormStore>> Store(const std::string& dir) {
    if (auto it = stores_.find(dir); it != stores_.end()) return it->second;
    SNAPDISK_ASSIGN_OR_RETURN(std::shared_ptr<WormStore> store, OpenStore(dir));
    stores_[dir] = store;
    return store;
  }

  Pool& pool_;
  std::map<std::string, std::shared_ptr<WormStore>> stores_;  // by canonical dir
  std::vector<PlannedJob> queue_;
  size_t next_ = 0;
  uint64_t done_jobs_ = 0;
  std::unique_ptr<BackupJob> job_;  // the running one (queue_[next_ - 1])
  std::vector<TickRun> runs_;
  std::optional<int64_t> next_due_unix_ns_;
  uint64_t expired_objects_ = 0;
  uint64_t expired_bytes_ = 0;
  bool cancelled_ = false;
  bool finished_ = false;
};

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
    auto store = Store(dir);
    if (!store.ok()) {
      Problem(volume.name, BackupMethod::kAuto, 0, store.status());
      continue;
    }
    const int64_t now = (*store)->NowUnixNs();
    auto sets = ListBackupSets(**store, volume.name);
    if (!sets.ok()) {
      Problem(volume.name, BackupMethod::kAuto, now,
              sets.status().WithContext("reading the store's sets"));
      continue;
    }
    // As the Scheduler's facts, for a scheduler that starts watching now.
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
      const bool in_family = p.method == PolicyMethod::kSnapshot
                                 ? set.type == BackupType::kSnapshot
                                 : set.type != BackupType::kSnapshot;
      if (in_family) later(&facts.last_data_unix_ns, set.started_unix_ns);
      if (set.type == BackupType::kFull && set.lineage == volume.lineage) {
        later(&facts.last_full_unix_ns, set.started_unix_ns);
      }
    }
    const ScheduleDecision plan = PlanSchedule(p, facts, now);
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
                          p.log_retention_days, *store, dir});
      }
    }
    if (plan.data_method) {
      queue_.push_back({volume.name, *plan.data_method, plan.data_due_unix_ns, p.retention_days,
                        *store, dir});
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
      // No base to be incremental from (e.g. its snapshot is gone): a full
      // keeps the volume protected (as the Scheduler does).
      if (planned.method == BackupMethod::kIncr && !cancelled_ &&
          (set.status().IsNotFound() || set.status().IsInvalidArgument())) {
        PlannedJob full = planned;
        full.method = BackupMethod::kFull;
        queue_.insert(queue_.begin() + static_cast<std::ptrdiff_t>(next_), full);
      }
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
    run.ran_unix_ns = planned.store->NowUnixNs();
    BackupOptions options;
    options.method = planned.method;
    options.retain_days = planned.retain_days;
    auto job = BackupJob::Start(pool_, *planned.store, planned.volume, options);
    if (job.ok()) {
      job_ = std::move(job).value();
    } else {
      run.status = job.status();
      if (planned.method == BackupMethod::kIncr &&
          (run.status.IsNotFound() || run.status.IsInvalidArgument())) {
        PlannedJob full = planned;
        full.method = BackupMethod::kFull;
        queue_.insert(queue_.begin() + static_cast<std::ptrdiff_t>(next_), full);
      }
      ++done_jobs_;
    }
    runs_.push_back(std::move(run));
    return false;
  }
  // Everything ran (or the tick was cancelled): the expiry pass of each store.
  if (!cancelled_) {
    for (auto& [dir, store] : stores_) {
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

std::string SetLine(const BackupSet& s) {
  return std::string(BackupTypeName(s.type)) + ", LSN " + LsnRangeText(s) + ", " +
         HumanBytes(s.stored_bytes) +
         " stored, retained until " + HumanTime(s.retain_until_unix_ns);
}

int PolicyTick::Finish(CommandContext& ctx) const {
  const auto method_name = [](BackupMethod m) {
    return m == BackupMethod::kAuto ? "-" : BackupMethodName(m);
  };
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
      nlohmann::ordered_json r = {{"volume", run.volume}, {"method", method_name(run.method)}};
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
        table.AddRow({run.volume, method_name(run.method),
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

int RunPolicies(CommandContext& ctx, const PolicyArgs& args) {
  auto tick = std::make_shared<PolicyTick>(ctx.pool());
  const std::string only =
      args.store.empty() ? std::string() : CanonicalStoreDir(ctx.ResolvePath(args.store));
  tick->Plan(only);
  SteppedJob steps;
  steps.step = [tick] { return tick->Step(); };
  steps.cancel = [tick] { tick->Cancel(); };
  steps.progress = [tick] { return tick->Progress(); };
  steps.finish = [tick](CommandContext& ctx) { return tick->Finish(ctx); };
  return ctx.RunSteps(std::move(steps));
}

}  // namespace

void AddPolicyCommands(CLI::App& app, int& exit_code, Executor& executor) {
  CLI::App* policy = app.add_subcommand(
      "policy", "Set, show, remove and run a volume's backup policy (kept in the pool)");
  policy->footer(HelpFooter());
  policy->require_subcommand(1);

  auto run = [&exit_code, &executor](const std::shared_ptr<PolicyArgs>& args,
                                     int (*body)(CommandContext&, const PolicyArgs&)) {
    exit_code = executor.RunOnPool(args->pool, {args->json},
                                   [args, body](CommandContext& ctx) { return body(ctx, *args); });
  };

  {
    auto args = std::make_shared<PolicyArgs>();
    CLI::App* cmd = AddCommand(
        *policy, "set",
        "Give a volume a backup policy (replacing its old one). While it has one, its write\n"
        "log is kept until shipped by a log backup. `snapdisk policy run` (or a scheduler)\n"
        "carries it out; times are UTC");
    AddPoolArg(cmd, args->pool);
    AddVolumeArg(cmd, args->volume);
    cmd->add_option("--store", args->store, "The WORM store the backups go to")
        ->required()
        ->type_name("DIR");
    cmd->add_option("--method", args->method,
                    "snapshot (snapshot backups) or physical (a full each week, then\n"
                    "incrementals or fulls)")
        ->required()
        ->check(CheckValidator([](const std::string& v) { return ParsePolicyMethod(v).status(); },
                               "method"))
        ->type_name("METHOD");
    cmd->add_option("--retention", args->retention, "Keep data backups this many days, 7-730")
        ->required()
        ->check(CheckValidator(
            [](const std::string& v) {
              return CheckDays(v, "retention", kMinRetentionDays, kMaxRetentionDays);
            },
            "days"))
        ->type_name("DAYS");
    cmd->add_option("--cycle", args->cycle,
                    "Days of the week to back up on, at least two: mon,tue,wed,thu,fri,sat,sun")
        ->required()
        ->check(CheckValidator([](const std::string& v) { return ParseCycle(v).status(); },
                               "days"))
        ->type_name("DAYS");
    cmd->add_option("--window", args->window,
                    "Start window, UTC, 1 to 24 hours long: HH:MM-HH:MM (may wrap past "
                    "midnight)")
        ->required()
        ->check(CheckValidator(
            [](const std::string& v) {
              uint32_t start, end;
              return ParseWindow(v, &start, &end);
            },
            "window"))
        ->type_name("HH:MM-HH:MM");
    cmd->add_option("--log-frequency", args->log_frequency,
                    "Log backups every 5m or 30m, or with each data backup (data: physical "
                    "only)")
        ->required()
        ->check(CheckValidator([](const std::string& v) { return ParseLogFrequency(v).status(); },
                               "frequency"))
        ->type_name("5m|30m|data");
    cmd->add_option("--incremental", args->incremental,
                    "Physical: incrementals between the weekly fulls (default off)")
        ->check(CheckValidator(
            [](const std::string& v) {
              return v == "on" || v == "off"
                         ? Status::OK()
                         : Status::InvalidArgument("incremental must be on or off (got " + v + ")");
            },
            "on|off"))
        ->type_name("on|off");
    cmd->add_option("--log-retention", args->log_retention,
                    "Keep log backups this many days, 7 to the retention (default 7)")
        ->check(CheckValidator(
            [](const std::string& v) {
              return CheckDays(v, "log retention", kMinRetentionDays, kMaxRetentionDays);
            },
            "days"))
        ->type_name("DAYS");
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, run] {
      // The options together (each was checked alone): before the pool is
      // opened, so bad input changes nothing.
      BackupPolicy policy = PolicyOf(*args);
      if (Status s = ValidatePolicy(policy); !s.ok()) throw CLI::ValidationError(s.message());
      run(args, SetVolumePolicy);
    });
  }
  {
    auto args = std::make_shared<PolicyArgs>();
    CLI::App* cmd = AddCommand(*policy, "show", "Show a volume's backup policy");
    AddPoolArg(cmd, args->pool);
    AddVolumeArg(cmd, args->volume);
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, run] { run(args, ShowVolumePolicy); });
  }
  {
    auto args = std::make_shared<PolicyArgs>();
    CLI::App* cmd = AddCommand(*policy, "remove",
                               "Remove a volume's backup policy (its backups stay in the store)");
    AddPoolArg(cmd, args->pool);
    AddVolumeArg(cmd, args->volume);
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, run] { run(args, RemoveVolumePolicy); });
  }
  {
    auto args = std::make_shared<PolicyArgs>();
    CLI::App* cmd = AddCommand(
        *policy, "run",
        "One scheduler tick, now: run every backup the pool's policies have due (data and\n"
        "log backups; a missed window runs late, never skipped), then the expiry pass of\n"
        "their stores; print what ran. Inside `snapdisk serve` it runs between NBD requests");
    AddPoolArg(cmd, args->pool);
    cmd->add_option("--store", args->store,
                    "Only policies whose backups go to this store (others are reported as "
                    "skipped)")
        ->type_name("DIR");
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, run] { run(args, RunPolicies); });
  }
}

}  // namespace snapdisk::cli
