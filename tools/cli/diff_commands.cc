// `snapdisk import-diff POOL VOL FILE` and `snapdisk export-diff POOL VOL@SNAP
// [--from SNAP] FILE`: Ceph RBD export-diff streams (format v1 and v2), the
// contract in restore/rbd_diff.h. Both run as stepped jobs
// (CommandContext::RunSteps), so inside `snapdisk serve` the event loop
// drives them between NBD requests, with progress, and the client hanging up
// cancels them (an import is then rolled back, an export leaves no file).
#include <sys/stat.h>
#include <unistd.h>

#include "restore/rbd_diff.h"
#include "tools/cli/command_util.h"
#include "tools/cli/exit_codes.h"
#include "tools/cli/progress.h"
#include "tools/cli/report.h"

namespace snapdisk::cli {

namespace {

struct DiffArgs {
  std::string pool;
  std::string volume;  // import: VOL; export: VOL@SNAP
  std::string file;
  std::string from;
  int format = 2;
  bool overwrite = false;
  bool json = false;
};

nlohmann::ordered_json OrNull(const std::optional<std::string>& value) {
  return value ? nlohmann::ordered_json(*value) : nlohmann::ordered_json(nullptr);
}

std::string FromTo(const std::optional<std::string>& from, const std::optional<std::string>& to) {
  std::string text = from ? "from snapshot '" + *from + "'" : "from an empty image";
  if (to) text += " to snapshot '" + *to + "'";
  return text;
}

std::string Records(uint64_t n) { return std::to_string(n) + (n == 1 ? " record" : " records"); }

StepProgress ToStepProgress(const rbd::DiffProgress& p) {
  return StepProgress{p.label, p.done_bytes, p.total_bytes, ProgressUnit::kBytes};
}

int ImportDiff(CommandContext& ctx, const DiffArgs& args) {
  if (args.file == "-") {
    return ctx.Fail(Status::InvalidArgument(
        "import-diff needs a file, not - (the stream is checked whole before anything is "
        "written, so it is read twice)"));
  }
  auto started =
      rbd::ImportJob::Start(ctx.pool(), args.volume, ctx.ResolvePath(args.file), args.file);
  if (!started.ok()) return ctx.Fail(started.status());
  std::shared_ptr<rbd::ImportJob> job = std::move(started).value();
  const int64_t start_ns = MonotonicNs();
  SteppedJob steps;
  steps.step = [job] { return job->Step(); };
  steps.cancel = [job] { job->Cancel(); };
  steps.progress = [job] { return ToStepProgress(job->progress()); };
  steps.finish = [job, start_ns](CommandContext& ctx) {
    const Result<rbd::ImportReport>& report = job->result();
    if (!report.ok()) return ctx.Fail(report.status());
    auto info = ctx.pool().GetVolume(report->volume);
    if (!info.ok()) return ctx.Fail(info.status());
    const double seconds = static_cast<double>(MonotonicNs() - start_ns) / 1e9;
    const rbd::DiffSummary& s = report->summary;
    if (ctx.json()) {
      ctx.PrintJson({{"volume", VolumeJson(*info)},
                     {"stream", report->stream},
                     {"format", static_cast<int>(s.format)},
                     {"from_snapshot", OrNull(s.from_snapshot)},
                     {"to_snapshot", OrNull(s.to_snapshot)},
                     {"image_size_bytes", s.size_bytes ? nlohmann::ordered_json(*s.size_bytes)
                                                       : nlohmann::ordered_json()},
                     {"data_records", s.data_records},
                     {"zero_records", s.zero_records},
                     {"data_bytes", s.data_bytes},
                     {"zero_bytes", s.zero_bytes},
                     {"stream_bytes", s.stream_bytes},
                     {"written_bytes", report->written_bytes},
                     {"zeroed_bytes", report->zeroed_bytes},
                     {"old_size_bytes", report->old_size_bytes},
                     {"size_bytes", report->size_bytes},
                     {"snapshot", report->snapshot ? SnapshotJson(*report->snapshot)
                                                   : nlohmann::ordered_json(nullptr)},
                     {"seconds", seconds}});
      return kExitOk;
    }
    std::string text = "Imported RBD diff v" + std::to_string(static_cast<int>(s.format)) +
                       " stream " + report->stream + " (" + FromTo(s.from_snapshot, s.to_snapshot) +
                       ") into volume '" + report->volume +
                       "': " + HumanBytes(report->written_bytes) + " written, " +
                       HumanBytes(report->zeroed_bytes) + " zeroed";
    if (report->size_bytes != report->old_size_bytes) {
      text += ", grown from " + HumanBytes(report->old_size_bytes) + " to " +
              HumanBytes(report->size_bytes);
    }
    if (report->snapshot) {
      text += "; created snapshot '" + report->volume + "@" + report->snapshot->name + "'";
    }
    ctx.Print(text + " in " + HumanSeconds(seconds) + "\n");
    return kExitOk;
  };
  return ctx.RunSteps(std::move(steps));
}

// FILE names the pool file itself (which a rename would replace).
bool IsPoolFile(const CommandContext& ctx, const std::string& path) {
  struct stat target, pool;
  return ::stat(path.c_str(), &target) == 0 &&
         ::stat(ctx.ResolvePath(ctx.pool_path()).c_str(), &pool) == 0 &&
         target.st_dev == pool.st_dev && target.st_ino == pool.st_ino;
}

int ExportDiff(CommandContext& ctx, const DiffArgs& args) {
  const VolumeRef ref = ParseVolumeRef(args.volume, true).value();
  rbd::ExportOptions options;
  options.format = args.format == 1 ? rbd::DiffFormat::kV1 : rbd::DiffFormat::kV2;
  options.from_snapshot = args.from;
  options.overwrite = args.overwrite;
  const bool to_stdout = args.file == "-";
  const std::string path = to_stdout ? std::string() : ctx.ResolvePath(args.file);
  if (to_stdout) {
    options.output_fd = ctx.stdout_fd();
    if (options.output_fd < 0 || ::isatty(options.output_fd) == 1) {
      return ctx.Fail(Status::InvalidArgument(
          "refusing to write a diff stream to a terminal; redirect stdout or give a FILE"));
    }
  } else if (IsPoolFile(ctx, path)) {
    return ctx.Fail(Status::InvalidArgument(args.file + " is the pool file itself"));
  }
  auto started = rbd::ExportJob::Start(ctx.pool(), ref.volume, ref.snapshot, path, options,
                                       to_stdout ? "stdout" : args.file);
  if (!started.ok()) {
    Status s = started.status();
    if (s.IsAlreadyExists()) {
      s = Status::AlreadyExists(s.message() + " (give --overwrite to replace it)");
    }
    return ctx.Fail(s);
  }
  std::shared_ptr<rbd::ExportJob> job = std::move(started).value();
  const int64_t start_ns = MonotonicNs();
  SteppedJob steps;
  steps.step = [job] { return job->Step(); };
  steps.cancel = [job] { job->Cancel(); };
  steps.progress = [job] { return ToStepProgress(job->progress()); };
  steps.finish = [job, start_ns, to_stdout](CommandContext& ctx) {
    const Result<rbd::ExportReport>& report = job->result();
    if (!report.ok()) return ctx.Fail(report.status());
    const double seconds = static_cast<double>(MonotonicNs() - start_ns) / 1e9;
    if (ctx.json()) {
      ctx.PrintJson({{"volume", report->volume},
                     {"snapshot", report->snapshot},
                     {"from_snapshot", report->from_snapshot.empty()
                                           ? nlohmann::ordered_json(nullptr)
                                           : nlohmann::ordered_json(report->from_snapshot)},
                     {"path", report->stream},
                     {"format", static_cast<int>(report->format)},
                     {"size_bytes", report->size_bytes},
                     {"data_records", report->data_records},
                     {"zero_records", report->zero_records},
                     {"data_bytes", report->data_bytes},
                     {"zero_bytes", report->zero_bytes},
                     {"stream_bytes", report->stream_bytes},
                     {"seconds", seconds}});
      return kExitOk;
    }
    std::optional<std::string> from;
    if (!report->from_snapshot.empty()) from = report->from_snapshot;
    const std::string line =
        "Exported '" + report->volume + "@" + report->snapshot + "' (" +
        FromTo(from, std::nullopt) + ") to " + report->stream + " as an RBD diff v" +
        std::to_string(static_cast<int>(report->format)) + " stream of " +
        HumanBytes(report->stream_bytes) + ": " + HumanBytes(report->data_bytes) + " of data (" +
        Records(report->data_records) + "), " + HumanBytes(report->zero_bytes) + " zeroed (" +
        Records(report->zero_records) + ") in " + HumanSeconds(seconds) + "\n";
    // With FILE -, stdout carries the stream.
    if (to_stdout) {
      ctx.out().Stderr(line);
    } else {
      ctx.Print(line);
    }
    return kExitOk;
  };
  return ctx.RunSteps(std::move(steps));
}

}  // namespace

void AddDiffCommands(CLI::App& app, int& exit_code, Executor& executor) {
  {
    auto args = std::make_shared<DiffArgs>();
    CLI::App* cmd = AddCommand(
        app, "import-diff",
        "Apply a Ceph RBD export-diff stream (format v1 or v2, as `rbd export-diff` writes)\n"
        "to a volume, like `rbd import-diff`. A stream with a from snapshot needs the volume\n"
        "to have that snapshot and no changes since; its to snapshot is created at the end\n"
        "(refused if it exists). The whole stream is checked before anything is written;\n"
        "a failed or interrupted import rolls the volume back. Refused while the volume is\n"
        "in use (exported by `snapdisk serve`)");
    AddPoolArg(cmd, args->pool);
    AddVolumeArg(cmd, args->volume);
    cmd->add_option("FILE", args->file, "The diff stream (a file: it is read twice)")->required();
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, &exit_code, &executor] {
      exit_code = executor.RunOnPool(
          args->pool, {args->json}, [args](CommandContext& ctx) { return ImportDiff(ctx, *args); });
    });
  }
  {
    auto args = std::make_shared<DiffArgs>();
    CLI::App* cmd = AddCommand(
        app, "export-diff",
        "Write the changes from snapshot --from to VOL@SNAP (every mapped range without\n"
        "--from) as a Ceph RBD export-diff stream, for `rbd import-diff` or `snapdisk\n"
        "import-diff`. FILE - writes stdout (not a terminal). The file appears only when\n"
        "complete (a failed export leaves none); an existing FILE needs --overwrite");
    AddPoolArg(cmd, args->pool);
    cmd->add_option("VOL@SNAP", args->volume, "The snapshot to export")
        ->required()
        ->check(VolumeRefValidator(true));
    cmd->add_option("FILE", args->file, "Output file, or - for stdout")->required();
    cmd->add_option("--from,--from-snap", args->from,
                    "The older snapshot of the same volume the diff starts from")
        ->check(NameValidator("snapshot name"))
        ->type_name("SNAP");
    cmd->add_option("--format,--export-format", args->format, "Stream format: 1 or 2 (default)")
        ->check(CLI::Validator(
            [](std::string& value) -> std::string {
              return value == "1" || value == "2" ? std::string()
                                                  : "must be 1 or 2 (got " + value + ")";
            },
            "", "format"))
        ->type_name("1|2");
    cmd->add_flag("--overwrite", args->overwrite, "Replace an existing FILE");
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, &exit_code, &executor] {
      if (args->json && args->file == "-") {
        throw CLI::ValidationError("--json",
                                   "cannot be used with FILE - (stdout carries the stream)");
      }
      JobOptions options{args->json};
      options.uses_stdout = args->file == "-";
      exit_code = executor.RunOnPool(
          args->pool, options, [args](CommandContext& ctx) { return ExportDiff(ctx, *args); });
    });
  }
}

}  // namespace snapdisk::cli
