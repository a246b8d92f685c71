#include "engine/pool_file.h"

#include <fcntl.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <string>

namespace snapdisk {

Status PoolFile::Lock(const std::string& path) {
  const std::string lock_path = LockPath(path);
  int fd = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
  if (fd < 0) return Status::FromErrno(errno, "open " + lock_path);
  if (::flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    char pid[32] = {};
    ssize_t n = ::pread(fd, pid, sizeof pid - 1, 0);
    ::close(fd);
    if (err == EWOULDBLOCK) {
      std::string holder = n > 0 ? std::string(pid, static_cast<size_t>(n)) : "unknown";
      while (!holder.empty() && (holder.back() == '\n' || holder.back() == ' ')) holder.pop_back();
      return Status::Busy("pool " + path + " is in use by process " + holder);
    }
    return Status::FromErrno(err, "lock " + lock_path);
  }
  const std::string me = std::to_string(::getpid()) + "\n";
  if (::ftruncate(fd, 0) != 0 || ::pwrite(fd, me.data(), me.size(), 0) < 0) {
    // The lock holds; only the pid shown to others is missing.
  }
  lock_fd_ = fd;
  return Status::OK();
}

Result<std::unique_ptr<PoolFile>> PoolFile::Create(const std::string& path, uint64_t size_bytes,
                                                   const PoolOptions& options,
                                                   const FileDeviceOptions& device_options) {
  std::unique_ptr<PoolFile> pf(new PoolFile());
  pf->path_ = path;
  if (std::filesystem::exists(path)) {
    return Status::AlreadyExists(path + " already exists");
  }
  SNAPDISK_RETURN_IF_ERROR(pf->Lock(path));
  const uint64_t rounded = size_bytes / options.block_bytes * options.block_bytes;
  if (!format::IsValidBlockSize(options.block_bytes)) {
    return Status::InvalidArgument("block size " + std::to_string(options.block_bytes) +
                                   " is not a power of two from 4K to 64K");
  }
  SNAPDISK_ASSIGN_OR_RETURN(pf->device_, FileDevice::Create(path, rounded, device_options));
  auto pool = Pool::Create(*pf->device_, options);
  if (!pool.ok()) {
    pf->device_.reset();
    std::filesystem::remove(path);  // leave nothing half-made behind
    return pool.status();
  }
  pf->pool_ = std::move(pool).value();
  return pf;
}

Result<std::unique_ptr<PoolFile>> PoolFile::Open(const std::string& path,
                                                 const PoolOptions& options,
                                                 const FileDeviceOptions& device_options) {
  if (!std::filesystem::exists(path)) return Status::NotFound("pool " + path + " does not exist");
  std::unique_ptr<PoolFile> pf(new PoolFile());
  pf->path_ = path;
  SNAPDISK_RETURN_IF_ERROR(pf->Lock(path));
  auto device = FileDevice::Open(path, device_options);
  if (!device.ok()) {
    if (device.status().IsInvalidArgument()) {
      return Status::Corruption(path + ": not a snapdisk pool (" + device.status().message() + ")");
    }
    return device.status();
  }
  pf->device_ = std::move(device).value();
  SNAPDISK_ASSIGN_OR_RETURN(pf->pool_, Pool::Open(*pf->device_, options));
  return pf;
}

Status PoolFile::Close() {
  Status s;
  if (pool_) s = pool_->Close();
  pool_.reset();
  device_.reset();
  if (lock_fd_ >= 0) {
    ::close(lock_fd_);  // releases the flock
    lock_fd_ = -1;
  }
  return s;
}

PoolFile::~PoolFile() { (void)Close(); }

}  // namespace snapdisk
