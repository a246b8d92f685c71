// `snapdisk experiment`: the disk experiment. Drives a sparse FileDevice
// through each ESSD profile's QoS limiter with 4 KiB random writes at QD32,
// and through PL0/PL1 with 1 MiB writes, and prints measured IOPS, throughput
// and latency next to the figures Alibaba's formulas give.
#include <unistd.h>

#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "disk/essd_profile.h"
#include "disk/file_device.h"
#include "disk/throttled_device.h"
#include "tools/cli/commands.h"
#include "tools/cli/exit_codes.h"

namespace snapdisk::cli {
namespace {

struct Case {
  EssdLevel level;
  uint64_t capacity_gib;
  uint64_t io_bytes;
};

struct Options {
  std::string dir;
  double seconds = 2;
  bool json = false;
};

int RunExperiment(const Options& opt) {
  const std::vector<Case> cases = {
      {EssdLevel::kPL0, 40, 4096},      {EssdLevel::kPL1, 100, 4096},
      {EssdLevel::kPL2, 500, 4096},     {EssdLevel::kPL3, 1300, 4096},
      {EssdLevel::kUnlimited, 0, 4096}, {EssdLevel::kPL0, 40, 1 << 20},
      {EssdLevel::kPL1, 100, 1 << 20},
  };
  std::string dir = opt.dir;
  if (dir.empty())
    dir = std::filesystem::temp_directory_path() /
          ("snapdisk-experiment-" + std::to_string(getpid()));
  std::error_code ec;
  std::filesystem::create_directories(dir, ec);
  const std::string path = dir + "/disk.img";
  std::filesystem::remove(path, ec);
  auto file = FileDevice::Create(path, uint64_t{4} << 30);
  if (!file.ok()) {
    std::fprintf(stderr, "snapdisk: experiment: %s\n", file.status().ToString().c_str());
    return ExitCodeFor(file.status());
  }
  nlohmann::json results = nlohmann::json::array();
  if (!opt.json) {
    std::printf(
        "snapdisk disk experiment: 4 KiB random writes (1 MiB for the throughput rows), QD32,\n"
        "%.1f s per row, through each ESSD profile's QoS limiter onto a sparse file (%s)%s\n\n",
        opt.seconds, path.c_str(), (*file)->uses_io_uring() ? ", io_uring" : ", pread/pwrite");
    std::printf("%-9s %8s %7s | %10s %10s %6s | %9s %9s %6s | %9s %9s\n", "profile", "capacity",
                "io", "IOPS want", "IOPS got", "ratio", "MB/s want", "MB/s got", "ratio", "p50 ms",
                "p99 ms");
  }
  for (const Case& c : cases) {
    EssdProfile profile = EssdProfile::Unlimited();
    if (c.level != EssdLevel::kUnlimited) {
      auto p = EssdProfile::For(c.level, c.capacity_gib * kBytesPerGiB);
      if (!p.ok()) return ExitCodeFor(p.status());
      profile = *p;
    }
    ThrottledDevice device(**file, profile);
    auto m = MeasureThroughput(device, IoOp::kWrite, c.io_bytes, 32,
                               static_cast<int64_t>(opt.seconds * 1e9), 42);
    if (!m.ok()) {
      std::fprintf(stderr, "snapdisk: experiment: %s\n", m.status().ToString().c_str());
      return ExitCodeFor(m.status());
    }
    const double want_iops = static_cast<double>(profile.iops_max);
    const double want_mbps = profile.throughput_bytes_per_s / 1e6;
    // Which limit binds: the one the measured rate is closest to.
    const double iops_ratio = want_iops > 0 ? m->iops / want_iops : 0;
    const double mbps_ratio = want_mbps > 0 ? m->bytes_per_s / 1e6 / want_mbps : 0;
    results.push_back({{"profile", EssdLevelName(c.level)},
                       {"capacity_gib", c.capacity_gib},
                       {"io_bytes", c.io_bytes},
                       {"seconds", m->elapsed_ns / 1e9},
                       {"iops_formula", profile.iops_max},
                       {"iops_measured", m->iops},
                       {"throughput_mbps_formula", want_mbps},
                       {"throughput_mbps_measured", m->bytes_per_s / 1e6},
                       {"latency_us_p50", m->latency_us_p50},
                       {"latency_us_p99", m->latency_us_p99}});
    if (!opt.json) {
      auto ratio = [](double r) {
        return r > 0 ? std::to_string(r).substr(0, 5) : std::string("-");
      };
      std::printf("%-9s %8s %7s | %10s %10.0f %6s | %9s %9.1f %6s | %9.3f %9.3f\n",
                  EssdLevelName(c.level),
                  c.capacity_gib ? (std::to_string(c.capacity_gib) + "G").c_str() : "-",
                  c.io_bytes == 4096 ? "4K" : "1M",
                  want_iops > 0 ? std::to_string(profile.iops_max).c_str() : "-", m->iops,
                  ratio(iops_ratio).c_str(),
                  want_mbps > 0 ? std::to_string(static_cast<int>(want_mbps)).c_str() : "-",
                  m->bytes_per_s / 1e6, ratio(mbps_ratio).c_str(), m->latency_us_p50 / 1000,
                  m->latency_us_p99 / 1000);
      std::fflush(stdout);
    }
  }
  file->reset();
  std::filesystem::remove(path, ec);
  if (opt.dir.empty()) std::filesystem::remove(dir, ec);
  if (opt.json) {
    std::printf("%s\n", results.dump(2).c_str());
  } else {
    std::printf(
        "\nA row is on target when the binding limit's ratio is near 1.00 (4K rows: IOPS;\n"
        "1M rows: MB/s). Latency at QD32 is mostly queueing behind the limit.\n");
  }
  return kExitOk;
}

}  // namespace

void AddExperimentCommand(CLI::App& app, int& exit_code) {
  auto opt = std::make_shared<Options>();
  CLI::App* cmd = app.add_subcommand("experiment",
                                     "Measure the simulated ESSD disk: each profile's IOPS, "
                                     "throughput and latency on a sparse file");
  cmd->add_option("--dir", opt->dir,
                  "Directory for the scratch file (default: the system temp dir)");
  cmd->add_option("--seconds", opt->seconds, "Seconds per row")->check(CLI::Range(0.1, 600.0));
  cmd->add_flag("--json", opt->json, "Print the results as JSON");
  cmd->callback([opt, &exit_code] { exit_code = RunExperiment(*opt); });
}

}  // namespace snapdisk::cli
