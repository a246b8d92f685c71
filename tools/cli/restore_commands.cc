// `snapdisk restore ...`: restores out of a WORM store. A snapshot set
// restored to a new volume is instant (restore/lazy_restore.h): usable at
// once, filled by a stepped job (inside `snapdisk serve`: exported at once,
// filled between NBD requests). Everything else is copied
// (restore/restore_plan.h, restore/restore_apply.h) and carried out to its
// end, like import; the volume is exported once it is open.
//
//   restore --store DIR (ID | --time T | --lsn N) (--to-new POOL VOL | --onto POOL VOL)
//           [--source VOL] [--plan] [--restoring] [--copy] [--rate MB/s]
//   restore apply --store DIR ID POOL VOL
//   restore open POOL VOL [--check sync|async] [--rate MB/s]
//   restore check POOL VOL [--rate MB/s]
//   restore resume --store DIR POOL VOL [--rate MB/s]
//   restore status POOL VOL
//
// `restore` is both a command and a group, like `backup`: set ids are a
// letter and a number, so "apply", "open", "check", "resume" and "status"
// are never ids.
//
// The check of a restored volume (restore/volume_check.h) is a stepped job
// (inside `snapdisk serve`: listed by `backup jobs`, cancelled by `backup
// cancel`, NBD clients served meanwhile); its result is recorded in the
// volume's restore state and shown by `restore status`.
#include <cmath>
#include <cstdlib>
#include <functional>
#include <memory>
#include <optional>
#include <set>

#include "engine/names.h"
#include "restore/lazy_restore.h"
#include "restore/restore_apply.h"
#include "restore/restore_plan.h"
#include "restore/volume_check.h"
#include "tools/cli/command_util.h"
#include "tools/cli/exit_codes.h"
#include "tools/cli/hydration_resume.h"
#include "tools/cli/report.h"
#include "tools/cli/store_util.h"

namespace snapdisk::cli {

namespace {

struct RestoreArgs {
  std::string store;
  std::vector<std::string> from;  // --from FILE...: export files instead of a store
  std::string id;
  std::string time;
  std::string lsn;
  std::string source;
  std::vector<std::string> to_new;  // POOL VOL
  std::vector<std::string> onto;    // POOL VOL
  std::string pool;
  std::string volume;
  std::string check = "sync";  // restore open: sync or async
  std::string rate;            // MB/s: an instant restore's fill (restore, resume), a check's reads
  bool plan = false;
  bool restoring = false;
  bool copy = false;
  bool replace = false;  // --replace: onto another volume than the source, or growing it
  bool wait = false;     // --wait: an instant restore fills before the command returns
  bool json = false;
};

Status CheckLsn(const std::string& text) {
  uint64_t v = 0;
  for (char c : text) {
    if (c < '0' || c > '9' || v > (UINT64_MAX - 9) / 10) {
      return Status::InvalidArgument("an LSN is a whole number (got " + text + ")");
    }
    v = v * 10 + static_cast<uint64_t>(c - '0');
  }
  return text.empty() ? Status::InvalidArgument("an LSN is a whole number") : Status::OK();
}

Status CheckTimestamp(const std::string& text) { return ParseTimestamp(text).status(); }

// The source volume of a --time/--lsn restore: --source, else the store's
// only volume, else the target's name when it is among them.
Result<std::string> SourceVolume(WormStore& store, const RestoreArgs& args,
                                 const std::string& target_volume) {
  if (!args.source.empty()) return args.source;
  SNAPDISK_ASSIGN_OR_RETURN(std::vector<BackupSet> sets, ListBackupSets(store));
  std::set<std::string> volumes;
  for (const BackupSet& s : sets) volumes.insert(s.volume);
  if (volumes.size() == 1) return *volumes.begin();
  if (volumes.count(target_volume)) return target_volume;
  std::string names;
  for (const std::string& v : volumes) names += (names.empty() ? "" : ", ") + v;
  if (volumes.empty()) return Status::NotFound("the store holds no backup sets");
  return Status::InvalidArgument("the store holds backups of several volumes (" + names +
                                 "): say which with --source VOL");
}

nlohmann::ordered_json StepJson(const RestoreStep& step) {
  nlohmann::ordered_json o;
  o["id"] = step.set.id;
  o["type"] = BackupTypeName(step.set.type);
  o["from_lsn"] = step.from_lsn;
  o["through_lsn"] = step.through_lsn;
  if (step.stop_after_unix_ns) AddTime(o, "stop_after", *step.stop_after_unix_ns);
  o["read_bytes"] = step.read_bytes;
  o["data_bytes"] = step.data_bytes;
  return o;
}

nlohmann::ordered_json PlanJson(const RestorePlan& plan) {
  nlohmann::ordered_json o;
  o["target"] = plan.target.ToString();
  o["source_volume"] = plan.volume;
  o["lineage"] = plan.lineage;
  o["volume_size_bytes"] = plan.volume_size_bytes;
  o["end_lsn"] = plan.end_lsn;
  AddTime(o, "end", plan.end_unix_ns, /*zero_is_null=*/true);
  nlohmann::ordered_json steps = nlohmann::ordered_json::array();
  for (const RestoreStep& s : plan.steps) steps.push_back(StepJson(s));
  o["steps"] = std::move(steps);
  o["read_bytes"] = plan.read_bytes();
  o["data_bytes"] = plan.data_bytes();
  return o;
}

nlohmann::ordered_json StateJson(const RestoreState& s) {
  nlohmann::ordered_json o;
  o["state"] = RestorePhaseName(s.phase);
  o["source_volume"] = s.source_volume;
  o["lineage"] = s.lineage;
  o["lsn"] = s.lsn;
  AddTime(o, "at", s.unix_ns, /*zero_is_null=*/true);
  o["full"] = s.full;
  o["last_set"] = s.last_set;
  o["pending_set"] = s.pending() ? nlohmann::ordered_json(s.pending_set) : nlohmann::ordered_json();
  o["instant"] = s.instant;
  nlohmann::ordered_json applied = nlohmann::ordered_json::array();
  for (const AppliedSet& a : s.applied) {
    applied.push_back({{"id", a.id},
                       {"type", BackupTypeName(a.type)},
                       {"first_lsn", a.first_lsn},
                       {"last_lsn", a.last_lsn}});
  }
  o["applied"] = std::move(applied);
  o["applied_omitted"] = s.applied_omitted;
  return o;
}

nlohmann::ordered_json CheckJson(const RestoreCheck& c) {
  nlohmann::ordered_json o;
  o["mode"] = RestoreCheckModeName(c.mode);
  o["state"] = RestoreCheckStateName(c.state);
  o["checked_bytes"] = c.checked_bytes;
  o["problems"] = c.problems;
  o["first_problem"] =
      c.first_problem.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(c.first_problem);
  o["error"] = c.error.empty() ? nlohmann::ordered_json() : nlohmann::ordered_json(c.error);
  AddTime(o, "started", c.started_unix_ns, /*zero_is_null=*/true);
  AddTime(o, "finished", c.finished_unix_ns, /*zero_is_null=*/true);
  return o;
}

// The state with its check as `restore status` shows it (interrupted when
// the recorded running check has no job here).
nlohmann::ordered_json StateJsonWithCheck(Pool& pool, const std::string& volume,
                                          const RestoreState& s) {
  nlohmann::ordered_json o = StateJson(s);
  o["check"] =
      s.check ? CheckJson(ShownRestoreCheck(pool, volume, *s.check)) : nlohmann::ordered_json();
  return o;
}

// `listed`: the bad blocks are listed beside it (then it does not name the
// first one again).
std::string CheckText(const RestoreCheck& c, bool listed = false) {
  std::string text = std::string(RestoreCheckModeName(c.mode)) + " check (started " +
                     HumanTime(c.started_unix_ns) + "): ";
  const std::string took =
      c.finished_unix_ns > c.started_unix_ns
          ? " in " + HumanSeconds(static_cast<double>(c.finished_unix_ns - c.started_unix_ns) / 1e9)
          : std::string();
  switch (c.state) {
    case RestoreCheckState::kRunning:
      return text + "running (`snapdisk backup jobs` shows its progress inside the server)";
    case RestoreCheckState::kClean:
      return text + "clean, " + HumanBytes(c.checked_bytes) + " checked" + took;
    case RestoreCheckState::kProblems:
      return text + std::to_string(c.problems) + " bad block" + (c.problems == 1 ? "" : "s") +
             " in " + HumanBytes(c.checked_bytes) + " checked" + took +
             (listed ? std::string(":") : "; the first at " + c.first_problem);
    case RestoreCheckState::kInterrupted:
      return text +
             "interrupted (the process running it stopped); `snapdisk restore check` "
             "runs it again";
    case RestoreCheckState::kCancelled:
      return text + "cancelled after " + HumanBytes(c.checked_bytes) +
             "; `snapdisk restore check` runs it again";
    case RestoreCheckState::kFailed:
      return text + "failed: " + c.error;
  }
  return text;
}

nlohmann::ordered_json ResultJson(const RestoreResult& r) {
  nlohmann::ordered_json o;
  o["volume"] = r.volume;
  o["applied"] = r.applied;
  o["state"] = StateJson(r.state);
  o["rto_usable_seconds"] = r.first_read_ns > 0 ? nlohmann::ordered_json(r.first_read_ns / 1e9)
                                                : nlohmann::ordered_json();
  o["complete_seconds"] = r.complete_ns / 1e9;
  o["read_bytes"] = r.read_bytes;
  o["chunks_read"] = r.chunks_read;
  o["written_bytes"] = r.written_bytes;
  o["zeroed_bytes"] = r.zeroed_bytes;
  return o;
}

std::string StateText(const RestoreState& s) {
  std::string text = std::string(RestorePhaseName(s.phase)) + ", restored from volume '" +
                     s.source_volume + "' up to LSN " + std::to_string(s.lsn);
  if (s.unix_ns > 0) text += " (" + HumanTime(s.unix_ns) + ")";
  if (s.applied.empty()) {
    text += "; last set applied " + (s.last_set.empty() ? std::string("none") : s.last_set);
  } else {
    text += std::string(s.instant ? "; restored instantly from " : "; sets applied, in order: ");
    for (size_t i = 0; i < s.applied.size(); ++i) {
      const AppliedSet& a = s.applied[i];
      const bool image = a.type == BackupType::kSnapshot || a.type == BackupType::kFull;
      const std::string lsns = image ? "up to " + std::to_string(a.last_lsn)
                               : a.first_lsn > a.last_lsn
                                   ? "none (at " + std::to_string(a.last_lsn) + ")"
                                   : std::to_string(a.first_lsn) + "-" + std::to_string(a.last_lsn);
      text += (i == 0 ? "" : ", ") + a.id + " (" + BackupTypeName(a.type) + ", LSN " + lsns + ")";
      if (i == 0 && s.applied_omitted > 0) {
        text += ", (" + std::to_string(s.applied_omitted) + " more)";
      }
    }
  }
  if (s.pending())
    text +=
        "; step " + s.pending_set + " was interrupted (rolled back on the next restore command)";
  return text;
}

void PrintResult(CommandContext& ctx, const RestoreResult& r, const std::string& what) {
  if (ctx.json()) {
    ctx.PrintJson(ResultJson(r));
    return;
  }
  std::string applied;
  for (const std::string& id : r.applied) applied += (applied.empty() ? "" : ", ") + id;
  ctx.Print(what + " volume '" + r.volume + "': applied " + applied + "; " +
            HumanBytes(r.written_bytes) + " written, " + HumanBytes(r.read_bytes) +
            " read from the store in " + std::to_string(r.chunks_read) + " chunks; " +
            (r.first_read_ns > 0
                 ? "usable after " + std::to_string(r.first_read_ns / 1'000'000) + " ms, "
                 : std::string()) +
            "done after " + std::to_string(r.complete_ns / 1'000'000) + " ms\n" +
            "State: " + StateText(r.state) + "\n");
}

RestoreOptions OptionsWithProgress(CommandContext& ctx) {
  RestoreOptions options;
  options.progress = [&ctx](const RestoreProgress& p) {
    ctx.out().Progress(
        "restore " + p.set_id + " (" + std::to_string(p.step) + "/" + std::to_string(p.steps) + ")",
        p.done_bytes, p.total_bytes, ProgressUnit::kBytes);
    return !ctx.out().Cancelled();
  };
  return options;
}

// What --json says of every instant restore.
// Bytes read from the store over what reading each of the set's chunks once
// costs: null when that is not known.
nlohmann::ordered_json ReadAmplification(uint64_t read_bytes, uint64_t set_stored_bytes) {
  if (set_stored_bytes == 0) return nullptr;
  return static_cast<double>(read_bytes) / static_cast<double>(set_stored_bytes);
}
std::string AmplificationText(uint64_t read_bytes, uint64_t set_stored_bytes) {
  if (set_stored_bytes == 0) return "";
  char text[96];
  std::snprintf(text, sizeof text, " (%.2fx the set's %s stored)",
                static_cast<double>(read_bytes) / static_cast<double>(set_stored_bytes),
                HumanBytes(set_stored_bytes).c_str());
  return text;
}

nlohmann::ordered_json InstantJson(const std::string& volume, const HydrationProgress& p) {
  nlohmann::ordered_json o;
  o["volume"] = volume;
  o["applied"] = nlohmann::ordered_json::array({p.set_id});
  o["instant"] = true;
  o["rto_usable_seconds"] = p.usable_after_s;
  return o;
}

// An instant restore's fill, as a stepped job. The command answers once the
// volume is usable (it has served its first read) unless `wait`: inside
// `snapdisk serve` the fill then goes on as a server job; without a server
// it stops there and the next `serve` (or `restore resume`) continues it.
// Either way reads of blocks not filled yet fetch them from the store (the
// pool's hydration_source_resolver attaches the recorded store on demand).
// The store stays open while the job runs; a job that does not finish
// (cancelled, failed) detaches its source, which the next read attaches
// again from the store the volume recorded.
int RunHydration(CommandContext& ctx, std::shared_ptr<WormStore> store,
                 std::unique_ptr<HydrationJob> job, const std::string& volume, bool wait,
                 const std::string& store_dir) {
  struct Run {
    std::shared_ptr<WormStore> store;
    std::unique_ptr<HydrationJob> job;
  };
  auto run = std::make_shared<Run>(Run{std::move(store), std::move(job)});
  const HydrationProgress start = run->job->progress();
  const std::string usable = "Volume '" + volume + "' is usable now (after " +
                             std::to_string(static_cast<int64_t>(start.usable_after_s * 1000)) +
                             " ms)";
  if (!ctx.json() && wait) {
    ctx.out().Stderr(usable + "; filling " + HumanBytes(start.pending_bytes) + " from backup " +
                     start.set_id + " before returning (--wait)\n");
  }
  SteppedJob steps;
  if (!wait) {
    steps.answer_early = [run, volume, usable,
                          store_dir](CommandContext& ctx) -> std::optional<int> {
      const HydrationProgress p = run->job->progress();
      const bool here = ctx.in_server();
      if (ctx.json()) {
        nlohmann::ordered_json o = InstantJson(volume, p);
        o["pending_bytes"] = p.pending_bytes;
        o["total_bytes"] = p.total_bytes;
        o["fill"] = p.pending_bytes == 0 ? "done" : here ? "running in the server" : "stopped";
        ctx.PrintJson(o);
        return kExitOk;
      }
      std::string text = usable + ": restored from backup " + p.set_id + ". ";
      if (p.pending_bytes == 0) {
        text += "Nothing is left to fill.\n";
      } else if (here) {
        text += HumanBytes(p.pending_bytes) +
                " are being filled in the background by the server (`snapdisk backup jobs " +
                ctx.pool_path() + "`, `snapdisk restore status " + ctx.pool_path() + " " + volume +
                "`); reads of blocks not filled yet fetch them from the store.\n";
      } else {
        text += HumanBytes(p.pending_bytes) +
                " are still to fill: reads of those blocks fetch them from the store meanwhile. "
                "The fill goes on when `snapdisk serve " +
                ctx.pool_path() + "` runs, or now with `snapdisk restore resume --store " +
                store_dir + " " + ctx.pool_path() + " " + volume +
                "`, which fills it before it returns.\n";
      }
      ctx.Print(text);
      return kExitOk;
    };
  }
  steps.step = [run] { return run->job->Step(); };
  steps.cancel = [run] { run->job->Cancel(); };
  steps.id = [run] { return run->job->progress().set_id; };
  steps.progress = [run] {
    const HydrationProgress p = run->job->progress();
    return StepProgress{FillJobLabel(p.volume, p.set_id), p.done_bytes, p.total_bytes,
                        ProgressUnit::kBytes};
  };
  steps.finish = [run, volume](CommandContext& ctx) {
    const HydrationProgress p = run->job->progress();
    if (!run->job->result().ok()) {
      (void)ctx.pool().AttachHydrationSource(volume, nullptr);
      return ctx.Fail(run->job->result().WithContext(
          "volume '" + volume + "' stays hydrating (" + HumanBytes(p.pending_bytes) +
          " pending; reads fetch them from the store); `snapdisk serve` or `snapdisk restore "
          "resume` finishes the fill"));
    }
    if (ctx.json()) {
      nlohmann::ordered_json o = InstantJson(volume, p);
      o["complete_seconds"] = p.hydrated_after_s;
      o["read_bytes"] = p.store_bytes_read;
      o["chunks_read"] = p.chunks_read;
      o["filled_bytes"] = p.filled_bytes;
      o["set_stored_bytes"] = p.set_stored_bytes;
      o["read_amplification"] = ReadAmplification(p.store_bytes_read, p.set_stored_bytes);
      ctx.PrintJson(o);
    } else {
      ctx.Print(
          "Restored backup " + p.set_id + " into volume '" + volume + "' instantly: usable after " +
          std::to_string(static_cast<int64_t>(p.usable_after_s * 1000)) + " ms, hydrated after " +
          std::to_string(static_cast<int64_t>(p.hydrated_after_s * 1000)) + " ms; " +
          HumanBytes(p.filled_bytes) + " filled by the job, " + HumanBytes(p.store_bytes_read) +
          " read from the store" + AmplificationText(p.store_bytes_read, p.set_stored_bytes) +
          "\n");
    }
    return kExitOk;
  };
  return ctx.RunSteps(std::move(steps));
}

// Where a restore reads: the store (--store DIR) or the export files
// (--from FILE ..., read-only, every object verified as it is read).
Result<std::shared_ptr<WormStore>> OpenSource(CommandContext& ctx, const RestoreArgs& args) {
  if (args.from.empty()) return OpenStore(ctx.ResolvePath(args.store));
  std::vector<std::string> paths;
  for (const std::string& f : args.from) paths.push_back(ctx.ResolvePath(f));
  SNAPDISK_ASSIGN_OR_RETURN(std::unique_ptr<WormStore> files, OpenBackupExports(paths));
  return std::shared_ptr<WormStore>(std::move(files));
}

int RunRestore(CommandContext& ctx, const RestoreArgs& args, const std::string& volume, bool onto) {
  auto store = OpenSource(ctx, args);
  if (!store.ok()) return ctx.Fail(store.status());
  RestoreTarget target;
  if (!args.id.empty()) {
    target = RestoreTarget::Backup(args.id);
  } else {
    auto source = SourceVolume(**store, args, volume);
    if (!source.ok()) return ctx.Fail(source.status());
    target = args.time.empty()
                 ? RestoreTarget::Lsn(*source, std::stoull(args.lsn))
                 : RestoreTarget::PointInTime(*source, ParseTimestamp(args.time).value());
  }
  // A snapshot set restored to a new volume is instant: usable at once,
  // filled in the background (unless --copy or --restoring; not from export
  // files: the fill would need them after this command).
  auto instant = [&](const std::string& id) {
    LazyRestoreOptions lazy;
    lazy.store_locator = CanonicalStoreDir(ctx.ResolvePath(args.store));
    lazy.store_owner = *store;  // the volume reads through it after this command
    if (!args.rate.empty()) lazy.rate_mb_per_s = ParseRate(args.rate).value();
    auto job = StartLazyRestore(ctx.pool(), **store, id, volume, lazy);
    if (!job.ok()) return ctx.Fail(job.status());
    return RunHydration(ctx, *store, std::move(job).value(), volume, args.wait, args.store);
  };
  const bool may_be_instant =
      !onto && !args.copy && !args.restoring && args.from.empty() && !args.plan;
  if (may_be_instant && !args.id.empty()) {
    // Known from the set's restore index top alone: planning would read
    // every manifest of the volume, O(its data).
    Result<RestoreIndex> index = FindRestoreIndex(**store, args.id);
    if (index.ok() && index->type == BackupType::kSnapshot) return instant(index->id);
  }
  auto plan = PlanRestore(**store, target);
  if (!plan.ok()) return ctx.Fail(plan.status());
  if (args.plan) {
    if (ctx.json()) {
      ctx.PrintJson(PlanJson(*plan));
    } else {
      ctx.Print(plan->ToString());
    }
    return kExitOk;
  }
  if (may_be_instant && plan->steps.size() == 1 &&
      plan->steps[0].set.type == BackupType::kSnapshot) {
    return instant(plan->steps[0].set.id);
  }
  RestoreOptions options = OptionsWithProgress(ctx);
  options.open = !args.restoring;
  options.replace = args.replace;
  auto result = onto ? RestoreOnto(ctx.pool(), **store, *plan, volume, options)
                     : RestoreToNewVolume(ctx.pool(), **store, *plan, volume, options);
  ctx.out().ProgressEnd();
  if (!result.ok()) return ctx.Fail(result.status());
  PrintResult(ctx, *result, "Restored " + plan->target.ToString() + " into");
  return kExitOk;
}

int RunApply(CommandContext& ctx, const RestoreArgs& args) {
  auto store = OpenSource(ctx, args);
  if (!store.ok()) return ctx.Fail(store.status());
  RestoreOptions options = OptionsWithProgress(ctx);
  options.replace = args.replace;
  auto result = ApplySet(ctx.pool(), **store, args.id, args.volume, options);
  ctx.out().ProgressEnd();
  if (!result.ok()) return ctx.Fail(result.status());
  PrintResult(ctx, *result, "Applied " + args.id + " to");
  return kExitOk;
}

VolumeCheckOptions CheckOptions(const RestoreArgs& args) {
  VolumeCheckOptions options;
  if (!args.rate.empty()) options.rate_mb_per_s = ParseRate(args.rate).value();
  return options;
}

// What a check found, as a document (--json) or lines: the volume's state,
// the recorded check and the bad blocks' offsets.
void PrintCheck(CommandContext& ctx, const std::string& volume, const std::string& headline,
                const RestoreCheckJob& job) {
  const RestoreCheck& c = job.record();
  auto after = GetRestoreState(ctx.pool(), volume);
  if (ctx.json()) {
    nlohmann::ordered_json o = after.ok() && *after ? StateJson(**after) : nlohmann::ordered_json();
    o["volume"] = volume;
    o["checked_bytes"] = c.checked_bytes;
    o["check"] = CheckJson(c);
    nlohmann::ordered_json problems = nlohmann::ordered_json::array();
    for (const VolumeCheckProblem& p : job.problems()) {
      problems.push_back({{"offset_bytes", p.offset_bytes}, {"detail", p.detail}});
    }
    o["bad_blocks"] = std::move(problems);
    ctx.PrintJson(o);
    return;
  }
  std::string text = headline;
  if (after.ok() && *after) text += "State: " + StateText(**after) + "\n";
  text += CheckText(c, /*listed=*/!job.problems().empty()) + "\n";
  if (!job.problems().empty()) {
    Table table({"OFFSET", "DETAIL"});
    table.RightAlign(0);
    for (const VolumeCheckProblem& p : job.problems()) {
      table.AddRow({std::to_string(p.offset_bytes), p.detail});
    }
    text += table.Render();
    if (c.problems > job.problems().size()) {
      text += "... and " + std::to_string(c.problems - job.problems().size()) + " more\n";
    }
  }
  ctx.Print(text);
}

// "1 bad block (the first at ...)"; in text mode the blocks are listed on
// stdout already, so only their count is repeated (each block's line once).
std::string BadBlocks(const CommandContext& ctx, const RestoreCheck& c) {
  const std::string count =
      std::to_string(c.problems) + " bad block" + (c.problems == 1 ? "" : "s");
  return ctx.json() ? count + " (the first at " + c.first_problem + ")" : count + " (listed above)";
}

// Runs a restore check as a stepped job; `done` reports the outcome once it
// has finished (the job's result is OK: it ran to its end).
int RunCheck(CommandContext& ctx, std::unique_ptr<RestoreCheckJob> job,
             std::function<int(CommandContext&, const RestoreCheckJob&)> done,
             std::function<int(CommandContext&, const RestoreCheckJob&)> stopped,
             std::function<std::optional<int>(CommandContext&)> answer_early = {}) {
  std::shared_ptr<RestoreCheckJob> run = std::move(job);
  const std::string volume = run->volume();
  SteppedJob steps;
  steps.step = [run] { return run->Step(); };
  steps.cancel = [run] { run->Cancel(); };
  steps.id = [volume] { return "check:" + volume; };
  steps.progress = [run, volume] {
    const VolumeCheckProgress p = run->progress();
    return StepProgress{(p.mapping ? "map " : "check ") + volume, p.checked_bytes, p.total_bytes,
                        ProgressUnit::kBytes};
  };
  steps.finish = [run, done, stopped](CommandContext& ctx) {
    return run->result().ok() ? done(ctx, *run) : stopped(ctx, *run);
  };
  steps.answer_early = std::move(answer_early);
  return ctx.RunSteps(std::move(steps));
}

int RunOpen(CommandContext& ctx, const RestoreArgs& args) {
  if (Status s = RecoverRestoreStep(ctx.pool(), args.volume); !s.ok()) return ctx.Fail(s);
  auto state = GetRestoreState(ctx.pool(), args.volume);
  if (!state.ok()) return ctx.Fail(state.status());
  if (!*state || (*state)->phase != RestorePhase::kRestoring) {
    return ctx.Fail(Status::InvalidArgument("volume '" + args.volume +
                                            "' is not being restored (nothing to open)"));
  }
  const std::string volume = args.volume;
  const std::string vol = "volume '" + volume + "'";
  if (args.check == "sync") {
    // The check before the volume goes live: every mapped block of it read
    // back and verified; it opens only when clean.
    auto job =
        RestoreCheckJob::Start(ctx.pool(), volume, RestoreCheckMode::kSync, CheckOptions(args));
    if (!job.ok()) return ctx.Fail(job.status().WithContext(vol + " stays restoring"));
    return RunCheck(
        ctx, std::move(job).value(),
        [volume, vol](CommandContext& ctx, const RestoreCheckJob& job) {
          const RestoreCheck& c = job.record();
          if (c.state == RestoreCheckState::kProblems) {
            PrintCheck(ctx, volume, "Volume '" + volume + "' was not opened.\n", job);
            ctx.Note(vol + " stays restoring: the check found " + BadBlocks(ctx, c));
            return kExitCorruption;
          }
          if (Status s = OpenRestoredVolume(ctx.pool(), volume); !s.ok()) return ctx.Fail(s);
          auto after = GetRestoreState(ctx.pool(), volume);
          if (!after.ok()) return ctx.Fail(after.status());
          if (ctx.json()) {
            nlohmann::ordered_json o = StateJson(**after);
            o["volume"] = volume;
            o["checked_bytes"] = c.checked_bytes;
            o["check"] = CheckJson(c);
            ctx.PrintJson(o);
          } else {
            ctx.Print("Opened volume '" + volume + "' after a clean check of " +
                      HumanBytes(c.checked_bytes) + ": " + StateText(**after) + "\n");
          }
          return kExitOk;
        },
        [vol](CommandContext& ctx, const RestoreCheckJob& job) {
          return ctx.Fail(job.result().WithContext(vol + " stays restoring (not opened)"));
        });
  }
  // Async: live at once, checked while clients use it.
  if (Status s = OpenRestoredVolume(ctx.pool(), volume); !s.ok()) return ctx.Fail(s);
  auto job =
      RestoreCheckJob::Start(ctx.pool(), volume, RestoreCheckMode::kAsync, CheckOptions(args));
  if (!job.ok()) {
    return ctx.Fail(job.status().WithContext(
        vol + " is open, but its check could not start (`snapdisk restore check` runs it)"));
  }
  // Inside the server the command answers at once and the check goes on as
  // a server job; run here it checks before returning (nothing would carry
  // it on), and Ctrl-C leaves it interrupted for `restore check`.
  std::function<std::optional<int>(CommandContext&)> answer_early;
  if (ctx.in_server()) {
    answer_early = [volume](CommandContext& ctx) -> std::optional<int> {
      if (ctx.json()) {
        auto after = GetRestoreState(ctx.pool(), volume);
        nlohmann::ordered_json o = after.ok() && *after
                                       ? StateJsonWithCheck(ctx.pool(), volume, **after)
                                       : nlohmann::ordered_json();
        o["volume"] = volume;
        ctx.PrintJson(o);
      } else {
        ctx.Print("Opened volume '" + volume +
                  "' before its check: it is writable and exported now. The server checks its "
                  "data in the background (`snapdisk backup jobs " +
                  ctx.pool_path() + "`); `snapdisk restore status " + ctx.pool_path() + " " +
                  volume + "` shows the result.\n");
      }
      return kExitOk;
    };
  } else if (!ctx.json()) {
    ctx.out().Stderr("Opened volume '" + volume +
                     "' before its check: it is writable now; checking its data before this "
                     "command returns (inside `snapdisk serve` it would return at once)\n");
  }
  return RunCheck(
      ctx, std::move(job).value(),
      [volume, vol](CommandContext& ctx, const RestoreCheckJob& job) {
        const RestoreCheck& c = job.record();
        const bool bad = c.state == RestoreCheckState::kProblems;
        PrintCheck(ctx, volume,
                   "Opened volume '" + volume + "' before its check; the check " +
                       (bad ? "found problems" : "found it clean") + ".\n",
                   job);
        if (!bad) return kExitOk;
        ctx.Note(vol + " is open (it stays open), but its check found " + BadBlocks(ctx, c));
        return kExitCorruption;
      },
      [vol](CommandContext& ctx, const RestoreCheckJob& job) {
        return ctx.Fail(job.result().WithContext(
            vol + " is open; its check did not finish (`snapdisk restore check` runs it again)"));
      },
      std::move(answer_early));
}

// Runs the check of a restored volume again (open or restoring), recording
// the result; the volume's state does not change.
int RunRecheck(CommandContext& ctx, const RestoreArgs& args) {
  const std::string volume = args.volume;
  auto job =
      RestoreCheckJob::Start(ctx.pool(), volume, RestoreCheckMode::kSync, CheckOptions(args));
  if (!job.ok()) return ctx.Fail(job.status());
  return RunCheck(
      ctx, std::move(job).value(),
      [volume](CommandContext& ctx, const RestoreCheckJob& job) {
        const RestoreCheck& c = job.record();
        const bool bad = c.state == RestoreCheckState::kProblems;
        PrintCheck(ctx, volume, "Checked volume '" + volume + "'.\n", job);
        if (!bad) return kExitOk;
        ctx.Note("the check of volume '" + volume + "' found " + BadBlocks(ctx, c));
        return kExitProblemsFound;
      },
      [volume](CommandContext& ctx, const RestoreCheckJob& job) {
        return ctx.Fail(job.result().WithContext("volume '" + volume + "'"));
      });
}

int RunResume(CommandContext& ctx, const RestoreArgs& args) {
  if (std::optional<uint64_t> running = FindFillJob(args.volume)) {
    return ctx.Fail(Status::Busy("volume '" + args.volume + "' is being filled already (job " +
                                 std::to_string(*running) + " of `snapdisk backup jobs`)"));
  }
  auto store = OpenStore(ctx.ResolvePath(args.store));
  if (!store.ok()) return ctx.Fail(store.status());
  LazyRestoreOptions lazy;
  lazy.store_locator = CanonicalStoreDir(ctx.ResolvePath(args.store));
  lazy.store_owner = *store;
  // The cap the restore was started with, unless --rate says otherwise.
  if (args.rate == "none") {
    lazy.rate_mb_per_s = 0;
  } else if (!args.rate.empty()) {
    lazy.rate_mb_per_s = ParseRate(args.rate).value();
  } else if (auto recorded = GetHydrationSourceRecord(ctx.pool(), args.volume); recorded.ok()) {
    lazy.rate_mb_per_s = recorded->rate_mb_per_s;
  }
  auto job = ResumeHydration(ctx.pool(), args.volume, **store, lazy);
  if (!job.ok()) return ctx.Fail(job.status());
  return RunHydration(ctx, *store, std::move(job).value(), args.volume, /*wait=*/true, args.store);
}

int RunStatus(CommandContext& ctx, const RestoreArgs& args) {
  auto hydration = ctx.pool().GetHydrationInfo(args.volume);
  if (!hydration.ok()) return ctx.Fail(hydration.status());
  auto state = GetRestoreState(ctx.pool(), args.volume);
  if (!state.ok()) return ctx.Fail(state.status());
  const HydrationInfo& h = *hydration;
  // Once filled: what the fill that finished read (its job left it).
  std::optional<HydrationResult> filled;
  if (!h.hydrating) {
    auto r = GetHydrationResult(ctx.pool(), args.volume);
    if (r.ok()) {
      filled = *r;
    } else if (!r.status().IsNotFound()) {
      return ctx.Fail(r.status());
    }
  }
  const uint64_t read_bytes = filled ? filled->store_bytes_read : h.source_fetched_bytes;
  const uint64_t set_stored_bytes = filled ? filled->set_stored_bytes : h.source_image_bytes;
  // ---- Fill job (tools/cli/hydration_resume.h) ----
  // Whether a job of this process fills the volume: inside `snapdisk serve`,
  // the server's own fill resumed at its start, or a forwarded restore/resume.
  const std::optional<uint64_t> fill_job =
      h.hydrating ? FindFillJob(args.volume) : std::optional<uint64_t>();
  const std::string fill_text =
      !h.hydrating ? std::string()
      : fill_job   ? "; filling (job " + std::to_string(*fill_job) + " of `snapdisk backup jobs`)"
                   : "; no fill is running (`snapdisk serve " + ctx.pool_path() +
                       "` or `snapdisk restore resume` fills it)";
  // ---- end of fill job ----
  if (ctx.json()) {
    nlohmann::ordered_json o = *state ? StateJsonWithCheck(ctx.pool(), args.volume, **state)
                                      : nlohmann::ordered_json{{"state", nullptr}};
    o["volume"] = args.volume;
    o["hydrating"] = h.hydrating;
    o["hydration_total_bytes"] = h.total_bytes;
    o["hydration_pending_bytes"] = h.pending_bytes;
    o["hydration_source_attached"] = h.source_attached;
    o["hydration_fill_running"] = fill_job.has_value();  // fill job (hydration_resume.h)
    o["hydration_fill_job"] =
        fill_job ? nlohmann::ordered_json(*fill_job) : nlohmann::ordered_json();
    // Chunk bytes read from the store since the source was attached (by
    // this process; once filled, by the fill that finished), and that over
    // what reading each of the set's chunks once costs.
    o["hydration_read_bytes"] = read_bytes;
    o["hydration_set_stored_bytes"] = set_stored_bytes > 0
                                          ? nlohmann::ordered_json(set_stored_bytes)
                                          : nlohmann::ordered_json();
    o["hydration_read_amplification"] = ReadAmplification(read_bytes, set_stored_bytes);
    o["hydrated"] = filled ? nlohmann::ordered_json{{"set", filled->set_id},
                                                    {"finished", FormatRfc3339(filled->finished_unix_ns)},
                                                    {"finished_unix_ns", filled->finished_unix_ns}}
                           : nlohmann::ordered_json();
    ctx.PrintJson(o);
    return kExitOk;
  }
  if (h.hydrating) {
    ctx.Print(
        "volume '" + args.volume + "': hydrating from its backup, " +
        HumanBytes(h.total_bytes - h.pending_bytes) + " of " + HumanBytes(h.total_bytes) +
        " filled" +
        (h.source_attached ? "" : "; its store is attached when a block not filled yet is read") +
        fill_text + "\n");
    if (h.source_attached) {
      ctx.Print("volume '" + args.volume + "': " + HumanBytes(h.source_fetched_bytes) +
                " read from the store since its source was attached" +
                AmplificationText(h.source_fetched_bytes, h.source_image_bytes) + "\n");
    }
  }
  if (filled) {
    ctx.Print("volume '" + args.volume + "': hydrated from set " + filled->set_id + " at " +
              FormatRfc3339(filled->finished_unix_ns) + "; " + HumanBytes(filled->store_bytes_read) +
              " read from the store" +
              AmplificationText(filled->store_bytes_read, filled->set_stored_bytes) + "\n");
  }
  if (!*state) {
    if (!h.hydrating && !filled) ctx.Print("volume '" + args.volume + "' is not being restored\n");
  } else {
    std::string text = "volume '" + args.volume + "': " + StateText(**state) + "\n";
    if ((*state)->check) {
      text += "volume '" + args.volume +
              "': " + CheckText(ShownRestoreCheck(ctx.pool(), args.volume, *(*state)->check)) +
              "\n";
    }
    ctx.Print(text);
  }
  return kExitOk;
}

}  // namespace

void AddRestoreCommands(CLI::App& app, int& exit_code, Executor& executor) {
  auto args = std::make_shared<RestoreArgs>();
  CLI::App* restore = app.add_subcommand(
      "restore",
      "Restore from a WORM store: a backup set, a point in time or an LSN, to a new volume\n"
      "or onto an existing one; or apply, open and show a restore done in steps");
  restore->footer(
      "Usage:\n"
      "  snapdisk restore (--store DIR | --from FILE...) (ID | --time T | --lsn N)\n"
      "                   (--to-new POOL VOL | --onto POOL VOL)\n"
      "                   [--source VOL] [--plan] [--restoring] [--copy] [--replace] [--rate "
      "MB/s]\n"
      "                   [--json]\n"
      "  snapdisk restore apply (--store DIR | --from FILE...) ID POOL VOL [--replace] [--json]\n"
      "  snapdisk restore open POOL VOL [--check sync|async] [--rate MB/s] [--json]\n"
      "  snapdisk restore check POOL VOL [--rate MB/s] [--json]\n"
      "  snapdisk restore resume --store DIR POOL VOL [--rate MB/s|none] [--json]\n"
      "  snapdisk restore status POOL VOL [--json]\n\n"
      "A snapshot set restored to a new volume is instant: the command returns once the\n"
      "volume is usable (inside `snapdisk serve`, exported at once); a read of a block\n"
      "not yet filled fetches it from the store (whoever opens the pool, after restarts\n"
      "too), writes win over the backup's data, and the rest is filled in the background:\n"
      "by the server (`backup jobs`, `restore status`), or without one at the next\n"
      "`serve` or `restore resume`. --wait fills before returning, with progress; --copy\n"
      "copies first instead.\n"
      "The planner takes the fewest sets: a snapshot set alone; full + the latest\n"
      "differential + the incrementals after it; for --time/--lsn the latest data backup\n"
      "at or before the target, then log backups up to it. T is RFC 3339, fractions\n"
      "allowed (2026-11-21T08:40:00.250Z). --plan prints the chain and changes nothing.\n"
      "Every chunk is checked against its hash; a bad one stops the restore with its\n"
      "backup and chunk named and the volume as it was before that step. --restoring\n"
      "leaves the volume restoring: `restore apply` adds the next set of the chain\n"
      "(refused, before any block is written, when it does not follow on: the message\n"
      "names the gap and what to apply), `restore open` checks the volume and opens it.\n"
      "A restoring volume refuses clients' writes (and is not exported). The check reads\n"
      "every mapped block back, verified: --check sync (the default) opens only a clean\n"
      "volume; --check async opens at once and checks while clients use the volume (a\n"
      "problem found then leaves it open: exit 5). `restore status` shows the last\n"
      "check; `restore check` runs it again.\n"
      "--onto replaces the volume's data. A volume that is not the backup's source (another\n"
      "name, and not restored from it before), or that the restore would grow, is refused\n"
      "unless --replace is given (SQL Server's WITH REPLACE).\n"
      "--from restores from downloaded export files (`backup export`) instead of a store,\n"
      "checked as they are read: a set's file (it holds its whole chain), plus the files of\n"
      "the log backups after it for --time/--lsn.\n\n" +
      HelpFooter());
  restore->require_subcommand(0, 1);
  restore->add_option("ID", args->id, "The backup set to restore, e.g. F3 (see `backup list`)");
  restore->add_option("--store", args->store, "The WORM store's directory")->type_name("DIR");
  restore
      ->add_option("--from", args->from,
                   "Restore from export files (`backup export`) instead of a store: a\n"
                   "chain's file, plus log backups' files for --time/--lsn; repeatable")
      ->type_name("FILE")
      ->allow_extra_args(false);
  restore->add_option("--time", args->time, "Restore the volume as it was at this time")
      ->check(CheckValidator(CheckTimestamp, "time"))
      ->type_name("T");
  restore->add_option("--lsn", args->lsn, "Restore the volume as it was at this LSN")
      ->check(CheckValidator(CheckLsn, "LSN"))
      ->type_name("N");
  restore
      ->add_option("--source", args->source,
                   "The backed-up volume, for --time/--lsn (default: the store's only "
                   "volume, or the\ntarget's name)")
      ->check(NameValidator("volume name"))
      ->type_name("VOL");
  restore->add_option("--to-new", args->to_new, "Restore into a new volume VOL of POOL")
      ->expected(2)
      ->type_name("POOL VOL");
  restore
      ->add_option("--onto", args->onto,
                   "Restore onto the existing volume VOL of POOL (refused while it is in use)")
      ->expected(2)
      ->type_name("POOL VOL");
  restore->add_flag("--plan", args->plan,
                    "Print the chain the restore would apply; change nothing");
  restore->add_flag("--copy", args->copy,
                    "Copy a snapshot set before the volume is usable, rather than the instant\n"
                    "restore (usable at once, filled in the background)");
  restore->add_flag("--restoring", args->restoring,
                    "Leave the volume restoring, for `restore apply` and `restore open`");
  restore->add_flag("--wait", args->wait,
                    "An instant restore returns once the volume is usable (its fill goes on in\n"
                    "the server, or at the next `serve` / `restore resume`); --wait fills it\n"
                    "first, with progress");
  restore->add_flag("--replace", args->replace,
                    "With --onto: replace a volume that is not the backup's source, or grow it");
  AddRateOption(restore, args->rate,
                "Cap the background fill of an instant restore at this many MB/s (10^6\n"
                "bytes/s; recorded: a resumed fill keeps it). Clients' reads are never capped");
  AddJsonFlag(restore, args->json);
  restore->callback([restore, args, &exit_code, &executor] {
    if (!restore->get_subcommands().empty()) return;  // apply, open or status ran
    const int targets = !args->id.empty() + !args->time.empty() + !args->lsn.empty();
    if (targets != 1) {
      throw CLI::ValidationError("give exactly one of ID, --time T and --lsn N");
    }
    if (args->store.empty() == args->from.empty()) {
      throw CLI::ValidationError("give exactly one of --store DIR and --from FILE");
    }
    if (args->to_new.empty() == args->onto.empty()) {
      throw CLI::ValidationError("give exactly one of --to-new POOL VOL and --onto POOL VOL");
    }
    if (!args->source.empty() && !args->id.empty()) {
      throw CLI::ValidationError("--source goes with --time or --lsn, not with a set ID");
    }
    const bool onto = !args->onto.empty();
    const std::vector<std::string>& where = onto ? args->onto : args->to_new;
    if (Status s = ValidateName(where[1], "volume name"); !s.ok()) {
      throw CLI::ValidationError(s.message());
    }
    const std::string volume = where[1];
    exit_code = executor.RunOnPool(
        where[0], {args->json},
        [args, volume, onto](CommandContext& ctx) { return RunRestore(ctx, *args, volume, onto); });
  });

  {
    auto a = std::make_shared<RestoreArgs>();
    CLI::App* cmd = AddCommand(*restore, "apply",
                               "Apply the next backup set of the chain to a volume left "
                               "restoring; it stays restoring");
    cmd->add_option("--store", a->store, "The WORM store's directory")->type_name("DIR");
    cmd->add_option("--from", a->from, "Export files (`backup export`) instead of a store")
        ->type_name("FILE")
        ->allow_extra_args(false);
    cmd->add_option("ID", a->id, "The backup set, e.g. I7")->required();
    AddPoolArg(cmd, a->pool);
    AddVolumeArg(cmd, a->volume);
    cmd->add_flag("--replace", a->replace,
                  "A first set onto a volume that is not its source, or that it would grow");
    AddJsonFlag(cmd, a->json);
    cmd->callback([a, &exit_code, &executor] {
      if (a->store.empty() == a->from.empty()) {
        throw CLI::ValidationError("give exactly one of --store DIR and --from FILE");
      }
      exit_code = executor.RunOnPool(a->pool, {a->json},
                                     [a](CommandContext& ctx) { return RunApply(ctx, *a); });
    });
  }
  {
    auto a = std::make_shared<RestoreArgs>();
    CLI::App* cmd = AddCommand(*restore, "open",
                               "Make a restoring volume live (writable, exported; no more backups "
                               "can be applied),\nafter checking its data (sync) or while "
                               "checking it (async)");
    AddPoolArg(cmd, a->pool);
    AddVolumeArg(cmd, a->volume);
    cmd->add_option("--check", a->check,
                    "sync: read back and verify every block, then open a clean volume (the "
                    "default);\nasync: open at once, check in the background (the result is "
                    "recorded: `restore status`)")
        ->check(CLI::IsMember({"sync", "async"}))
        ->type_name("MODE");
    AddRateOption(cmd, a->rate, "Cap the check's reads at this many MB/s (10^6 bytes)");
    AddJsonFlag(cmd, a->json);
    cmd->callback([a, &exit_code, &executor] {
      exit_code = executor.RunOnPool(a->pool, {a->json},
                                     [a](CommandContext& ctx) { return RunOpen(ctx, *a); });
    });
  }
  {
    auto a = std::make_shared<RestoreArgs>();
    CLI::App* cmd = AddCommand(*restore, "check",
                               "Check a restored volume's data again (open or restoring): every "
                               "mapped block read\nback and verified; the result is recorded "
                               "(`restore status`); exit 1 on bad blocks");
    AddPoolArg(cmd, a->pool);
    AddVolumeArg(cmd, a->volume);
    AddRateOption(cmd, a->rate, "Cap the check's reads at this many MB/s (10^6 bytes)");
    AddJsonFlag(cmd, a->json);
    cmd->callback([a, &exit_code, &executor] {
      exit_code = executor.RunOnPool(a->pool, {a->json},
                                     [a](CommandContext& ctx) { return RunRecheck(ctx, *a); });
    });
  }
  {
    auto a = std::make_shared<RestoreArgs>();
    CLI::App* cmd = AddCommand(*restore, "resume",
                               "Attach an instantly restored volume's backup again (after a "
                               "restart, a crash or a\ncancelled fill) and finish filling it");
    cmd->add_option("--store", a->store, "The WORM store's directory")
        ->required()
        ->type_name("DIR");
    AddPoolArg(cmd, a->pool);
    AddVolumeArg(cmd, a->volume);
    cmd->add_option("--rate", a->rate,
                    "Cap the fill at this many MB/s, or `none` for no cap (default: the cap the\n"
                    "restore was started with)")
        ->check(CheckValidator(
            [](const std::string& v) { return v == "none" ? Status::OK() : CheckRate(v); }, "rate"))
        ->type_name("MB/s|none");
    AddJsonFlag(cmd, a->json);
    cmd->callback([a, &exit_code, &executor] {
      exit_code = executor.RunOnPool(a->pool, {a->json},
                                     [a](CommandContext& ctx) { return RunResume(ctx, *a); });
    });
  }
  {
    auto a = std::make_shared<RestoreArgs>();
    CLI::App* cmd = AddCommand(*restore, "status",
                               "Show a volume's restore state: restoring or open, the LSN and "
                               "time it is at, the last set applied, the last check");
    AddPoolArg(cmd, a->pool);
    AddVolumeArg(cmd, a->volume);
    AddJsonFlag(cmd, a->json);
    cmd->callback([a, &exit_code, &executor] {
      exit_code = executor.RunOnPool(a->pool, {a->json},
                                     [a](CommandContext& ctx) { return RunStatus(ctx, *a); });
    });
  }
}

}  // namespace snapdisk::cli
