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

#include "snapshot/backup_history.h"
#include "tools/cli/command_util.h"
#include "tools/cli/policy_tick.h"
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

// The policy's last runs (the task history) and next (planned now, from the
// store's sets); the next is unknown when the store cannot be read.
struct PolicyRuns {
  std::optional<BackupTask> last_data, last_log;
  std::optional<ScheduleDecision> plan;
  std::string plan_error;
};

PolicyRuns RunsOf(CommandContext& ctx, const std::string& volume, const BackupPolicy& p) {
  PolicyRuns runs;
  if (auto history = BackupHistory(ctx.pool(), volume); history.ok()) {
    for (const BackupTask& t : *history) {
      if (t.trigger != "policy") continue;
      (t.method == "log" ? runs.last_log : runs.last_data) = t;
    }
  }
  std::string held_by;
  auto store = OpenStoreForReading(p.store_dir, &held_by);
  auto info = ctx.pool().GetVolume(volume);
  if (store.ok() && info.ok()) {
    auto plan = PlanVolume(*info, p, **store);
    if (plan.ok()) {
      runs.plan = *plan;
    } else {
      runs.plan_error = plan.status().message();
    }
  } else {
    runs.plan_error = (store.ok() ? info.status() : store.status()).message();
  }
  return runs;
}

nlohmann::ordered_json TaskJson(const std::optional<BackupTask>& t) {
  if (!t) return nullptr;
  nlohmann::ordered_json o = {{"method", t->method}, {"set", t->set_id}, {"result", t->result}};
  AddTime(o, "finished", t->finished_unix_ns, true);
  return o;
}

std::string TaskText(const std::optional<BackupTask>& t) {
  if (!t) return "none yet";
  return HumanTime(t->finished_unix_ns) + ": " + t->method + " " +
         (t->set_id.empty() ? std::string() : t->set_id + " ") + t->result;
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
  const PolicyRuns runs = RunsOf(ctx, args.volume, p);
  // Due now, or the next time something will be.
  const int64_t next_ns = runs.plan ? runs.plan->next_due_unix_ns : 0;
  const std::string due_now =
      runs.plan && (runs.plan->data_method || runs.plan->log_due)
          ? std::string(runs.plan->data_method ? BackupMethodName(*runs.plan->data_method)
                                               : "") +
                (runs.plan->data_method && runs.plan->log_due ? " and " : "") +
                (runs.plan->log_due ? "log" : "") + " due now"
          : std::string();
  if (ctx.json()) {
    nlohmann::ordered_json doc = {{"volume", args.volume},
                                  {"policy", PolicyJson(p)},
                                  {"log",
                                   {{"enabled", log->enabled},
                                    {"required", log->required},
                                    {"records", log->records},
                                    {"referenced_bytes", log->referenced_bytes}}},
                                  {"last_data_run", TaskJson(runs.last_data)},
                                  {"last_log_run", TaskJson(runs.last_log)}};
    AddTime(doc, "next_run", next_ns, true);
    doc["due_now"] = runs.plan ? (runs.plan->data_method || runs.plan->log_due) : false;
    doc["next_run_error"] =
        runs.plan_error.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(runs.plan_error);
    ctx.PrintJson(doc);
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
      {"last data run", TaskText(runs.last_data)},
      {"last log run", TaskText(runs.last_log)},
      {"next run", !runs.plan          ? "unknown (" + runs.plan_error + ")"
                   : !due_now.empty() ? due_now + " (`snapdisk policy run`)"
                                      : HumanTime(next_ns)},
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
              return ParseNewWindow(v, &start, &end);
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
