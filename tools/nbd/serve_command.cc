// Development scaffold while the NBD server is being written: registers
// nothing. Replaced by the real `snapdisk serve`.
#include "tools/cli/commands.h"

namespace snapdisk::cli {
void AddServeCommand(CLI::App&, int&) {}
}  // namespace snapdisk::cli
