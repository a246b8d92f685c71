// PoolFile: a pool kept in a sparse file, the way the CLI and the NBD server
// use one. It owns the FileDevice and an exclusive lock, so a second process
// (or a second PoolFile in this one) opening the same pool gets Busy naming
// the holder's pid, never a corrupted pool.
//
// The lock is a flock(2) on "POOL.lock" beside the pool file, holding the
// owner's pid as text. The kernel drops it when the owner exits, however it
// exits; the file itself stays.
//
// Thread safety: as the Pool.
#pragma once

#include <memory>
#include <string>

#include "disk/file_device.h"
#include "engine/pool.h"

namespace snapdisk {

class PoolFile {
 public:
  // Creates the file (it must not exist: AlreadyExists), formats it and keeps
  // it open. `size_bytes` is rounded down to the block size.
  static Result<std::unique_ptr<PoolFile>> Create(const std::string& path, uint64_t size_bytes,
                                                  const PoolOptions& options = {},
                                                  const FileDeviceOptions& device_options = {});
  // Opens an existing pool file. NotFound, Busy (in use, with the pid),
  // Corruption (not a pool, truncated, damaged).
  static Result<std::unique_ptr<PoolFile>> Open(const std::string& path,
                                                const PoolOptions& options = {},
                                                const FileDeviceOptions& device_options = {});
  // Commits and closes the pool, then releases the lock.
  ~PoolFile();

  Pool& pool() { return *pool_; }
  FileDevice& device() { return *device_; }
  const std::string& path() const { return path_; }
  // Commit, close, release; the error of the final commit, if any.
  Status Close();

  static std::string LockPath(const std::string& pool_path) { return pool_path + ".lock"; }

 private:
  PoolFile() = default;
  // Takes the lock for `path`; Busy naming the holder's pid if taken.
  Status Lock(const std::string& path);

  std::string path_;
  int lock_fd_ = -1;
  std::unique_ptr<FileDevice> device_;
  std::unique_ptr<Pool> pool_;
};

}  // namespace snapdisk
