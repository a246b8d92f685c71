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
  auto opened = OpenDirStore(dir);
  if (!opened.ok()) {
    const Status& s = opened.status();
    if (s.IsNotFound() && ::access(dir.c_str(), F_OK) != 0) {
      return Status::NotFound("store " + dir +
                              " does not exist (make it with `snapdisk store create " + dir +
                              "`)");
    }
    if (s.IsBusy()) {
      return Status::Busy(s.message() +
                          " (a backup running in `snapdisk serve` holds its store until it "
                          "finishes); try again later");
    }
    return s;
  }
  std::shared_ptr<WormStore> store(std::move(opened).value());
  open_stores[key] = store;
  return store;
}

}  // namespace snapdisk::cli
