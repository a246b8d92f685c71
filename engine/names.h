// Names of volumes and snapshots: 1-128 characters of letters, digits, '.',
// '_' and '-' (so "VOL@SNAP" and paths can never be ambiguous).
#pragma once

#include <string_view>

#include "disk/status.h"

namespace snapdisk {

// OK, or InvalidArgument saying what is wrong with `name`; `what` names the
// field in the message ("volume name", "snapshot name").
Status ValidateName(std::string_view name, std::string_view what);

}  // namespace snapdisk
