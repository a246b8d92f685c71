#include "bench/comparator/fio_workload.h"

#include <signal.h>
#include <sys/wait.h>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>
#include <thread>

namespace snapdisk {
namespace {

std::string_view Trim(std::string_view s) {
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front()))) s.remove_prefix(1);
  while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back()))) s.remove_suffix(1);
  return s;
}

std::string Lower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return out;
}

// The pieces of `text` between `separator`s ("a,b," is "a", "b", "").
std::vector<std::string_view> Split(std::string_view text, char separator) {
  std::vector<std::string_view> pieces;
  size_t pos = 0;
  while (pos < text.size()) {
    const size_t end = std::min(text.find(separator, pos), text.size());
    pieces.push_back(text.substr(pos, end - pos));
    pos = end + 1;
  }
  if (!text.empty() && text.back() == separator) pieces.emplace_back();
  return pieces;
}

std::string ReadFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// What MakeFioJob sets: the target, the run until stopped, the latency log.
constexpr std::string_view kSetByComparator[] = {
    "ioengine",       "filename",           "filename_format", "directory",
    "uri",            "runtime",            "time_based",      "write_hist_log",
    "log_hist_msec",  "log_hist_coarseness", "log_unix_epoch", "log_alternate_epoch"};
// What would end, hold back or serialize a job on its own, so that the
// phases would not all see it run.
constexpr std::string_view kStopsOrDelays[] = {"loops",     "number_ios", "io_size",    "io_limit",
                                               "stonewall", "wait_for",   "startdelay", "exitall"};

}  // namespace

Result<std::string> MakeFioJob(std::string_view user_job, const FioTarget& target) {
  bool has_job_section = false;
  int line_number = 0;
  for (const std::string_view raw : Split(user_job, '\n')) {
    const std::string_view line = Trim(raw);
    ++line_number;
    if (line.empty() || line.front() == '#' || line.front() == ';') continue;
    const std::string where = "line " + std::to_string(line_number) + " '" + std::string(line) + "'";
    if (line.front() == '[') {
      if (line.back() != ']' || line.size() < 3) {
        return Status::InvalidArgument("workload.fio: " + where + " is not a [section]");
      }
      if (Lower(line) != "[global]") has_job_section = true;
      continue;
    }
    if (line.front() == '$' || line.rfind("include", 0) == 0) {
      return Status::InvalidArgument("workload.fio: " + where +
                                     ": includes and $-directives are not taken (they could set "
                                     "options the comparator sets); write the options out");
    }
    const std::string key = Lower(Trim(line.substr(0, line.find('='))));
    if (key.empty() ||
        !std::all_of(key.begin(), key.end(), [](char c) { return std::isalnum(static_cast<unsigned char>(c)) || c == '_'; })) {
      return Status::InvalidArgument("workload.fio: " + where + " is not an option (key=value)");
    }
    if (std::find(std::begin(kSetByComparator), std::end(kSetByComparator), key) !=
        std::end(kSetByComparator)) {
      return Status::InvalidArgument(
          "workload.fio: " + where + " sets '" + key +
          "', which the comparator sets (the job runs against the experiment's volume over NBD, "
          "until the comparator stops it, logging latency histograms); remove it");
    }
    if (std::find(std::begin(kStopsOrDelays), std::end(kStopsOrDelays), key) !=
        std::end(kStopsOrDelays)) {
      return Status::InvalidArgument("workload.fio: " + where + " sets '" + key +
                                     "', which would end, delay or serialize a job on its own: the "
                                     "foreground must run through every phase; remove it");
    }
  }
  if (!has_job_section) {
    return Status::InvalidArgument("workload.fio: the job file has no job section ([name] with "
                                   "rw=, bs=, ...)");
  }
  std::string out;
  out += "# Written by snapdisk compare: the experiment's target, then the user's job.\n";
  out += "[global]\n";
  out += "ioengine=nbd\n";
  out += "uri=" + target.uri + "\n";
  out += "size=" + std::to_string(target.size_bytes) + "\n";
  out += "time_based=1\n";
  out += "runtime=86400\n";
  out += "write_hist_log=" + target.log_prefix + "\n";
  out += "log_hist_msec=" + std::to_string(target.interval_ms) + "\n";
  out += "log_unix_epoch=1\n";
  out += "\n";
  out += user_job;
  if (!out.empty() && out.back() != '\n') out += '\n';
  return out;
}

int64_t FioBinValueNs(uint32_t index) {
  constexpr uint32_t kBits = 6;
  constexpr uint32_t kVal = 1u << kBits;
  if (index < (kVal << 1)) return index;
  const uint32_t error_bits = (index >> kBits) - 1;
  const uint64_t base = uint64_t{1} << (error_bits + kBits);
  const uint32_t k = index % kVal;
  return static_cast<int64_t>(static_cast<double>(base) +
                              (k + 0.5) * static_cast<double>(uint64_t{1} << error_bits));
}

Status ParseFioHistLog(std::string_view text, const std::string& name, std::vector<FioInterval>& out) {
  int line_number = 0;
  for (const std::string_view line : Split(text, '\n')) {
    ++line_number;
    if (Trim(line).empty()) continue;
    auto bad = [&](const std::string& why) {
      return Status::Corruption(name + " line " + std::to_string(line_number) + ": " + why);
    };
    FioInterval interval;
    uint32_t field = 0;
    for (const std::string_view piece : Split(line, ',')) {
      const std::string_view token = Trim(piece);
      int64_t value = 0;
      const auto [ptr, ec] = std::from_chars(token.data(), token.data() + token.size(), value);
      if (ec != std::errc() || ptr != token.data() + token.size() || value < 0) {
        return bad("field " + std::to_string(field + 1) + " '" + std::string(token) +
                   "' is not a whole number >= 0");
      }
      if (field == 0) {
        interval.end_unix_ms = value;
      } else if (field >= 3) {
        const uint32_t bin = field - 3;
        if (bin >= kFioHistBins) return bad("more than " + std::to_string(kFioHistBins) + " bins");
        if (value > 0) interval.latency.RecordN(FioBinValueNs(bin), static_cast<uint64_t>(value));
      }
      ++field;
    }
    if (field != 3 + kFioHistBins) {
      return bad(std::to_string(field) + " fields, not " + std::to_string(3 + kFioHistBins) +
                 " (time, direction, block size, " + std::to_string(kFioHistBins) + " bins)");
    }
    out.push_back(std::move(interval));
  }
  return Status::OK();
}

// ---- The server and fio ------------------------------------------------------

std::string FioForeground::Tail(const std::string& path) const {
  std::string text = ReadFile(path);
  while (!text.empty() && (text.back() == '\n' || text.back() == '\r')) text.pop_back();
  if (text.size() > 600) text = "..." + text.substr(text.size() - 600);
  return text.empty() ? "(nothing on stderr)" : text;
}

Result<std::unique_ptr<FioForeground>> FioForeground::Start(const FioForegroundOptions& options) {
  if (options.snapdisk_binary.empty()) {
    return Status::InvalidArgument("a fio workload needs the snapdisk binary to serve the pool "
                                   "(CompareOptions::snapdisk_binary)");
  }
  std::unique_ptr<FioForeground> f(new FioForeground(options));
  // Unix socket paths are short (108 bytes): the socket lives in /tmp.
  char dir_template[] = "/tmp/snapdisk-fio-XXXXXX";
  if (::mkdtemp(dir_template) == nullptr) return Status::FromErrno(errno, "mkdtemp /tmp/snapdisk-fio-*");
  f->socket_dir_ = dir_template;
  const std::string socket = f->socket_dir_ + "/nbd.sock";
  const std::string server_log = options.work_dir + "/serve.log";
  SNAPDISK_ASSIGN_OR_RETURN(
      f->server_, ChildProcess::Start({options.snapdisk_binary, "serve", options.pool_path,
                                       "--socket", socket, "--policy-check", "0"},
                                      "", server_log));
  for (int i = 0;; ++i) {
    if (ReadFile(server_log).find("snapdisk: serving") != std::string::npos) break;
    if (!f->server_.Running()) {
      return Status::IOError("snapdisk serve " + options.pool_path + " did not start: " +
                             f->Tail(server_log));
    }
    if (i >= 3000) return Status::IOError("snapdisk serve did not get ready in 30 s: " + f->Tail(server_log));
    std::this_thread::sleep_for(std::chrono::milliseconds(10));
  }

  FioTarget target;
  target.uri = "nbd+unix:///" + options.volume + "?socket=" + socket;
  target.size_bytes = options.size_bytes;
  target.log_prefix = options.work_dir + "/fio";
  target.interval_ms = options.interval_ms;
  SNAPDISK_ASSIGN_OR_RETURN(std::string job, MakeFioJob(options.job_text, target));
  const std::string job_path = options.work_dir + "/job.fio";
  {
    std::ofstream out(job_path);
    out << job;
    if (!out) return Status::IOError("cannot write " + job_path);
  }
  SNAPDISK_ASSIGN_OR_RETURN(
      f->fio_, ChildProcess::Start({options.fio_binary, "--output=" + options.work_dir + "/fio.out", job_path},
                                   "", options.work_dir + "/fio.err"));
  return f;
}

FioForeground::~FioForeground() {
  // Killed (if still running) before their socket's folder goes.
  fio_ = ChildProcess();
  server_ = ChildProcess();
  if (!socket_dir_.empty()) {
    std::error_code ec;
    std::filesystem::remove_all(socket_dir_, ec);
  }
}

std::string FioForeground::FioOutput() const { return ReadFile(options_.work_dir + "/fio.out"); }

Status FioForeground::Check() {
  if (!server_.Running()) {
    return Status::IOError("snapdisk serve stopped during the experiment: " +
                           Tail(options_.work_dir + "/serve.log"));
  }
  if (!fio_.Running()) {
    return Status::IOError("fio stopped on its own during the experiment: " +
                           Tail(options_.work_dir + "/fio.err") + " (" + options_.work_dir +
                           "/fio.out has its report)");
  }
  return Status::OK();
}

Result<std::vector<FioInterval>> FioForeground::Stop() {
  Status status = Check();
  fio_.Signal(SIGINT);
  Result<int> fio_exit = fio_.Wait(30'000);
  server_.Signal(SIGTERM);
  Result<int> server_exit = server_.Wait(60'000);
  SNAPDISK_RETURN_IF_ERROR(status);
  if (!fio_exit.ok()) return fio_exit.status().WithContext("stopping fio");
  if (!server_exit.ok()) return server_exit.status().WithContext("stopping snapdisk serve");
  if (!WIFEXITED(*server_exit) || WEXITSTATUS(*server_exit) != 0) {
    return Status::IOError("snapdisk serve " + DescribeWaitStatus(*server_exit) + " when stopped: " +
                           Tail(options_.work_dir + "/serve.log"));
  }
  // fio exits non-zero after SIGINT; its logs are what tells whether it ran.
  std::vector<FioInterval> intervals;
  std::error_code ec;
  for (const auto& entry : std::filesystem::directory_iterator(options_.work_dir, ec)) {
    const std::string file = entry.path().filename().string();
    if (file.rfind("fio_clat_hist.", 0) != 0) continue;
    SNAPDISK_RETURN_IF_ERROR(ParseFioHistLog(ReadFile(entry.path().string()), file, intervals));
  }
  if (intervals.empty()) {
    return Status::IOError("fio logged no latencies (" + DescribeWaitStatus(*fio_exit) +
                           "): " + Tail(options_.work_dir + "/fio.err"));
  }
  std::sort(intervals.begin(), intervals.end(),
            [](const FioInterval& a, const FioInterval& b) { return a.end_unix_ms < b.end_unix_ms; });
  return intervals;
}

Result<ServedBackup> RunServedBackup(const FioForeground& foreground, const std::string& store,
                                     std::string_view method, double rate_mb_per_s,
                                     const std::function<bool()>& keep_going) {
  const FioForegroundOptions& o = foreground.options();
  std::vector<std::string> argv = {o.snapdisk_binary, "backup", o.pool_path, o.volume,
                                   "--store", store, "--method", std::string(method), "--json"};
  if (rate_mb_per_s > 0) {
    std::ostringstream rate;
    rate << rate_mb_per_s;
    argv.push_back("--rate");
    argv.push_back(rate.str());
  }
  const std::string out_path = o.work_dir + "/backup.json";
  const std::string err_path = o.work_dir + "/backup.err";
  std::error_code ec;
  std::filesystem::remove(out_path, ec);
  std::filesystem::remove(err_path, ec);
  SNAPDISK_ASSIGN_OR_RETURN(ChildProcess child, ChildProcess::Start(argv, out_path, err_path));
  for (;;) {
    Result<int> done = child.Wait(20);
    if (done.ok()) break;
    if (!keep_going()) {
      child.Signal(SIGINT);
      (void)child.Wait(30'000);
      return Status::Cancelled("cancelled");
    }
  }
  SNAPDISK_ASSIGN_OR_RETURN(int status, child.Wait(0));
  const std::string err = ReadFile(err_path);
  // Ctrl-C on the terminal reaches the command too: that is a cancel.
  if (!keep_going()) return Status::Cancelled("cancelled");
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    const std::string message = "snapdisk backup --method " + std::string(method) + " through the server " +
                                DescribeWaitStatus(status) + ": " + std::string(Trim(err));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 3 && err.find("nothing to ship") != std::string::npos) {
      return Status::NotFound(message);
    }
    return Status::IOError(message);
  }
  try {
    const nlohmann::json j = nlohmann::json::parse(ReadFile(out_path));
    ServedBackup b;
    b.id = j.at("id").get<std::string>();
    b.started_unix_ns = j.at("started_unix_ns").get<int64_t>();
    b.finished_unix_ns = j.at("finished_unix_ns").get<int64_t>();
    b.data_bytes = j.at("data_bytes").get<uint64_t>();
    b.stored_bytes = j.at("stored_bytes").get<uint64_t>();
    return b;
  } catch (const nlohmann::json::exception& e) {
    return Status::Corruption("snapdisk backup --json printed what the comparator cannot read (" +
                              std::string(e.what()) + "): " + out_path);
  }
}

}  // namespace snapdisk
