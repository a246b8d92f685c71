// Runs `snapdisk serve` as a child process for tests: SnapdiskBin() finds the
// binary, ServerProcess starts it with its stderr in a log file, waits for the
// ready line, and stops it (SIGTERM, then SIGKILL from the destructor).
#pragma once

#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace snapdisk::testing {

// $SNAPDISK_BIN, else the snapdisk binary of the build tree this test
// binary belongs to (BUILD/tests/x -> BUILD/tools/snapdisk).
inline std::string SnapdiskBin() {
  const char* bin = std::getenv("SNAPDISK_BIN");
  if (bin != nullptr && *bin != '\0') return bin;
  std::error_code ec;
  const auto exe = std::filesystem::read_symlink("/proc/self/exe", ec);
  if (ec) return "";
  const auto candidate = exe.parent_path().parent_path() / "tools" / "snapdisk";
  return std::filesystem::exists(candidate, ec) ? candidate.string() : "";
}

class ServerProcess {
 public:
  ServerProcess(const std::string& pool, const std::vector<std::string>& args,
                const std::string& log_path)
      : log_path_(log_path) {
    pid_ = ::fork();
    if (pid_ == 0) {
      const int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
      ::dup2(fd, 2);
      std::vector<std::string> argv = {SnapdiskBin(), "serve", pool};
      argv.insert(argv.end(), args.begin(), args.end());
      std::vector<char*> cargv;
      for (auto& a : argv) cargv.push_back(a.data());
      cargv.push_back(nullptr);
      ::execv(cargv[0], cargv.data());
      _exit(127);
    }
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      ::kill(pid_, SIGKILL);
      ::waitpid(pid_, nullptr, 0);
    }
  }
  std::string Log() const {
    std::ifstream in(log_path_);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
  }
  // Waits for the ready line (or the process exiting).
  bool WaitReady() {
    for (int i = 0; i < 1000; ++i) {
      if (Log().find("snapdisk: serving") != std::string::npos) return true;
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        exit_status_ = status;
        pid_ = -1;
        return false;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return false;
  }
  // Sends `sig` (0: none) and waits up to 30 s; the exit code, or -1.
  int Stop(int sig = SIGTERM) {
    if (pid_ <= 0) return WIFEXITED(exit_status_) ? WEXITSTATUS(exit_status_) : -1;
    if (sig != 0) ::kill(pid_, sig);
    for (int i = 0; i < 3000; ++i) {
      int status = 0;
      if (::waitpid(pid_, &status, WNOHANG) == pid_) {
        pid_ = -1;
        exit_status_ = status;
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
  }

 private:
  std::string log_path_;
  pid_t pid_ = -1;
  int exit_status_ = 0;
};

}  // namespace snapdisk::testing
