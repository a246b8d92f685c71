// Development scaffold while the CLI commands are being written: registers
// nothing. Each definition moves to its own file (see commands.h) and this
// file is deleted.
#include "tools/cli/commands.h"

namespace snapdisk::cli {
void AddPoolCommands(CLI::App&, int&) {}
void AddVolumeCommands(CLI::App&, int&) {}
void AddSnapshotCommands(CLI::App&, int&) {}
}  // namespace snapdisk::cli
