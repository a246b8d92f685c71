#include "tools/cli/store_util.h"

#include <unistd.h>

#include <filesystem>
#include <map>
#include <mutex>

namespace snapdisk::cli {

std::string CanonicalStoreDir(const std::string& dir) {
  std::error_code ec;
  const std::filesystem::path path =
      std::filesystem::weakly_canonical(std::filesystem::absolute(dir, ec), ec);
  if (ec) return std::filesystem::absolute(dir, ec).lexically_normal().string();
  std::string out = path.string();
  while (out.size() > 1 && out.back() == '/') out.pop_back();
  return out;
}

namespace {

std::mutex role_mu;
std::string role = "snapdisk";  // guarded by role_mu

std::string HolderNote() {
  std::lock_guard<std::mutex> lock(role_mu);
  return role + " (pid " + std::to_string(::getpid()) + ")";
}

}  // namespace

void SetStoreHolderRole(const std::string& new_role) {
  std::lock_guard<std::mutex> lock(role_mu);
  role = new_role;
}

Result<std::shared_ptr<WormStore>> OpenStore(const std::string& dir) {
  static std::mutex mu;
  static std::map<std::string, std::weak_ptr<WormStore>> open_stores;
  const std::string key = CanonicalStoreDir(dir);
  std::lock_guard<std::mutex> lock(mu);
  for (auto it = open_stores.begin(); it != open_stores.end();) {
    it = it->second.expired() ? open_stores.erase(it) : std::next(it);
  }
  if (auto it = open_stores.find(key); it != open_stores.end()) {
    if (std::shared_ptr<WormStore> store = it->second.lock()) return store;
  }
  DirStoreOptions options;
  options.holder = HolderNote();
  auto opened = OpenDirStore(dir, options);
  if (!opened.ok()) {
    const Status& s = opened.status();
    if (s.IsNotFound() && ::access(dir.c_str(), F_OK) != 0) {
      return Status::NotFound("store " + dir +
                              " does not exist (make it with `snapdisk store create " + dir +
                              "`)");
    }
    if (s.IsBusy()) {
      return Status::Busy(s.message() +
                          " (a running backup holds its store until it finishes; `snapdisk "
                          "backup jobs POOL` lists a server's backups); try again later");
    }
    return s;
  }
  std::shared_ptr<WormStore> store(std::move(opened).value());
  open_stores[key] = store;
  return store;
}

Result<std::shared_ptr<WormStore>> OpenStoreForReading(const std::string& dir,
                                                       std::string* held_by) {
  held_by->clear();
  Result<std::shared_ptr<WormStore>> store = OpenStore(dir);
  if (store.ok() || !store.status().IsBusy()) return store;
  DirStoreOptions options;
  options.read_only = true;
  auto view = OpenDirStore(dir, options);
  if (!view.ok()) return view.status();
  *held_by = DirStoreHolder(dir);
  if (held_by->empty()) *held_by = "another process";
  return std::shared_ptr<WormStore>(std::move(view).value());
}

}  // namespace snapdisk::cli
