// `snapdisk policy set|show|remove|run|simulate`: backup policies
// (snapshot/policy.h), kept in the pool with their volume; `simulate` runs one
// on a simulated clock (bench/comparator/policy_simulation.h), on no pool.
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

#include "bench/comparator/policy_simulation.h"
#include "snapshot/backup_history.h"
#include "tools/cli/command_util.h"
#include "tools/cli/exit_codes.h"
#include "tools/cli/policy_tick.h"
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

// `policy simulate`'s own options (the policy's are PolicyArgs').
struct SimulateArgs {
  std::string duration = "60d";
  std::string start;
  double writes_per_hour = 120;
  std::string write_size = "64K";
  std::string working_set = "16M";
  std::string volume_size = "64M";
  uint32_t failures = 0;
  uint64_t seed = 1;
  bool runs = false;
  std::string memory_limit = "4G";
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
          ? std::string(runs.plan->data_method ? BackupMethodName(*runs.plan->data_method) : "") +
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
    doc["next_run_error"] = runs.plan_error.empty() ? nlohmann::ordered_json()
                                                    : nlohmann::ordered_json(runs.plan_error);
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
      {"next run", !runs.plan         ? "unknown (" + runs.plan_error + ")"
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

// "3d 4h", "25m 10s", "0s": a simulated span, to the second.
std::string SpanText(int64_t ns) {
  int64_t s = ns / 1'000'000'000;
  const int64_t d = s / 86400, h = s / 3600 % 24, m = s / 60 % 60;
  s %= 60;
  if (d > 0) return std::to_string(d) + "d " + std::to_string(h) + "h";
  if (h > 0) return std::to_string(h) + "h " + std::to_string(m) + "m";
  if (m > 0) return std::to_string(m) + "m " + std::to_string(s) + "s";
  return std::to_string(s) + "s";
}

nlohmann::ordered_json SimulationJson(const PolicySimulationOptions& o,
                                      const PolicySimulationReport& r) {
  nlohmann::ordered_json failures = nlohmann::ordered_json::array();
  int64_t max_loss_ns = 0, sum_loss_ns = 0;
  uint64_t max_loss_bytes = 0;
  for (const SimulatedFailure& f : r.failures) {
    nlohmann::ordered_json j = {
        {"restored_lsn", f.restored_lsn},  {"applied", f.applied},
        {"loss_seconds", f.loss_ns / 1e9}, {"loss_bytes", f.loss_bytes},
        {"lost_writes", f.lost_writes},    {"restore_real_seconds", f.restore_real_seconds}};
    AddTime(j, "at", f.at_unix_ns, true);
    AddTime(j, "last_shipped", f.last_shipped_unix_ns, true);
    failures.push_back(std::move(j));
    max_loss_ns = std::max(max_loss_ns, f.loss_ns);
    sum_loss_ns += f.loss_ns;
    max_loss_bytes = std::max(max_loss_bytes, f.loss_bytes);
  }
  nlohmann::ordered_json doc = {{"policy", PolicyJson(o.policy)}};
  doc["policy"].erase("store_dir");
  AddTime(doc, "start", r.start_unix_ns, true);
  AddTime(doc, "end", r.end_unix_ns, true);
  doc["seed"] = o.seed;
  doc["workload"] = {{"writes_per_hour", o.writes_per_hour},
                     {"max_write_bytes", o.max_write_bytes},
                     {"working_set_bytes", o.working_set_bytes},
                     {"volume_size_bytes", o.volume_size_bytes},
                     {"writes", r.writes},
                     {"written_bytes", r.written_bytes}};
  doc["backups"] = {{"snapshot", r.snapshot_backups},
                    {"full", r.full_backups},
                    {"incr", r.incr_backups},
                    {"log", r.log_backups},
                    {"failed", r.failed_runs},
                    {"late", r.late_runs},
                    {"max_late_seconds", r.max_late_ns / 1e9}};
  doc["max_unshipped_seconds"] = r.max_unshipped_ns / 1e9;
  doc["max_data_gap_seconds"] = r.max_data_gap_ns / 1e9;
  doc["store"] = {{"objects", r.store_objects},
                  {"bytes", r.store_bytes},
                  {"expired_objects", r.expired_objects}};
  doc["failures"] = std::move(failures);
  doc["max_loss_seconds"] = max_loss_ns / 1e9;
  doc["mean_loss_seconds"] = r.failures.empty() ? 0.0 : sum_loss_ns / 1e9 / r.failures.size();
  doc["max_loss_bytes"] = max_loss_bytes;
  doc["first_run_error"] = r.first_run_error.ok()
                               ? nlohmann::ordered_json()
                               : nlohmann::ordered_json(r.first_run_error.message());
  if (o.keep_runs) {
    nlohmann::ordered_json runs = nlohmann::ordered_json::array();
    for (const ScheduledRun& run : r.runs) {
      nlohmann::ordered_json j = {{"method", BackupMethodName(run.method)},
                                  {"set", run.set_id},
                                  {"first_lsn", run.first_lsn},
                                  {"last_lsn", run.last_lsn}};
      AddTime(j, "due", run.due_unix_ns, true);
      AddTime(j, "ran", run.ran_unix_ns, true);
      j["error"] =
          run.status.ok() ? nlohmann::ordered_json() : nlohmann::ordered_json(run.status.message());
      runs.push_back(std::move(j));
    }
    doc["runs"] = std::move(runs);
  }
  doc["real_seconds"] = r.real_seconds;
  return doc;
}

std::string SimulationText(const PolicySimulationOptions& o, const PolicySimulationReport& r) {
  std::string text;
  if (o.keep_runs) {
    Table table({"RAN", "DUE", "METHOD", "SET", "LSNS", "RESULT"});
    for (const ScheduledRun& run : r.runs) {
      table.AddRow({HumanTime(run.ran_unix_ns), HumanTime(run.due_unix_ns),
                    BackupMethodName(run.method), run.set_id.empty() ? "-" : run.set_id,
                    std::to_string(run.first_lsn) + "-" + std::to_string(run.last_lsn),
                    run.status.ok() ? "ok" : run.status.message()});
    }
    text += table.Render() + "\n";
  }
  std::string policy = DescribePolicy(o.policy);
  policy = policy.substr(0, policy.rfind("; store "));
  text += "Simulated " + SpanText(r.end_unix_ns - r.start_unix_ns) + " (" +
          HumanTime(r.start_unix_ns) + " to " + HumanTime(r.end_unix_ns) + ") in " +
          HumanSeconds(r.real_seconds) + " of real time, seed " + std::to_string(o.seed) + ":\n  " +
          policy + "\n";
  char rate[32];
  std::snprintf(rate, sizeof rate, "%g", o.writes_per_hour);
  text += "  workload: " + std::to_string(r.writes) + " writes, " + HumanBytes(r.written_bytes) +
          " (" + rate + " writes/hour of 4 KiB-" + HumanBytes(o.max_write_bytes) + " over " +
          HumanBytes(o.working_set_bytes) + ")\n";
  text += "  backups: " + std::to_string(r.snapshot_backups) + " snapshot, " +
          std::to_string(r.full_backups) + " full, " + std::to_string(r.incr_backups) +
          " incremental, " + std::to_string(r.log_backups) + " log; " +
          std::to_string(r.failed_runs) + " failed, " + std::to_string(r.late_runs) + " late" +
          (r.late_runs > 0 ? " (up to " + SpanText(r.max_late_ns) + ")" : std::string()) + "\n";
  text += "  a write waited at most " + SpanText(r.max_unshipped_ns) + " to be backed up" +
          (r.max_data_gap_ns > 0
               ? "; data backups were at most " + SpanText(r.max_data_gap_ns) + " apart"
               : std::string()) +
          "\n";
  text += "  store at the end: " + std::to_string(r.store_objects) + " objects, " +
          HumanBytes(r.store_bytes) + " (" + std::to_string(r.expired_objects) +
          " removed by expiry)\n";
  if (!r.first_run_error.ok()) text += "  first failed run: " + r.first_run_error.message() + "\n";
  if (o.failures > 0) {
    text += "  disk failures: " + std::to_string(r.failures.size()) +
            " (each restored from the store to its newest point and compared with every "
            "acknowledged write)\n";
    int64_t max_loss_ns = 0;
    for (const SimulatedFailure& f : r.failures) {
      max_loss_ns = std::max(max_loss_ns, f.loss_ns);
      text += "    " + HumanTime(f.at_unix_ns) + ": " +
              (f.applied.empty() ? std::string("nothing to restore")
                                 : "restored " + std::to_string(f.applied.size()) +
                                       (f.applied.size() == 1 ? " set" : " sets") + " to LSN " +
                                       std::to_string(f.restored_lsn)) +
              ", lost " + std::to_string(f.lost_writes) + " writes (" + HumanBytes(f.loss_bytes) +
              ", the last " + SpanText(f.loss_ns) + ")\n";
    }
    if (r.failures.size() < o.failures) {
      text += "    (" + std::to_string(o.failures - r.failures.size()) +
              " not drawn: failures come after the first data backup)\n";
    }
    text += "  max loss " + SpanText(max_loss_ns) + "\n";
  }
  return text;
}

int SimulatePolicies(CommandContext& ctx, const PolicyArgs& args, const SimulateArgs& sim) {
  PolicySimulationOptions o;
  o.policy = PolicyOf(args);
  o.duration_ns = ParseDuration(sim.duration).value();
  if (!sim.start.empty()) o.start_unix_ns = ParseTimestamp(sim.start).value();
  o.writes_per_hour = sim.writes_per_hour;
  o.max_write_bytes = SizeOf(sim.write_size);
  o.working_set_bytes = SizeOf(sim.working_set);
  o.volume_size_bytes = SizeOf(sim.volume_size);
  o.failures = sim.failures;
  o.memory_limit_bytes = SizeOf(sim.memory_limit);
  o.seed = sim.seed;
  o.keep_runs = sim.runs;
  const uint64_t total_hours = static_cast<uint64_t>(o.duration_ns / 3'600'000'000'000);
  o.progress = [&ctx, total_hours](int64_t done_ns, int64_t) {
    ctx.out().Progress("simulate", static_cast<uint64_t>(done_ns / 3'600'000'000'000), total_hours,
                       ProgressUnit::kHours);
    return !ctx.out().Cancelled();
  };
  auto report = SimulatePolicy(o);
  ctx.out().ProgressEnd();
  if (!report.ok()) return ctx.Fail(report.status());
  if (ctx.json()) {
    ctx.PrintJson(SimulationJson(o, *report));
  } else {
    ctx.Print(SimulationText(o, *report));
  }
  return kExitOk;
}

// The options that describe a policy (`policy set`: required; `policy
// simulate`: with the defaults already in `args`).
void AddPolicyOptions(CLI::App* cmd, PolicyArgs& args, bool required) {
  cmd->add_option("--method", args.method,
                  "snapshot (snapshot backups) or physical (a full each week, then\n"
                  "incrementals or fulls)")
      ->check(CheckValidator([](const std::string& v) { return ParsePolicyMethod(v).status(); },
                             "method"))
      ->type_name("METHOD");
  cmd->add_option("--retention", args.retention, "Keep data backups this many days, 7-730")
      ->check(CheckValidator(
          [](const std::string& v) {
            return CheckDays(v, "retention", kMinRetentionDays, kMaxRetentionDays);
          },
          "days"))
      ->type_name("DAYS");
  cmd->add_option("--cycle", args.cycle,
                  "Days of the week to back up on, at least two: mon,tue,wed,thu,fri,sat,sun")
      ->check(CheckValidator([](const std::string& v) { return ParseCycle(v).status(); }, "days"))
      ->type_name("DAYS");
  cmd->add_option("--window", args.window,
                  "Start window, UTC, 1 to 24 hours long: HH:MM-HH:MM (may wrap past "
                  "midnight)")
      ->check(CheckValidator(
          [](const std::string& v) {
            uint32_t start, end;
            return ParseNewWindow(v, &start, &end);
          },
          "window"))
      ->type_name("HH:MM-HH:MM");
  cmd->add_option("--log-frequency", args.log_frequency,
                  "Log backups every 5m or 30m, or with each data backup (data: physical "
                  "only)")
      ->check(CheckValidator([](const std::string& v) { return ParseLogFrequency(v).status(); },
                             "frequency"))
      ->type_name("5m|30m|data");
  cmd->add_option("--incremental", args.incremental,
                  "Physical: incrementals between the weekly fulls (default off)")
      ->check(CheckValidator(
          [](const std::string& v) {
            return v == "on" || v == "off"
                       ? Status::OK()
                       : Status::InvalidArgument("incremental must be on or off (got " + v + ")");
          },
          "on|off"))
      ->type_name("on|off");
  cmd->add_option("--log-retention", args.log_retention,
                  "Keep log backups this many days, 7 to the retention (default 7)")
      ->check(CheckValidator(
          [](const std::string& v) {
            return CheckDays(v, "log retention", kMinRetentionDays, kMaxRetentionDays);
          },
          "days"))
      ->type_name("DAYS");
  if (required) {
    for (const char* name : {"--method", "--retention", "--cycle", "--window", "--log-frequency"}) {
      cmd->get_option(name)->required();
    }
  }
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
    AddPolicyOptions(cmd, *args, /*required=*/true);
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
  {
    auto args = std::make_shared<PolicyArgs>();
    auto sim = std::make_shared<SimulateArgs>();
    args->method = "physical";
    args->retention = "7";
    args->cycle = "mon,thu";
    args->window = "02:00-03:00";
    args->log_frequency = "30m";
    CLI::App* cmd = AddCommand(
        *policy, "simulate",
        "Run a backup policy on a simulated clock: days of scheduled data and log\n"
        "backups, retention and expiry in seconds, against a workload of writes, with\n"
        "whole-disk failures whose data loss is measured (each restores the newest point\n"
        "the store holds and compares it with every acknowledged write). The scheduler\n"
        "is the one `snapdisk serve` runs; the pool and store are scratch ones in memory\n"
        "(nothing on disk is read or changed). The policy options are those of `policy\n"
        "set` (defaults: physical, mon,thu, 02:00-03:00, 30m logs, 7 days). The same seed\n"
        "gives the same runs and losses");
    AddPolicyOptions(cmd, *args, /*required=*/false);
    cmd->add_option("--duration", sim->duration, "Simulated time to run: 30s, 90m, 12h, 60d")
        ->check(CheckValidator([](const std::string& v) { return ParseDuration(v).status(); },
                               "duration"))
        ->type_name("TIME")
        ->capture_default_str();
    cmd->add_option("--start", sim->start,
                    "Simulated start, RFC 3339 or a date, UTC (default 2026-01-05, a Monday)")
        ->check(
            CheckValidator([](const std::string& v) { return ParseTimestamp(v).status(); }, "time"))
        ->type_name("TIME");
    cmd->add_option("--writes-per-hour", sim->writes_per_hour,
                    "The workload: writes per simulated hour, Poisson arrivals (0: idle)")
        ->check(CLI::Range(0.0, 1e6))
        ->type_name("N")
        ->capture_default_str();
    cmd->add_option("--write-size", sim->write_size,
                    "Each write is 4 KiB to this (multiples of 4 KiB), at a random offset")
        ->check(SizeValidator())
        ->type_name("SIZE")
        ->capture_default_str();
    cmd->add_option("--working-set", sim->working_set, "Writes land in the volume's first SIZE")
        ->check(SizeValidator())
        ->type_name("SIZE")
        ->capture_default_str();
    cmd->add_option("--volume-size", sim->volume_size, "The simulated volume's size")
        ->check(SizeValidator())
        ->type_name("SIZE")
        ->capture_default_str();
    cmd->add_option("--failures", sim->failures,
                    "Whole-disk failures at random moments after the first data backup")
        ->check(CLI::Range(0, 10000))
        ->type_name("N")
        ->capture_default_str();
    cmd->add_option("--seed", sim->seed, "Seed of the workload and the failure times")
        ->type_name("N")
        ->capture_default_str();
    cmd->add_option("--memory-limit", sim->memory_limit,
                    "The simulated disk and store live in memory: stop (exit 6) past this")
        ->check(SizeValidator())
        ->type_name("SIZE")
        ->capture_default_str();
    cmd->add_flag("--runs", sim->runs, "List every scheduled run (a line each)");
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, sim, &exit_code, &executor] {
      BackupPolicy policy = PolicyOf(*args);
      policy.store_dir = "simulated";
      if (Status s = ValidatePolicy(policy); !s.ok()) throw CLI::ValidationError(s.message());
      exit_code = executor.RunWithoutPool("", {args->json}, [args, sim](CommandContext& ctx) {
        return SimulatePolicies(ctx, *args, *sim);
      });
    });
  }
}

}  // namespace snapdisk::cli
