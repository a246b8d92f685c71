// The control socket: client (RunThroughServer), server
// (ServeControlConnection) and the listening socket. Protocol: control.h.
#include "tools/cli/control.h"

#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <climits>
#include <cstring>
#include <nlohmann/json.hpp>

#include "tools/cli/commands.h"
#include "tools/cli/exit_codes.h"
#include "tools/cli/job_registry.h"
#include "tools/cli/progress.h"

namespace snapdisk::cli {

namespace {

using json = nlohmann::ordered_json;

constexpr size_t kMaxRequestBytes = 1 << 20;
constexpr int kMaxPassedFds = 2;
constexpr int kRequestTimeoutS = 10;

std::string Dump(const json& j) { return j.dump(-1, ' ', false, json::error_handler_t::replace); }

// A sockaddr_un for `path`. Paths too long for sun_path go through
// /proc/self/fd/N/BASENAME, N an O_PATH descriptor of the directory.
class SocketAddress {
 public:
  SocketAddress() = default;
  ~SocketAddress() {
    if (dir_fd_ >= 0) ::close(dir_fd_);
  }
  SocketAddress(const SocketAddress&) = delete;
  SocketAddress& operator=(const SocketAddress&) = delete;

  Status Init(const std::string& path) {
    std::memset(&addr_, 0, sizeof addr_);
    addr_.sun_family = AF_UNIX;
    std::string target = path;
    if (target.size() >= sizeof addr_.sun_path) {
      const size_t slash = path.rfind('/');
      const std::string dir = slash == std::string::npos ? "." : path.substr(0, slash + 1);
      const std::string base = slash == std::string::npos ? path : path.substr(slash + 1);
      dir_fd_ = ::open(dir.c_str(), O_PATH | O_DIRECTORY | O_CLOEXEC);
      if (dir_fd_ < 0) return Status::FromErrno(errno, "open directory " + dir);
      target = "/proc/self/fd/" + std::to_string(dir_fd_) + "/" + base;
      if (target.size() >= sizeof addr_.sun_path) {
        return Status::InvalidArgument("control socket name is too long: " + path);
      }
    }
    std::memcpy(addr_.sun_path, target.c_str(), target.size() + 1);
    return Status::OK();
  }
  const sockaddr* addr() const { return reinterpret_cast<const sockaddr*>(&addr_); }
  socklen_t len() const { return sizeof addr_; }

 private:
  sockaddr_un addr_{};
  int dir_fd_ = -1;
};

// A connected socket, or -errno.
int Connect(const std::string& path) {
  SocketAddress addr;
  if (!addr.Init(path).ok()) return -ENAMETOOLONG;
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return -errno;
  while (::connect(fd, addr.addr(), addr.len()) != 0) {
    if (errno == EINTR) continue;
    const int err = errno;
    ::close(fd);
    return -err;
  }
  return fd;
}

bool SendAll(int fd, std::string_view data, int flags = 0) {
  while (!data.empty()) {
    const ssize_t n = ::send(fd, data.data(), data.size(), MSG_NOSIGNAL | flags);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    data.remove_prefix(static_cast<size_t>(n));
  }
  return true;
}

// Sends `data` with `fds` attached to its first byte (SCM_RIGHTS).
bool SendWithFds(int fd, std::string_view data, const std::vector<int>& fds) {
  if (fds.empty()) return SendAll(fd, data);
  alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * kMaxPassedFds)] = {};
  iovec iov{const_cast<char*>(data.data()), data.size()};
  msghdr msg{};
  msg.msg_iov = &iov;
  msg.msg_iovlen = 1;
  msg.msg_control = control;
  msg.msg_controllen = CMSG_SPACE(sizeof(int) * fds.size());
  cmsghdr* c = CMSG_FIRSTHDR(&msg);
  c->cmsg_level = SOL_SOCKET;
  c->cmsg_type = SCM_RIGHTS;
  c->cmsg_len = CMSG_LEN(sizeof(int) * fds.size());
  std::memcpy(CMSG_DATA(c), fds.data(), sizeof(int) * fds.size());
  ssize_t n;
  do {
    n = ::sendmsg(fd, &msg, MSG_NOSIGNAL);
  } while (n < 0 && errno == EINTR);
  if (n < 0) return false;
  return SendAll(fd, data.substr(static_cast<size_t>(n)));
}

// ---- Server ----------------------------------------------------------------

// Captures a command's stdout and stderr for the final reply; sends progress
// lines as they come (when asked, at most ten a second, never blocking).
class CaptureOutput : public Output {
 public:
  CaptureOutput(int fd, bool want_progress) : fd_(fd), want_progress_(want_progress) {}
  void Stdout(std::string_view text) override { out_ += text; }
  void Stderr(std::string_view text) override { err_ += text; }
  void Progress(std::string_view label, uint64_t done, uint64_t total, ProgressUnit unit) override {
    if (!want_progress_ || gone_ || detached_) return;
    const int64_t now = MonotonicNs();
    if (now - last_progress_ns_ < 100'000'000 && done < total) return;
    last_progress_ns_ = now;
    const json line = {{"progress",
                        {{"label", std::string(label)},
                         {"done", done},
                         {"total", total},
                         {"unit", ProgressUnitName(unit)}}}};
    const std::string text = Dump(line) + "\n";
    // A progress line is worth nothing late: drop it if the client is slow.
    const ssize_t n = ::send(fd_, text.data(), text.size(), MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR) gone_ = true;
    if (n >= 0 && static_cast<size_t>(n) < text.size()) {
      // Half a line went out: finish it so the stream stays parseable.
      if (!SendAll(fd_, std::string_view(text).substr(static_cast<size_t>(n)))) gone_ = true;
    }
  }
  void ProgressEnd() override {}
  // The command answered (SteppedJob::answer_early) and its socket is
  // closed: no more progress lines, and the client no longer cancels.
  void Detach() { detached_ = true; }
  bool Cancelled() override {
    if (detached_) return false;
    if (gone_) return true;
    const int64_t now = MonotonicNs();
    if (now - last_check_ns_ < 50'000'000) return false;
    last_check_ns_ = now;
    pollfd p{fd_, POLLRDHUP, 0};
    if (::poll(&p, 1, 0) > 0 && (p.revents & (POLLRDHUP | POLLHUP | POLLERR))) gone_ = true;
    return gone_;
  }

  const std::string& out() const { return out_; }
  const std::string& err() const { return err_; }

 private:
  const int fd_;
  const bool want_progress_;
  bool gone_ = false;
  bool detached_ = false;
  int64_t last_progress_ns_ = 0;
  int64_t last_check_ns_ = 0;
  std::string out_;
  std::string err_;
};

// Runs jobs against the pool the server holds; stepped jobs go to `runner`.
class ServerExecutor : public Executor {
 public:
  ServerExecutor(Pool& pool, const std::string& served_path, Output& out, std::string cwd,
                 int stdin_fd, int stdout_fd, StepRunner& runner)
      : pool_(pool),
        served_path_(served_path),
        out_(out),
        cwd_(std::move(cwd)),
        stdin_fd_(stdin_fd),
        stdout_fd_(stdout_fd),
        runner_(runner) {}

  int RunOnPool(const std::string& pool_path, const JobOptions& options,
                const PoolJob& job) override {
    CommandContext ctx(out_, pool_path, options.json);
    ctx.set_cwd(cwd_);
    ctx.set_std_fds(stdin_fd_, stdout_fd_);
    struct stat mine, theirs;
    if (::stat(served_path_.c_str(), &mine) != 0 ||
        ::stat(ctx.ResolvePath(pool_path).c_str(), &theirs) != 0 || mine.st_dev != theirs.st_dev ||
        mine.st_ino != theirs.st_ino) {
      return ctx.Fail(Status::InvalidArgument("this control socket serves pool " + served_path_ +
                                              ", not " + pool_path));
    }
    if ((options.uses_stdin && stdin_fd_ < 0) || (options.uses_stdout && stdout_fd_ < 0)) {
      return ctx.Fail(Status::InvalidArgument(
          "the request did not pass the stdin/stdout descriptor that '-' needs"));
    }
    ctx.set_pool(&pool_);
    ctx.set_step_runner(&runner_);
    return job(ctx);
  }

  int RunWithoutPool(const std::string& pool_path, const JobOptions& options,
                     const PoolJob&) override {
    CommandContext ctx(out_, pool_path, options.json);
    return ctx.Fail(Status::InvalidArgument("this command does not run through a pool's server"));
  }

 private:
  Pool& pool_;
  const std::string& served_path_;
  Output& out_;
  const std::string cwd_;
  const int stdin_fd_;
  const int stdout_fd_;
  StepRunner& runner_;
};

// Reads the request line and the descriptors passed with it.
Status ReadRequest(int fd, std::string* line, std::vector<int>* fds) {
  timeval tv{kRequestTimeoutS, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  std::string buf;
  char chunk[16384];
  for (;;) {
    alignas(cmsghdr) char control[CMSG_SPACE(sizeof(int) * 8)];
    iovec iov{chunk, sizeof chunk};
    msghdr msg{};
    msg.msg_iov = &iov;
    msg.msg_iovlen = 1;
    msg.msg_control = control;
    msg.msg_controllen = sizeof control;
    const ssize_t n = ::recvmsg(fd, &msg, MSG_CMSG_CLOEXEC);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == EAGAIN || errno == EWOULDBLOCK) {
        return Status::InvalidArgument("no complete request within " +
                                       std::to_string(kRequestTimeoutS) + " s");
      }
      return Status::FromErrno(errno, "read control request");
    }
    for (cmsghdr* c = CMSG_FIRSTHDR(&msg); c != nullptr; c = CMSG_NXTHDR(&msg, c)) {
      if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS) continue;
      const size_t count = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
      for (size_t i = 0; i < count; ++i) {
        int passed;
        std::memcpy(&passed, CMSG_DATA(c) + i * sizeof(int), sizeof passed);
        fds->push_back(passed);
      }
    }
    if (n == 0) return Status::InvalidArgument("the client closed before sending a request");
    buf.append(chunk, static_cast<size_t>(n));
    const size_t nl = buf.find('\n');
    if (nl != std::string::npos) {
      *line = buf.substr(0, nl);
      break;
    }
    if (buf.size() > kMaxRequestBytes) return Status::InvalidArgument("request is too large");
  }
  tv = {0, 0};
  ::setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  return Status::OK();
}

Status CheckPeer(int fd) {
  ucred cred{};
  socklen_t len = sizeof cred;
  if (::getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) != 0) {
    return Status::FromErrno(errno, "SO_PEERCRED");
  }
  if (cred.uid != 0 && cred.uid != ::geteuid()) {
    return Status::IOError("permission denied: the server of this pool runs as uid " +
                           std::to_string(::geteuid()) +
                           " and takes commands only from it or "
                           "root, not uid " +
                           std::to_string(cred.uid));
  }
  return Status::OK();
}

}  // namespace

std::string ControlSocketPath(const std::string& pool_path) { return pool_path + ".ctl"; }

Result<int> ListenControlSocket(const std::string& pool_path) {
  const std::string path = ControlSocketPath(pool_path);
  struct stat st;
  if (::lstat(path.c_str(), &st) == 0) {
    if (!S_ISSOCK(st.st_mode)) return Status::AlreadyExists(path + " exists and is not a socket");
    const int fd = Connect(path);
    if (fd >= 0) {
      ::close(fd);
      return Status::Busy("a server already listens on " + path);
    }
    ::unlink(path.c_str());  // stale: its server is gone
  }
  SocketAddress addr;
  SNAPDISK_RETURN_IF_ERROR(addr.Init(path));
  const int fd = ::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd < 0) return Status::FromErrno(errno, "socket");
  if (::bind(fd, addr.addr(), addr.len()) != 0 || ::listen(fd, 16) != 0) {
    const int err = errno;
    ::close(fd);
    return Status::FromErrno(err, "listen on " + path);
  }
  return fd;
}

void RemoveControlSocket(const std::string& pool_path) {
  ::unlink(ControlSocketPath(pool_path).c_str());
}

namespace {

// Blocks SIGPIPE on this thread while a command runs: exporting into a pipe
// passed by a client whose reader went away must fail with EPIPE, not kill
// the server. A SIGPIPE raised meanwhile is consumed before unblocking.
class SigpipeGuard {
 public:
  SigpipeGuard() {
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old_);
  }
  ~SigpipeGuard() {
    sigset_t pipe_set;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    const timespec zero{0, 0};
    while (sigtimedwait(&pipe_set, nullptr, &zero) > 0) {
    }
    pthread_sigmask(SIG_SETMASK, &old_, nullptr);
  }
  SigpipeGuard(const SigpipeGuard&) = delete;
  SigpipeGuard& operator=(const SigpipeGuard&) = delete;

 private:
  sigset_t old_;
};

}  // namespace

struct ControlSession::Impl : public StepRunner {
  Impl(int fd_in, Pool& pool_in, const std::string& pool_path_in, bool allow_steps_in)
      : fd(fd_in), pool(pool_in), pool_path(pool_path_in), allow_steps(allow_steps_in) {}

  // Takes the command's stepped job over (CommandContext::RunSteps).
  int RunSteps(CommandContext& c, SteppedJob j) override {
    SNAPDISK_CHECK(!running, "a command ran two stepped jobs");
    if (!allow_steps) {
      j.cancel();
      while (!j.step()) WaitForPoolWork(pool);
      return c.Fail(Status::Busy("the server of pool " + pool_path + " runs " +
                                 std::to_string(kMaxServerJobs) +
                                 " jobs already (backups, restores, checks, RBD diffs; `snapdisk "
                                 "backup jobs` lists them); try again when one has finished"));
    }
    ctx.emplace(c);
    job = std::move(j);
    running = true;
    job_number = JobRegistry::Instance().Add(command_line, job.id, job.progress,
                                             [this] { cancel_asked = true; });
    return kExitPending;
  }

  void Reply(int exit_code, const std::string& out_text, const std::string& err_text) {
    const json reply = {{"exit_code", exit_code}, {"stdout", out_text}, {"stderr", err_text}};
    timeval tv{kRequestTimeoutS, 0};
    ::setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    (void)SendAll(fd, Dump(reply) + "\n");
    for (int passed : fds) ::close(passed);
    fds.clear();
    ::close(fd);
    fd = -1;
  }

  void Fail(const Status& s, int* exit_code, std::string* err_text) const {
    *err_text += "snapdisk: " + ErrorMessage(s, pool_path) + "\n";
    *exit_code = ExitCodeFor(s);
  }

  void Begin();
  bool Step();

  int fd;
  Pool& pool;
  const std::string pool_path;
  const bool allow_steps;
  std::vector<int> fds;  // passed by the client; closed with the reply
  std::unique_ptr<CaptureOutput> out;
  // The stepped job, while one runs.
  std::optional<CommandContext> ctx;
  SteppedJob job;
  bool running = false;
  std::string command_line;   // for JobRegistry
  uint64_t job_number = 0;    // in JobRegistry while running
  bool cancel_asked = false;  // by the server or `backup cancel`
  bool cancelled = false;     // job.cancel() called
  bool replied = false;       // answered early (SteppedJob::answer_early); the job goes on
  int64_t last_progress_ns = 0;
};

void ControlSession::Impl::Begin() {
  SigpipeGuard sigpipe_guard;
  // The timeouts below need a blocking socket, whatever the listener was.
  if (const int flags = ::fcntl(fd, F_GETFL); flags >= 0 && (flags & O_NONBLOCK)) {
    ::fcntl(fd, F_SETFL, flags & ~O_NONBLOCK);
  }
  int exit_code = kExitOk;
  std::string out_text, err_text;
  try {
    std::string line;
    Status s = CheckPeer(fd);
    if (s.ok()) s = ReadRequest(fd, &line, &fds);
    json request;
    if (s.ok()) {
      request = json::parse(line, nullptr, /*allow_exceptions=*/false);
      if (!request.is_object() || !request.contains("argv") || !request["argv"].is_array() ||
          !request.value("cwd", json()).is_string() ||
          request["cwd"].get<std::string>().rfind('/', 0) != 0) {
        s = Status::InvalidArgument("malformed control request");
      }
    }
    std::vector<std::string> argv;
    int stdin_fd = -1, stdout_fd = -1;
    if (s.ok()) {
      for (const json& a : request["argv"]) {
        if (!a.is_string()) {
          s = Status::InvalidArgument("malformed control request: argv holds a non-string");
          break;
        }
        argv.push_back(a.get<std::string>());
      }
      const json names = request.value("fds", json::array());
      if (!names.is_array() || names.size() != fds.size()) {
        s = Status::InvalidArgument(
            "malformed control request: 'fds' does not match the "
            "descriptors passed");
      } else {
        for (size_t i = 0; i < names.size(); ++i) {
          if (names[i] == "stdin") stdin_fd = fds[i];
          if (names[i] == "stdout") stdout_fd = fds[i];
        }
      }
    }
    if (s.ok()) {
      for (const std::string& a : argv) command_line += (command_line.empty() ? "" : " ") + a;
      out = std::make_unique<CaptureOutput>(fd, request.value("progress", false));
      ServerExecutor executor(pool, pool_path, *out, request["cwd"].get<std::string>(), stdin_fd,
                              stdout_fd, *this);
      CLI::App app{"snapdisk"};
      AddPoolCommandSet(app, exit_code, executor, argv);
      std::reverse(argv.begin(), argv.end());  // CLI11 takes the arguments in reverse
      try {
        app.parse(argv);
      } catch (const CLI::CallForHelp&) {
        out->Stdout(app.help());
      } catch (const CLI::ParseError& e) {
        out->Stderr("snapdisk: " + std::string(e.what()) + "\n");
        exit_code = kExitUsage;
      }
      if (running) {
        SNAPDISK_CHECK(exit_code == kExitPending, "a stepped job's command did not return it");
        return;  // Step() goes on
      }
      out_text = out->out();
      err_text = out->err();
    } else {
      Fail(s, &exit_code, &err_text);
    }
  } catch (const std::exception& e) {
    Fail(Status::IOError(std::string("control request failed: ") + e.what()), &exit_code,
         &err_text);
  }
  if (running) {
    // The parse threw after the job was taken: let it go, then answer.
    job.cancel();
    while (!job.step()) WaitForPoolWork(pool);
    job = {};
    ctx.reset();
    running = false;
  }
  if (exit_code == kExitPending) exit_code = kExitIoError;
  Reply(exit_code, out_text, err_text);
}

bool ControlSession::Impl::Step() {
  if (!running) return true;
  SigpipeGuard sigpipe_guard;
  int exit_code = kExitIoError;
  std::string err_text;
  try {
    // Once answered, the client is gone from this job (and its socket
    // closed): only `backup cancel` or the server stopping ends it early.
    if (!cancelled && (cancel_asked || (!replied && out->Cancelled()))) {
      cancelled = true;
      job.cancel();
    }
    if (!replied && job.answer_early) {
      if (std::optional<int> code = job.answer_early(*ctx)) {
        Reply(*code, out->out(), out->err());
        out->Detach();
        replied = true;
      }
    }
    if (!job.step()) {
      if (job.progress && !replied) {
        const int64_t now = MonotonicNs();
        if (now - last_progress_ns >= 100'000'000) {
          last_progress_ns = now;
          const StepProgress p = job.progress();
          out->Progress(p.label, p.done, p.total, p.unit);
        }
      }
      return false;
    }
    if (!replied) out->ProgressEnd();
    exit_code = job.finish(*ctx);
    err_text = out->err();
  } catch (const std::exception& e) {
    err_text = out->err();
    Fail(Status::IOError(std::string("control request failed: ") + e.what()), &exit_code,
         &err_text);
  }
  JobRegistry::Instance().Remove(job_number);
  job = {};  // the job's state goes (a finished job does not wait)
  ctx.reset();
  running = false;
  if (!replied) Reply(exit_code, out->out(), err_text);
  return true;
}

ControlSession::ControlSession(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}

ControlSession::~ControlSession() {
  if (!impl_->running) return;
  Cancel();
  while (!Step()) WaitForPoolWork(impl_->pool);
}

std::unique_ptr<ControlSession> ControlSession::Start(int fd, Pool& pool,
                                                      const std::string& pool_path,
                                                      bool allow_steps) {
  auto impl = std::make_unique<Impl>(fd, pool, pool_path, allow_steps);
  impl->Begin();
  return std::unique_ptr<ControlSession>(new ControlSession(std::move(impl)));
}

bool ControlSession::done() const { return impl_->fd < 0 && !impl_->running; }

bool ControlSession::Step() { return impl_->Step(); }

void ControlSession::Cancel() { impl_->cancel_asked = true; }

void ServeControlConnection(int fd, Pool& pool, const std::string& pool_path) {
  std::unique_ptr<ControlSession> session = ControlSession::Start(fd, pool, pool_path);
  while (!session->Step()) WaitForPoolWork(pool);
}

// ---- Client ----------------------------------------------------------------

std::optional<int> RunThroughServer(const std::string& pool_path,
                                    const std::vector<std::string>& argv, const JobOptions& options,
                                    Output& out) {
  const std::string path = ControlSocketPath(pool_path);
  struct stat st;
  if (::lstat(path.c_str(), &st) != 0 || !S_ISSOCK(st.st_mode)) return std::nullopt;
  const int fd = Connect(path);
  if (fd < 0) return std::nullopt;  // stale socket: its server is gone
  auto fail = [&](const std::string& why) {
    out.ProgressEnd();
    out.Stderr("snapdisk: server of pool " + pool_path + ": " + why + "\n");
    ::close(fd);
    return kExitIoError;
  };
  char cwd[PATH_MAX];
  if (::getcwd(cwd, sizeof cwd) == nullptr) {
    return fail(std::string("cannot send the working directory: ") + std::strerror(errno));
  }
  json request = {{"argv", argv}, {"cwd", cwd}, {"progress", ::isatty(2) == 1}};
  std::vector<int> fds;
  json fd_names = json::array();
  if (options.uses_stdin) {
    fds.push_back(0);
    fd_names.push_back("stdin");
  }
  if (options.uses_stdout) {
    fds.push_back(1);
    fd_names.push_back("stdout");
  }
  request["fds"] = fd_names;
  constexpr const char* kHungUp = "closed the connection without a reply";
  if (!SendWithFds(fd, Dump(request) + "\n", fds)) {
    if (errno == EPIPE || errno == ECONNRESET) return fail(kHungUp);
    return fail(std::string("cannot send the command: ") + std::strerror(errno));
  }
  std::string buf;
  char chunk[65536];
  for (;;) {
    const ssize_t n = ::recv(fd, chunk, sizeof chunk, 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      if (errno == ECONNRESET) return fail(kHungUp);
      return fail(std::string("cannot read the reply: ") + std::strerror(errno));
    }
    if (n == 0) return fail(kHungUp);
    buf.append(chunk, static_cast<size_t>(n));
    size_t nl;
    while ((nl = buf.find('\n')) != std::string::npos) {
      const json line = json::parse(buf.substr(0, nl), nullptr, false);
      try {
        buf.erase(0, nl + 1);
        if (line.is_object() && line.contains("progress") && line["progress"].is_object()) {
          const json& p = line["progress"];
          out.Progress(p.value("label", ""), p.value("done", uint64_t{0}),
                       p.value("total", uint64_t{0}), ParseProgressUnit(p.value("unit", "")));
          continue;
        }
        if (!line.is_object() || !line.contains("exit_code") ||
            !line["exit_code"].is_number_integer()) {
          return fail("sent a malformed reply");
        }
        out.ProgressEnd();
        const std::string so = line.value("stdout", ""), se = line.value("stderr", "");
        if (!so.empty()) out.Stdout(so);
        if (!se.empty()) out.Stderr(se);
        ::close(fd);
        return line["exit_code"].get<int>();
      } catch (const json::exception&) {
        return fail("sent a malformed reply");
      }
    }
  }
}

}  // namespace snapdisk::cli
