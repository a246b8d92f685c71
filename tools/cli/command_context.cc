#include "tools/cli/command_context.h"

#include <ctime>

#include "tools/cli/exit_codes.h"
#include "tools/cli/progress.h"

namespace snapdisk::cli {

const char* ProgressUnitName(ProgressUnit unit) {
  switch (unit) {
    case ProgressUnit::kBytes:
      return "bytes";
    case ProgressUnit::kBlocks:
      return "blocks";
    case ProgressUnit::kHours:
      return "hours";
    case ProgressUnit::kSeconds:
      return "seconds";
  }
  return "bytes";
}

ProgressUnit ParseProgressUnit(std::string_view name) {
  if (name == "blocks") return ProgressUnit::kBlocks;
  if (name == "hours") return ProgressUnit::kHours;
  if (name == "seconds") return ProgressUnit::kSeconds;
  return ProgressUnit::kBytes;
}

std::string CommandContext::ResolvePath(const std::string& path) const {
  if (path.empty() || path[0] == '/' || cwd_.empty()) return path;
  return cwd_ + "/" + path;
}

std::string ErrorMessage(const Status& status, const std::string& pool_path) {
  std::string msg = status.message();
  if (msg.empty()) msg = status.ToString();
  for (char& c : msg) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  static constexpr std::string_view kMissing = "does not exist";
  const bool catalog_object = msg.rfind("volume '", 0) == 0 || msg.rfind("snapshot '", 0) == 0;
  if (status.IsNotFound() && catalog_object && !pool_path.empty() &&
      msg.size() >= kMissing.size() &&
      msg.compare(msg.size() - kMissing.size(), kMissing.size(), kMissing) == 0) {
    msg += " in pool " + pool_path;
  }
  return msg;
}

nlohmann::ordered_json ErrorJson(const Status& status, const std::string& message) {
  return {{"error",
           {{"code", StatusCodeName(status.code())},
            {"message", message},
            {"exit_code", ExitCodeFor(status)}}}};
}

int CommandContext::Fail(const Status& status) const {
  const std::string msg = ErrorMessage(status, pool_path_);
  out_.ProgressEnd();
  out_.Stderr("snapdisk: " + msg + "\n");
  if (json_) PrintJson(ErrorJson(status, msg));
  return ExitCodeFor(status);
}

void CommandContext::PrintJson(const nlohmann::ordered_json& doc) const {
  out_.Stdout(doc.dump(2, ' ', false, nlohmann::ordered_json::error_handler_t::replace) + "\n");
}

int CommandContext::RunSteps(SteppedJob job) {
  SNAPDISK_CHECK(pool_ != nullptr, "RunSteps without a pool");
  SNAPDISK_CHECK(job.step && job.cancel && job.finish, "SteppedJob without step/cancel/finish");
  if (step_runner_ != nullptr) return step_runner_->RunSteps(*this, std::move(job));
  return RunStepsHere(*this, job);
}

void WaitForPoolWork(Pool& pool, int64_t idle_ns) {
  if (pool.in_flight() > 0) {
    (void)pool.Poll(1);
    return;
  }
  const timespec ts{0, static_cast<long>(idle_ns)};
  ::nanosleep(&ts, nullptr);
}

int RunStepsHere(CommandContext& ctx, SteppedJob& job) {
  Output& out = ctx.out();
  bool cancelled = false;
  int64_t last_progress_ns = 0;
  for (;;) {
    if (job.answer_early) {
      if (std::optional<int> code = job.answer_early(ctx)) {
        // Nothing runs the job on here: it stops where it is (see SteppedJob).
        job.cancel();
        while (!job.step()) WaitForPoolWork(ctx.pool());
        out.ProgressEnd();
        return *code;
      }
    }
    if (job.step()) break;
    if (!cancelled && out.Cancelled()) {
      cancelled = true;
      job.cancel();
    }
    if (job.progress) {
      const int64_t now = MonotonicNs();
      if (now - last_progress_ns >= 100'000'000) {
        last_progress_ns = now;
        const StepProgress p = job.progress();
        out.Progress(p.label, p.done, p.total, p.unit);
      }
    }
    WaitForPoolWork(ctx.pool());
  }
  if (job.progress) {
    const StepProgress p = job.progress();
    out.Progress(p.label, p.done, p.total, p.unit);
  }
  out.ProgressEnd();
  return job.finish(ctx);
}

void CommandContext::Note(std::string_view text) const {
  out_.Stderr("snapdisk: " + std::string(text) + "\n");
}

}  // namespace snapdisk::cli
