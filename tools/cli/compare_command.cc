// `snapdisk compare`: the comparator (bench/comparator/compare.h) — every
// backup method against the same workload, the restores against data size,
// the RPO of each log frequency — written as report.json, timeline.csv and
// report.html into --out, and a table on the terminal.
#include <fcntl.h>
#include <sys/file.h>

#include <chrono>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>

#include "bench/comparator/compare.h"
#include "bench/comparator/compare_report.h"
#include "bench/comparator/scenario.h"
#include "disk/unique_fd.h"
#include "tools/cli/commands.h"
#include "tools/cli/exit_codes.h"

namespace snapdisk::cli {
namespace {

struct CompareArgs {
  std::string scenario;
  std::string out;
  bool quick = false;
  std::optional<uint64_t> seed;
  bool json = false;
};

std::string DefaultOutDir() {
  const std::time_t now = std::time(nullptr);
  std::tm tm{};
  gmtime_r(&now, &tm);
  char buf[64];
  std::strftime(buf, sizeof buf, "snapdisk-report-%Y%m%d-%H%M%S", &tm);
  return buf;
}

int RunCompare(CommandContext& ctx, const CompareArgs& args) {
  Scenario scenario = args.quick ? Scenario::Quick() : Scenario();
  if (!args.scenario.empty()) {
    const std::string path = ctx.ResolvePath(args.scenario);
    std::ifstream f(path);
    if (!f) return ctx.Fail(Status::NotFound("cannot read the scenario file " + path));
    std::stringstream text;
    text << f.rdbuf();
    auto parsed = ParseScenario(text.str(), scenario);
    if (!parsed.ok()) return ctx.Fail(parsed.status().WithContext(path + ": no report written"));
    scenario = *parsed;
    // A fio job named relative to the scenario file is found beside it.
    if (!scenario.fio_job.empty() && scenario.fio_job.front() != '/') {
      scenario.fio_job = (std::filesystem::path(path).parent_path() / scenario.fio_job).lexically_normal().string();
    }
  }
  if (args.seed) scenario.seed = *args.seed;
  const std::string out = ctx.ResolvePath(args.out.empty() ? DefaultOutDir() : args.out);
  std::error_code ec;
  if (std::filesystem::exists(out + "/report.json", ec)) {
    return ctx.Fail(Status::AlreadyExists(out + " already holds a report; choose another --out"));
  }
  // One run per directory: a second one would remove the first's scratch
  // pools from under it.
  std::filesystem::create_directories(out, ec);
  if (ec) return ctx.Fail(Status::IOError("cannot make " + out + ": " + ec.message()));
  const std::string lock_path = out + "/.compare.lock";
  UniqueFd lock(::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644));
  if (!lock.valid() || ::flock(lock.get(), LOCK_EX | LOCK_NB) != 0) {
    return ctx.Fail(Status::Busy("another snapdisk compare is writing to " + out));
  }
  CompareOptions options;
  options.scratch_dir = out + "/scratch";
  std::error_code self_ec;
  options.snapdisk_binary = std::filesystem::read_symlink("/proc/self/exe", self_ec).string();
  // The line: the stage, seconds so far of the seconds the whole run should
  // take at its pace so far, and the ETA.
  const auto started = std::chrono::steady_clock::now();
  options.progress = [&ctx, started](const std::string& stage, double fraction, double eta_s) {
    const double elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - started).count();
    const double total = fraction > 0.01 ? elapsed + eta_s : 0;  // unknown at first
    ctx.out().Progress(stage, static_cast<uint64_t>(elapsed), static_cast<uint64_t>(total),
                       ProgressUnit::kSeconds);
    return !ctx.out().Cancelled();
  };
  auto report = RunComparison(scenario, options);
  ctx.out().ProgressEnd();
  std::filesystem::remove_all(options.scratch_dir, ec);
  std::filesystem::remove(lock_path, ec);
  if (!report.ok()) {
    // Nothing half-made is left: the directory goes if the run made it empty.
    std::filesystem::remove(out, ec);
    if (report.status().IsCancelled()) {
      return ctx.Fail(Status::Cancelled("compare interrupted: no report written, scratch pools removed"));
    }
    return ctx.Fail(report.status());
  }
  if (Status s = WriteReport(*report, out); !s.ok()) return ctx.Fail(s);
  if (ctx.json()) {
    ctx.Print(ReportJson(*report).dump(2) + "\n");
  } else {
    ctx.Print(ReportText(*report));
    ctx.Print("\nreport: " + out + "/report.html (also report.json, timeline.csv)\n");
  }
  return kExitOk;
}

}  // namespace

void AddCompareCommand(CLI::App& app, int& exit_code, Executor& executor) {
  auto args = std::make_shared<CompareArgs>();
  CLI::App* cmd = app.add_subcommand(
      "compare",
      "Measure what each backup method costs a workload and how fast each restore\n"
      "brings the disk back, side by side, on scratch pools (nothing of yours is read\n"
      "or changed). For each method — snapshot, snapshot-next, full, diff, incr, log,\n"
      "full-throttled, full-adaptive — an open-loop workload runs before, during and\n"
      "after the backup on an identical volume; then instant and copy restores of each\n"
      "size in `written`, and the RPO of 5m/30m/data log backups on a simulated clock\n"
      "with disk failures. Writes report.json, timeline.csv and report.html to --out.\n"
      "\n"
      "Scenario file (JSON, every key optional; an unknown key or bad value: exit 2):\n"
      "  profile          PL0..PL3 or unlimited (default PL1)\n"
      "  volume_size      nominal size that sets the QoS (default 100G)\n"
      "  written          sizes for the restore sweep; the first is the backups'\n"
      "                   data (default [\"256M\", \"1G\", \"2G\"]; --quick 64M, 256M)\n"
      "  foreground       {iops 3000, read_pct 50, block_size \"8K\",\n"
      "                    seconds_before 4, seconds_after 4}\n"
      "  methods          the backups to compare (default all eight)\n"
      "  rate             full-throttled's cap, MB/s (default 40)\n"
      "  p99_target       full-adaptive's p99 target, us (0: 1.15x the baseline)\n"
      "  log_frequencies  [\"5m\", \"30m\", \"data\"]\n"
      "  rpo_hours        simulated hours per RPO run (default 72; --quick 24)\n"
      "  rpo_failures     disk failures per RPO run (default 4; --quick 3)\n"
      "  seed             the workload's, the data's and the failures' seed (1)\n"
      "  store            where the backups' sets go: \"memory\" (default: the\n"
      "                   store's kernel work stays out of the disk's latency, as\n"
      "                   OSS is other machines) or \"directory\" (this file\n"
      "                   system, fsync per object; always with workload.fio)\n"
      "  workload         {\"fio\": FILE}: the backups' foreground is this fio job\n"
      "                   (path relative to the scenario file), run over NBD against\n"
      "                   the volume by a `snapdisk serve` child; the backup goes\n"
      "                   through the server. The job sets rw, bs, iodepth, rate_iops,\n"
      "                   size...; the comparator sets ioengine, uri, runtime and the\n"
      "                   latency log (a job setting them is refused). Figures are\n"
      "                   fio's clat. Leaves out full-adaptive (fio's latencies come\n"
      "                   only at its end); the restore sweep keeps the built-in reads.\n"
      "                   fio's own report of each backup goes to OUT/fio-METHOD.txt\n"
      "\n"
      "The default run takes about 5 minutes on 2 cores; --quick about a minute.");
  cmd->add_option("--scenario", args->scenario, "The scenario file (JSON, see above)")
      ->type_name("FILE");
  cmd->add_option("--out", args->out,
                  "Directory for the report (default ./snapdisk-report-<UTC time>); scratch\n"
                  "pools go in OUT/scratch while it runs")
      ->type_name("DIR");
  cmd->add_flag("--quick", args->quick, "A smaller run: at most a minute");
  cmd->add_option("--seed", args->seed, "Overrides the scenario's seed")->type_name("N");
  cmd->add_flag("--json", args->json, "Print report.json on stdout instead of the table");
  cmd->callback([args, &exit_code, &executor] {
    exit_code = executor.RunWithoutPool("", {args->json},
                                        [args](CommandContext& ctx) { return RunCompare(ctx, *args); });
  });
}

}  // namespace snapdisk::cli
