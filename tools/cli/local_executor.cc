#include "tools/cli/local_executor.h"

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>

#include "engine/format.h"
#include "engine/pool_file.h"
#include "restore/lazy_restore.h"
#include "tools/cli/control.h"
#include "tools/cli/exit_codes.h"

namespace snapdisk::cli {

Status CheckLooksLikePool(const std::string& path) {
  struct stat st;
  if (::stat(path.c_str(), &st) != 0) {
    if (errno == ENOENT || errno == ENOTDIR) {
      return Status::NotFound("pool " + path + " does not exist");
    }
    return Status::FromErrno(errno, "pool " + path);
  }
  if (S_ISDIR(st.st_mode)) {
    return Status::InvalidArgument(path + " is a directory, not a pool file");
  }
  if (!S_ISREG(st.st_mode)) return Status::InvalidArgument(path + " is not a regular file");
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return Status::FromErrno(errno, "open pool " + path);
  bool found = false;
  // Slot A at 0; slot B at block 1 for every possible block size.
  for (uint64_t offset = 0; offset <= format::kMaxBlockBytes && !found;
       offset = offset == 0 ? format::kMinBlockBytes : offset * 2) {
    char magic[sizeof format::kMagic];
    const ssize_t n = ::pread(fd, magic, sizeof magic, static_cast<off_t>(offset));
    found = n == static_cast<ssize_t>(sizeof magic) &&
            std::memcmp(magic, format::kMagic, sizeof magic) == 0;
  }
  ::close(fd);
  if (!found) {
    if (st.st_size < 2 * static_cast<off_t>(format::kMinBlockBytes)) {
      return Status::Corruption(path + " is not a snapdisk pool (only " +
                                std::to_string(st.st_size) + " bytes)");
    }
    return Status::Corruption(path +
                              " is not a snapdisk pool, or both of its superblocks are damaged");
  }
  return Status::OK();
}

int LocalExecutor::RunOnPool(const std::string& pool_path, const JobOptions& options,
                             const PoolJob& job) {
  if (auto code = RunThroughServer(pool_path, argv_, options, out_)) return *code;
  CommandContext ctx(out_, pool_path, options.json);
  if (Status s = CheckLooksLikePool(pool_path); !s.ok()) return ctx.Fail(s);
  PoolOptions pool_options;
  // Instantly restored volumes read after a restart with nothing run first.
  pool_options.hydration_source_resolver = RecordedHydrationSourceResolver();
  auto pf = PoolFile::Open(pool_path, pool_options);
  if (!pf.ok()) return ctx.Fail(pf.status());
  ctx.set_pool(&(*pf)->pool());
  int code = job(ctx);
  Status closed = (*pf)->Close();
  ctx.set_pool(nullptr);
  if (!closed.ok() && code == kExitOk) code = ctx.Fail(closed);
  return code;
}

int LocalExecutor::RunWithoutPool(const std::string& pool_path, const JobOptions& options,
                                  const PoolJob& job) {
  CommandContext ctx(out_, pool_path, options.json);
  return job(ctx);
}

}  // namespace snapdisk::cli
