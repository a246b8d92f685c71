// `snapdisk backup POOL VOL ...` (a backup job, run as steps: inside `snapdisk
// serve` between NBD requests) and `snapdisk backup list|extend|export` (store
// only: they open the store's directory in this process).
//
// `backup` is both a command (POOL VOL) and a group (list, extend, export).
// CLI11 tries a word as a subcommand before a positional unless a required
// positional is still missing, so POOL and VOL are made required only when the
// command line's first word after `backup` is not list/extend/export (the
// command line is known when the tree is built: AddPoolCommandSet). A pool
// file named "list", "extend", "export", "jobs", "history", "cancel",
// "delete" or "remove" therefore goes as ./list. `backup delete|remove` exist only to
// say that sets cannot be deleted (exit 7).
#include <algorithm>
#include <chrono>
#include <cmath>

#include "snapshot/backup_history.h"
#include "snapshot/log_backup.h"
#include "tools/cli/command_util.h"
#include "tools/cli/exit_codes.h"
#include "tools/cli/job_registry.h"
#include "tools/cli/report.h"
#include "tools/cli/store_util.h"

namespace snapdisk::cli {

namespace {

constexpr const char* kGroupCommands[] = {"list",   "extend", "export", "jobs",   "history",
                                          "cancel", "delete", "remove"};

struct BackupArgs {
  std::string pool;
  std::string volume;
  std::string store;
  std::string method;
  std::string rate;
  std::string retain;
  std::string id;
  std::string until;
  std::string file;
  bool overwrite = false;
  bool json = false;
};

Status CheckMethod(const std::string& text) { return ParseBackupMethod(text).status(); }

bool IsForever(const std::string& text) { return text == "forever" || text == "-1"; }

Status CheckRetain(const std::string& text) {
  if (IsForever(text)) return Status::OK();
  auto days = ParseDays(text);
  if (!days.ok()) {
    return Status::InvalidArgument("retention must be " + std::to_string(kMinRetentionDays) + "-" +
                                   std::to_string(kMaxRetentionDays) + " days (got " + text + ")");
  }
  return ValidateRetentionDays(*days);
}

Status CheckTimestamp(const std::string& text) { return ParseTimestamp(text).status(); }

// "retained until 2026-12-13 10:00:00 UTC", or "retained forever".
std::string RetainedText(int64_t until_unix_ns) {
  return until_unix_ns == kForeverUnixNs ? "retained forever"
                                         : "retained until " + HumanTime(until_unix_ns);
}

std::string SetSummary(const BackupSet& set) {
  std::string text = std::string(BackupTypeName(set.type));
  if (!set.base.empty()) text += " on " + set.base;
  text += ", LSN " + LsnRangeText(set) + ", " +
          HumanBytes(set.data_bytes) + " of data, " + HumanBytes(set.stored_bytes) +
          " stored, " + RetainedText(set.retain_until_unix_ns);
  return text;
}

// A log backup that found no new write: a success with nothing stored (a
// 5-minute schedule on an idle volume does this all the time).
int NothingToShip(CommandContext& ctx, const Status& why) {
  if (ctx.json()) {
    ctx.PrintJson({{"id", nullptr}, {"type", "log"}, {"nothing_to_ship", true},
                   {"message", why.message()}});
  } else {
    ctx.Print(why.message() + "\n");
  }
  return kExitOk;
}

// One backup job as a stepped job. The store outlives the job.
struct BackupRun {
  std::shared_ptr<WormStore> store;
  std::unique_ptr<BackupJob> job;
};

int RunBackup(CommandContext& ctx, const BackupArgs& args) {
  auto store = OpenStore(ctx.ResolvePath(args.store));
  if (!store.ok()) return ctx.Fail(store.status());
  BackupOptions options;
  options.method = ParseBackupMethod(args.method).value();
  if (!args.rate.empty()) options.rate_mb_per_s = ParseRate(args.rate).value();
  if (IsForever(args.retain)) {
    options.retain_forever = true;
  } else if (!args.retain.empty()) {
    options.retain_days = ParseDays(args.retain).value();
  }
  auto run = std::make_shared<BackupRun>();
  run->store = std::move(store).value();
  auto job = BackupJob::Start(ctx.pool(), *run->store, args.volume, options);
  if (IsNothingToShip(job.status())) return NothingToShip(ctx, job.status());
  if (!job.ok()) return ctx.Fail(job.status());
  run->job = std::move(job).value();

  SteppedJob steps;
  steps.step = [run] { return run->job->Step(); };
  steps.cancel = [run] { run->job->Cancel(); };
  steps.id = [run] { return run->job->progress().id; };
  steps.progress = [run] {
    const BackupProgress p = run->job->progress();
    return StepProgress{"backup " + p.id + " of " + p.volume, p.done_bytes, p.total_bytes,
                        ProgressUnit::kBytes};
  };
  steps.finish = [run](CommandContext& ctx) {
    const Result<BackupSet>& set = run->job->result();
    if (IsNothingToShip(set.status())) return NothingToShip(ctx, set.status());
    if (!set.ok()) return ctx.Fail(set.status());
    if (ctx.json()) {
      ctx.PrintJson(BackupSetJson(*set));
    } else {
      ctx.Print("Backed up volume '" + set->volume + "' as " + set->id + ": " + SetSummary(*set) +
                "\n");
    }
    return kExitOk;
  };
  return ctx.RunSteps(std::move(steps));
}

int ListSets(CommandContext& ctx, const BackupArgs& args) {
  std::string held_by;
  auto store = OpenStoreForReading(ctx.ResolvePath(args.store), &held_by);
  if (!store.ok()) return ctx.Fail(store.status());
  if (!held_by.empty() && !ctx.json()) {
    ctx.out().Stderr("note: store " + args.store + " is in use by " + held_by +
                     "; listing the sets it holds now (backups still running are not in the "
                     "store yet: `snapdisk backup jobs POOL` lists a server's)\n");
  }
  auto sets = ListBackupSets(**store, args.volume);
  if (!sets.ok()) return ctx.Fail(sets.status());
  if (ctx.json()) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const BackupSet& s : *sets) list.push_back(BackupSetJson(s));
    ctx.PrintJson(list);
    return kExitOk;
  }
  if (sets->empty()) {
    ctx.Print("no backup sets" + (args.volume.empty() ? "" : " of volume '" + args.volume + "'") +
              " in store " + args.store + "\n");
    return kExitOk;
  }
  Table table({"ID", "TYPE", "VOLUME", "LSN", "BASE", "STARTED", "DATA", "STORED", "RETAIN UNTIL"});
  table.RightAlign(6);
  table.RightAlign(7);
  for (const BackupSet& s : *sets) {
    table.AddRow({s.id, BackupTypeName(s.type), s.volume,
                  LsnRangeText(s),
                  s.base.empty() ? "-" : s.base, HumanTime(s.started_unix_ns),
                  HumanBytes(s.data_bytes), HumanBytes(s.stored_bytes),
                  HumanTime(s.retain_until_unix_ns)});
  }
  ctx.Print(table.Render());
  return kExitOk;
}

int ExtendSet(CommandContext& ctx, const BackupArgs& args) {
  auto store = OpenStore(ctx.ResolvePath(args.store));
  if (!store.ok()) return ctx.Fail(store.status());
  const int64_t until = ParseTimestamp(args.until).value();
  if (Status s = ExtendBackupSet(**store, args.id, until); !s.ok()) return ctx.Fail(s);
  auto set = FindBackupSet(**store, args.id);
  if (!set.ok()) return ctx.Fail(set.status());
  if (ctx.json()) {
    ctx.PrintJson(BackupSetJson(*set));
  } else {
    ctx.Print("Backup set " + set->id + " of volume '" + set->volume + "' (and what it needs) " +
              "is " + RetainedText(set->retain_until_unix_ns) + "\n");
  }
  return kExitOk;
}

int ExportSet(CommandContext& ctx, const BackupArgs& args) {
  auto store = OpenStore(ctx.ResolvePath(args.store));
  if (!store.ok()) return ctx.Fail(store.status());
  ExportOptions options;
  options.overwrite = args.overwrite;
  const std::string label = "export " + args.id;
  options.progress = [&](uint64_t done, uint64_t total) {
    ctx.out().Progress(label, done, total, ProgressUnit::kBytes);
    return !ctx.out().Cancelled();
  };
  ExportReport report;
  Status s = ExportBackupSet(**store, args.id, ctx.ResolvePath(args.file), options, &report);
  ctx.out().ProgressEnd();
  if (!s.ok()) {
    if (s.IsAlreadyExists()) {
      s = Status::AlreadyExists(s.message() + " (give --overwrite to replace it)");
    }
    return ctx.Fail(s);
  }
  if (ctx.json()) {
    nlohmann::ordered_json doc = ExportReportJson(report);
    doc["path"] = args.file;
    ctx.PrintJson(doc);
    return kExitOk;
  }
  std::string with;
  for (const ExportedSet& set : report.sets) {
    if (set.id != report.target_id) with += (with.empty() ? "" : ", ") + set.id;
  }
  ctx.Print("Exported backup set " + report.target_id +
            (with.empty() ? "" : " (with the sets it needs: " + with + ")") + " to " + args.file +
            ": " + std::to_string(report.chunk_count) + " chunks, " +
            HumanBytes(report.file_bytes) + ", sha256 " + report.sha256 + "\n");
  return kExitOk;
}

// `backup history POOL [--volume VOL]`: the tasks that ended, oldest first.
int ListHistory(CommandContext& ctx, const BackupArgs& args) {
  auto tasks = BackupHistory(ctx.pool(), args.volume);
  if (!tasks.ok()) return ctx.Fail(tasks.status());
  if (ctx.json()) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const BackupTask& t : *tasks) {
      nlohmann::ordered_json o = {{"volume", t.volume},  {"trigger", t.trigger},
                                  {"method", t.method},  {"set", t.set_id.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(t.set_id)},
                                  {"result", t.result}};
      AddTime(o, "started", t.started_unix_ns, true);
      AddTime(o, "finished", t.finished_unix_ns, true);
      o["data_bytes"] = t.data_bytes;
      o["stored_bytes"] = t.stored_bytes;
      o["error"] = t.error.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(t.error);
      list.push_back(std::move(o));
    }
    ctx.PrintJson(list);
    return kExitOk;
  }
  if (tasks->empty()) {
    ctx.Print("no backup tasks recorded" +
              (args.volume.empty() ? std::string() : " for volume '" + args.volume + "'") + "\n");
    return kExitOk;
  }
  Table table({"FINISHED", "VOLUME", "TRIGGER", "METHOD", "SET", "TOOK", "DATA", "STORED",
               "RESULT"});
  for (size_t c : {5, 6, 7}) table.RightAlign(c);
  for (const BackupTask& t : *tasks) {
    const double took = static_cast<double>(t.finished_unix_ns - t.started_unix_ns) / 1e9;
    table.AddRow({HumanTime(t.finished_unix_ns), t.volume, t.trigger, t.method,
                  t.set_id.empty() ? "-" : t.set_id, took > 0 ? HumanSeconds(took) : "-",
                  HumanBytes(t.data_bytes), HumanBytes(t.stored_bytes),
                  t.error.empty() ? t.result : t.result + ": " + t.error});
  }
  ctx.Print(table.Render());
  return kExitOk;
}

int ListJobs(CommandContext& ctx, const BackupArgs&) {
  const std::vector<RunningJob> jobs = JobRegistry::Instance().List();
  const int64_t now = std::chrono::duration_cast<std::chrono::nanoseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
  auto rate_of = [now](const RunningJob& j) {
    const double seconds = static_cast<double>(now - j.started_unix_ns) / 1e9;
    return seconds > 0 ? static_cast<double>(j.progress.done) / seconds : 0.0;
  };
  auto eta_of = [&](const RunningJob& j) {
    const double rate = rate_of(j);
    if (j.progress.total == 0 || rate <= 0 || j.progress.done >= j.progress.total) return -1.0;
    return static_cast<double>(j.progress.total - j.progress.done) / rate;
  };
  if (ctx.json()) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const RunningJob& j : jobs) {
      nlohmann::ordered_json o;
      o["job"] = j.number;
      o["id"] = j.id;
      o["command"] = j.command;
      o["label"] = j.progress.label;
      o["started"] = FormatRfc3339(j.started_unix_ns);
      o["done_bytes"] = j.progress.done;
      o["total_bytes"] = j.progress.total;
      o["bytes_per_second"] = rate_of(j);
      const double eta = eta_of(j);
      o["eta_seconds"] = eta >= 0 ? nlohmann::ordered_json(eta) : nlohmann::ordered_json();
      o["cancel_requested"] = j.cancel_requested;
      list.push_back(std::move(o));
    }
    ctx.PrintJson(list);
    return kExitOk;
  }
  if (jobs.empty()) {
    ctx.Print("no jobs running on pool " + ctx.pool_path() + "\n");
    return kExitOk;
  }
  Table table({"JOB", "ID", "WHAT", "DONE", "OF", "RATE", "ETA", "STARTED"});
  for (size_t c : {3, 4, 5, 6}) table.RightAlign(c);
  for (const RunningJob& j : jobs) {
    const double eta = eta_of(j);
    table.AddRow({std::to_string(j.number), j.id.empty() ? "-" : j.id,
                  j.progress.label + (j.cancel_requested ? " (cancelling)" : ""),
                  HumanBytes(j.progress.done),
                  j.progress.total ? HumanBytes(j.progress.total) : "?",
                  HumanBytes(static_cast<uint64_t>(rate_of(j))) + "/s",
                  eta >= 0 ? std::to_string(static_cast<int64_t>(eta + 0.5)) + " s" : "-",
                  HumanTime(j.started_unix_ns)});
  }
  ctx.Print(table.Render());
  return kExitOk;
}

int CancelJob(CommandContext& ctx, const BackupArgs& args) {
  if (Status s = JobRegistry::Instance().Cancel(args.id); !s.ok()) return ctx.Fail(s);
  if (ctx.json()) {
    ctx.PrintJson({{"cancelled", args.id}});
  } else {
    ctx.Print("Cancelling " + args.id +
              ": a backup stops and leaves nothing in the store; a fill or a check stops where "
              "it is\n");
  }
  return kExitOk;
}

// The first word after "backup" on `args` (options and their values
// skipped), or "".
std::string FirstWordAfterBackup(const std::vector<std::string>& args) {
  static constexpr const char* kValueOptions[] = {"--store",  "--method", "--rate",
                                                  "--retain", "--volume", "--until"};
  if (args.empty() || args[0] != "backup") return "";
  for (size_t i = 1; i < args.size(); ++i) {
    const std::string& a = args[i];
    if (a == "--") return i + 1 < args.size() ? args[i + 1] : "";
    if (a.empty() || a[0] != '-') return a;
    if (a.find('=') == std::string::npos &&
        std::any_of(std::begin(kValueOptions), std::end(kValueOptions),
                    [&](const char* o) { return a == o; })) {
      ++i;  // its value
    }
  }
  return "";
}

}  // namespace

void AddBackupCommands(CLI::App& app, int& exit_code, Executor& executor,
                       const std::vector<std::string>& command_line) {
  auto args = std::make_shared<BackupArgs>();
  CLI::App* backup = app.add_subcommand(
      "backup",
      "Back a volume up into a WORM store (backup POOL VOL --store DIR --method M), or list,\n"
      "extend and export the backup sets in a store");
  backup->footer(
      "Usage:\n"
      "  snapdisk backup POOL VOL --store DIR --method M [--rate MB/s] [--retain DAYS] [--json]\n"
      "  snapdisk backup list --store DIR [--volume VOL] [--json]\n"
      "  snapdisk backup extend --store DIR ID --until DATE [--json]\n"
      "  snapdisk backup export --store DIR ID FILE [--overwrite] [--json]\n"
      "  snapdisk backup jobs POOL [--json]          (backups running in POOL's server)\n"
      "  snapdisk backup cancel POOL JOB|ID [--json]\n"
      "  snapdisk backup history POOL [--volume VOL] [--json]   (tasks that ended)\n\n"
      "Methods: snapshot (an O(1) snapshot kept in the pool for instant restore, then the\n"
      "blocks changed since the last snapshot backup, copied outside the volume's QoS);\n"
      "full, diff (changed since the last full), incr (changed since the last backup),\n"
      "auto (diff when a full finished within 3 days, else full): physical backups that\n"
      "read through the volume's QoS limits like the workload; log (the write log since\n"
      "the last log backup). --json prints the set, with its \"id\".\n"
      "While `snapdisk serve` holds the pool the backup runs inside it, between NBD\n"
      "requests; Ctrl-C cancels it (nothing is left visible in the store), and so does\n"
      "`backup cancel` from another terminal; `backup jobs` shows its progress.\n\n" +
      HelpFooter());
  backup->require_subcommand(0, 1);
  const std::string first = FirstWordAfterBackup(command_line);
  const bool group_form =
      std::any_of(std::begin(kGroupCommands), std::end(kGroupCommands),
                  [&](const char* c) { return first == c; });
  CLI::Option* pool_opt = backup->add_option("POOL", args->pool, "Path of the pool file");
  CLI::Option* volume_opt = backup->add_option("VOL", args->volume, "The volume to back up")
                                ->check(NameValidator("volume name"));
  if (!first.empty() && !group_form) {
    pool_opt->required();
    volume_opt->required();
  }
  backup->add_option("--store", args->store, "The WORM store's directory")->type_name("DIR");
  backup
      ->add_option("--method", args->method,
                   "snapshot, full, diff, incr, auto or log (see below)")
      ->check(CheckValidator(CheckMethod, "method"))
      ->type_name("METHOD");
  AddRateOption(backup, args->rate,
                "Cap the read rate at this many MB/s (10^6 bytes/s; default: no cap\n"
                "beyond the volume's QoS for physical backups)");
  backup
      ->add_option("--retain", args->retain,
                   "Keep the set (locked: nobody can delete it) for this many days, 7-730\n"
                   "(default 7), or `forever` (also -1): long-term retention, never expires")
      ->check(CheckValidator(CheckRetain, "days"))
      ->type_name("DAYS");
  AddJsonFlag(backup, args->json);
  backup->callback([backup, args, &exit_code, &executor] {
    if (!backup->get_subcommands().empty()) {
      if (!args->pool.empty()) {
        throw CLI::ValidationError("'backup " + backup->get_subcommands()[0]->get_name() +
                                   "' takes no POOL VOL");
      }
      return;  // list, extend or export ran
    }
    if (args->pool.empty() || args->volume.empty()) {
      throw CLI::ValidationError(
          "'snapdisk backup' needs POOL VOL --store DIR --method M, or a command: list, "
          "extend, export");
    }
    if (args->store.empty()) throw CLI::ValidationError("--store DIR is required");
    if (args->method.empty()) {
      throw CLI::ValidationError("--method is required: snapshot, full, diff, incr, auto or log");
    }
    exit_code = executor.RunOnPool(args->pool, {args->json},
                                   [args](CommandContext& ctx) { return RunBackup(ctx, *args); });
  });

  auto run_store = [&exit_code, &executor](const std::shared_ptr<BackupArgs>& a,
                                           int (*body)(CommandContext&, const BackupArgs&)) {
    exit_code = executor.RunWithoutPool(
        "", {a->json}, [a, body](CommandContext& ctx) { return body(ctx, *a); });
  };
  auto add_store = [](CLI::App* cmd, BackupArgs& a) {
    cmd->add_option("--store", a.store, "The WORM store's directory")
        ->required()
        ->type_name("DIR");
  };
  auto add_id = [](CLI::App* cmd, BackupArgs& a) {
    cmd->add_option("ID", a.id, "The backup set's id, e.g. F3 (see `backup list`)")->required();
  };
  {
    auto a = std::make_shared<BackupArgs>();
    CLI::App* cmd = AddCommand(*backup, "list",
                               "List the backup sets in a store, oldest first: id, type, LSN "
                               "range, base, times,\nsizes and retain-until");
    add_store(cmd, *a);
    cmd->add_option("--volume", a->volume, "Only this volume's sets")
        ->check(NameValidator("volume name"))
        ->type_name("VOL");
    AddJsonFlag(cmd, a->json);
    cmd->callback([a, run_store] { run_store(a, ListSets); });
  }
  {
    auto a = std::make_shared<BackupArgs>();
    CLI::App* cmd = AddCommand(
        *backup, "extend",
        "Keep a backup set (and, for diff/incr, the sets it is built on) until a later date.\n"
        "Retention only grows: an earlier date is refused (exit 7)");
    add_store(cmd, *a);
    add_id(cmd, *a);
    cmd->add_option("--until", a->until,
                    "RFC 3339 time (2026-12-01T00:00:00Z) or a date (2026-12-01: 00:00 UTC)")
        ->required()
        ->check(CheckValidator(CheckTimestamp, "time"))
        ->type_name("DATE");
    AddJsonFlag(cmd, a->json);
    cmd->callback([a, run_store] { run_store(a, ExtendSet); });
  }
  {
    auto a = std::make_shared<BackupArgs>();
    CLI::App* cmd = AddCommand(
        *backup, "export",
        "Copy a backup set, and the sets it needs to be restored, into one standalone file\n"
        "(every byte checksummed; written to a temporary file, then renamed into place)");
    add_store(cmd, *a);
    add_id(cmd, *a);
    cmd->add_option("FILE", a->file, "The export file to write")->required();
    cmd->add_flag("--overwrite", a->overwrite, "Replace FILE if it exists");
    AddJsonFlag(cmd, a->json);
    cmd->callback([a, run_store] { run_store(a, ExportSet); });
  }
  auto run_pool = [&exit_code, &executor](const std::shared_ptr<BackupArgs>& a,
                                          int (*body)(CommandContext&, const BackupArgs&)) {
    exit_code = executor.RunOnPool(a->pool, {a->json},
                                   [a, body](CommandContext& ctx) { return body(ctx, *a); });
  };
  {
    auto a = std::make_shared<BackupArgs>();
    CLI::App* cmd = AddCommand(
        *backup, "jobs",
        "List the jobs running in the server that holds POOL (`snapdisk serve`): backups,\n"
        "restores and their background fills, volume checks, RBD diff imports and exports;\n"
        "job number, set id, progress, rate and ETA. A command run outside a server shows\n"
        "its own progress");
    cmd->add_option("POOL", a->pool, "Path of the pool file")->required();
    AddJsonFlag(cmd, a->json);
    cmd->callback([a, run_pool] { run_pool(a, ListJobs); });
  }
  {
    auto a = std::make_shared<BackupArgs>();
    CLI::App* cmd = AddCommand(*backup, "cancel",
                               "Cancel a job running in POOL's server, by job number or set id "
                               "(see `backup jobs`);\na backup stops and puts nothing in the "
                               "store; a fill or a check stops where it is\n(`restore resume` / "
                               "`restore check` go on later)");
    cmd->add_option("POOL", a->pool, "Path of the pool file")->required();
    cmd->add_option("JOB", a->id, "The job number or the set id, e.g. 2 or F3")->required();
    AddJsonFlag(cmd, a->json);
    cmd->callback([a, run_pool] { run_pool(a, CancelJob); });
  }
  {
    auto a = std::make_shared<BackupArgs>();
    CLI::App* cmd = AddCommand(
        *backup, "history",
        "The backup tasks of POOL's volumes that ended — done, failed, cancelled or with\n"
        "nothing to ship, by hand or by a policy — oldest first: when, what, how long, bytes,\n"
        "result. Kept with each volume (its newest 200), across restarts");
    cmd->add_option("POOL", a->pool, "Path of the pool file")->required();
    cmd->add_option("--volume", a->volume, "Only this volume's tasks")
        ->check(NameValidator("volume name"))
        ->type_name("VOL");
    AddJsonFlag(cmd, a->json);
    cmd->callback([a, run_pool] { run_pool(a, ListHistory); });
  }
  for (const char* verb : {"delete", "remove"}) {
    // WORM: no API deletes a set. The command exists to say so.
    CLI::App* cmd = AddCommand(*backup, verb,
                               "Backup sets cannot be deleted: they expire when their retention "
                               "ends");
    cmd->allow_extras();
    cmd->callback([&exit_code, &executor] {
      exit_code = executor.RunWithoutPool("", {false}, [](CommandContext& ctx) {
        return ctx.Fail(Status::PermissionDenied(
            "backup sets cannot be deleted, by anyone: the store is write-once (WORM) and a set "
            "leaves it only when its retention has ended (`snapdisk backup list` shows each "
            "set's retain-until; `snapdisk store expire` removes what has expired). Retention "
            "can be extended (`backup extend`), never shortened"));
      });
    });
  }
}

}  // namespace snapdisk::cli
