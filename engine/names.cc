#include "engine/names.h"

#include <string>

#include "engine/format.h"

namespace snapdisk {

Status ValidateName(std::string_view name, std::string_view what) {
  auto bad = [&](const std::string& why) {
    return Status::InvalidArgument(std::string(what) + " '" + std::string(name) + "' " + why +
                                   " (use 1-128 letters, digits, '.', '_', '-')");
  };
  if (name.empty())
    return Status::InvalidArgument(std::string(what) +
                                   " is empty (use 1-128 letters, digits, '.', '_', '-')");
  if (name.size() > format::kMaxNameBytes) return bad("is longer than 128 characters");
  for (char c : name) {
    const bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
                    c == '.' || c == '_' || c == '-';
    if (!ok) return bad("has a character that is not allowed");
  }
  if (name == "." || name == "..") return bad("is reserved");
  return Status::OK();
}

}  // namespace snapdisk
