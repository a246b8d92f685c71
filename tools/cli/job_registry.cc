#include "tools/cli/job_registry.h"

#include <chrono>

namespace snapdisk::cli {

JobRegistry& JobRegistry::Instance() {
  static JobRegistry registry;
  return registry;
}

uint64_t JobRegistry::Add(std::string command, std::function<std::string()> id,
                          std::function<StepProgress()> progress, std::function<void()> cancel) {
  const uint64_t number = next_number_++;
  jobs_[number] = Entry{std::move(command), std::chrono::duration_cast<std::chrono::nanoseconds>(
                                     std::chrono::system_clock::now().time_since_epoch())
                                     .count(), std::move(id), std::move(progress),
                        std::move(cancel), false};
  return number;
}

void JobRegistry::Remove(uint64_t number) { jobs_.erase(number); }

std::vector<RunningJob> JobRegistry::List() const {
  std::vector<RunningJob> out;
  for (const auto& [number, e] : jobs_) {
    RunningJob job;
    job.number = number;
    job.id = e.id ? e.id() : "";
    job.command = e.command;
    job.started_unix_ns = e.started_unix_ns;
    if (e.progress) job.progress = e.progress();
    job.cancel_requested = e.cancel_requested;
    out.push_back(std::move(job));
  }
  return out;
}

Status JobRegistry::Cancel(const std::string& which) {
  for (auto& [number, e] : jobs_) {
    if (which != std::to_string(number) && (which.empty() || !e.id || e.id() != which)) continue;
    if (!e.cancel_requested) {
      e.cancel_requested = true;
      e.cancel();
    }
    return Status::OK();
  }
  std::string running;
  for (const auto& [number, e] : jobs_) {
    running += (running.empty() ? "" : ", ") + std::to_string(number);
    if (e.id) running += " (" + e.id() + ")";
  }
  return Status::NotFound("no running job '" + which + "'" +
                          (running.empty() ? "; none is running" : "; running: " + running));
}

}  // namespace snapdisk::cli
