// Test support for the CLI tests (tests/cli_*_test.cc), header-only: run the
// real `snapdisk` binary ($SNAPDISK_BIN) and capture its exit code, stdout
// and stderr; fingerprint a pool file's contents. Not part of the tool.
#pragma once

#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

extern char** environ;

namespace snapdisk::cli::testing {

struct CliResult {
  int exit_code = -1;  // 128 + signal when killed
  std::string out;
  std::string err;
  // The stderr lines (without their '\n').
  std::vector<std::string> ErrLines() const {
    std::vector<std::string> lines;
    size_t start = 0;
    while (start < err.size()) {
      size_t nl = err.find('\n', start);
      if (nl == std::string::npos) nl = err.size();
      lines.push_back(err.substr(start, nl - start));
      start = nl + 1;
    }
    return lines;
  }
};

struct CliOptions {
  std::string stdin_path = "/dev/null";  // file to read stdin from
  bool stdin_is_pipe = false;            // stdin is a pipe fed with stdin_data instead
  std::string stdin_data;
  std::string stdout_path;  // when set, stdout goes to this file (not captured)
  std::string cwd;          // working directory (default: the test's)
  int timeout_s = 60;
};

// $SNAPDISK_BIN as an absolute path (tests may run it in another directory).
// Without it, the binary of the same build tree: TESTDIR/../tools/snapdisk.
inline std::string SnapdiskBin() {
  const char* bin = std::getenv("SNAPDISK_BIN");
  if (bin == nullptr || bin[0] == '\0') {
    char self[4096];
    const ssize_t n = ::readlink("/proc/self/exe", self, sizeof self - 1);
    if (n <= 0) return "snapdisk";
    std::string path(self, static_cast<size_t>(n));
    path = path.substr(0, path.rfind('/')) + "/../tools/snapdisk";
    return ::access(path.c_str(), X_OK) == 0 ? path : "snapdisk";
  }
  if (bin[0] == '/') return bin;
  char cwd[4096];
  return ::getcwd(cwd, sizeof cwd) ? std::string(cwd) + "/" + bin : std::string(bin);
}

// Runs `snapdisk args...` and waits for it.
inline CliResult RunCli(const std::vector<std::string>& args, const CliOptions& options = {}) {
  CliResult result;
  ::signal(SIGPIPE, SIG_IGN);  // a child that exits early must not kill the test
  int out_pipe[2], err_pipe[2], in_pipe[2] = {-1, -1};
  if (::pipe2(out_pipe, O_CLOEXEC) != 0 || ::pipe2(err_pipe, O_CLOEXEC) != 0 ||
      (options.stdin_is_pipe && ::pipe2(in_pipe, O_CLOEXEC) != 0)) {
    result.err = "pipe failed";
    return result;
  }
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  if (options.stdin_is_pipe) {
    posix_spawn_file_actions_adddup2(&actions, in_pipe[0], 0);
  } else {
    posix_spawn_file_actions_addopen(&actions, 0, options.stdin_path.c_str(), O_RDONLY, 0);
  }
  if (options.stdout_path.empty()) {
    posix_spawn_file_actions_adddup2(&actions, out_pipe[1], 1);
  } else {
    posix_spawn_file_actions_addopen(&actions, 1, options.stdout_path.c_str(),
                                     O_WRONLY | O_CREAT | O_TRUNC, 0644);
  }
  posix_spawn_file_actions_adddup2(&actions, err_pipe[1], 2);
  if (!options.cwd.empty()) posix_spawn_file_actions_addchdir_np(&actions, options.cwd.c_str());
  const std::string bin = SnapdiskBin();
  std::vector<char*> argv;
  argv.push_back(const_cast<char*>(bin.c_str()));
  for (const std::string& a : args) argv.push_back(const_cast<char*>(a.c_str()));
  argv.push_back(nullptr);
  pid_t pid = -1;
  const int rc = posix_spawn(&pid, bin.c_str(), &actions, nullptr, argv.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  ::close(out_pipe[1]);
  ::close(err_pipe[1]);
  if (in_pipe[0] >= 0) ::close(in_pipe[0]);
  if (rc != 0) {
    ::close(out_pipe[0]);
    ::close(err_pipe[0]);
    if (in_pipe[1] >= 0) ::close(in_pipe[1]);
    result.err = std::string("posix_spawn failed: ") + std::strerror(rc);
    return result;
  }
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(options.timeout_s);
  if (in_pipe[1] >= 0) ::fcntl(in_pipe[1], F_SETFL, O_NONBLOCK);
  pollfd fds[3] = {{out_pipe[0], POLLIN, 0}, {err_pipe[0], POLLIN, 0}, {in_pipe[1], POLLOUT, 0}};
  if (in_pipe[1] >= 0 && options.stdin_data.empty()) {
    ::close(in_pipe[1]);
    fds[2].fd = -1;
  }
  size_t written = 0;
  std::string* sinks[2] = {&result.out, &result.err};
  int open_count = 2;
  while (open_count > 0) {
    if (std::chrono::steady_clock::now() > deadline) {
      ::kill(pid, SIGKILL);
      break;
    }
    if (::poll(fds, 3, 1000) < 0 && errno != EINTR) break;
    if (fds[2].fd >= 0 && (fds[2].revents & (POLLOUT | POLLERR | POLLHUP))) {
      const ssize_t n = ::write(fds[2].fd, options.stdin_data.data() + written,
                                options.stdin_data.size() - written);
      if (n > 0) written += static_cast<size_t>(n);
      if ((n < 0 && errno != EAGAIN && errno != EINTR) || written == options.stdin_data.size()) {
        ::close(fds[2].fd);
        fds[2].fd = -1;
      }
    }
    for (int i = 0; i < 2; ++i) {
      if (fds[i].fd < 0 || !(fds[i].revents & (POLLIN | POLLHUP | POLLERR))) continue;
      char buf[65536];
      const ssize_t n = ::read(fds[i].fd, buf, sizeof buf);
      if (n > 0) {
        sinks[i]->append(buf, static_cast<size_t>(n));
      } else if (n == 0 || errno != EINTR) {
        ::close(fds[i].fd);
        fds[i].fd = -1;
        --open_count;
      }
    }
  }
  for (pollfd& p : fds) {
    if (p.fd >= 0) ::close(p.fd);
  }
  int status = 0;
  while (::waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
  return result;
}

// A fingerprint of a file's contents (FNV-1a over every non-zero 4 KiB block
// and its offset, plus the size): equal fingerprints mean equal bytes, however
// the file's holes are laid out. Reads only the data segments (SEEK_DATA).
inline std::string ContentFingerprint(const std::string& path) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return "missing";
  struct stat st;
  ::fstat(fd, &st);
  uint64_t h = 1469598103934665603ull;
  auto mix = [&h](const void* p, size_t n) {
    const auto* b = static_cast<const unsigned char*>(p);
    for (size_t i = 0; i < n; ++i) {
      h ^= b[i];
      h *= 1099511628211ull;
    }
  };
  std::vector<char> block(4096);
  const std::vector<char> zeros(4096, 0);
  off_t pos = 0;
  while (pos < st.st_size) {
    const off_t data = ::lseek(fd, pos, SEEK_DATA);
    if (data < 0) break;
    const off_t hole = ::lseek(fd, data, SEEK_HOLE);
    for (off_t at = data / 4096 * 4096; at < hole; at += 4096) {
      const ssize_t n = ::pread(fd, block.data(), block.size(), at);
      if (n <= 0) break;
      if (std::memcmp(block.data(), zeros.data(), static_cast<size_t>(n)) == 0) continue;
      mix(&at, sizeof at);
      mix(block.data(), static_cast<size_t>(n));
    }
    pos = hole;
  }
  ::close(fd);
  return std::to_string(st.st_size) + ":" + std::to_string(h);
}

}  // namespace snapdisk::cli::testing
