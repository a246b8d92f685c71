// The snapdisk CLI's subcommands. Each Add*Command registers its subcommands
// (options, --help text, callback) on the root app; a callback stores the
// process exit code (exit_codes.h) in `exit_code`.
#pragma once

#include <CLI/CLI.hpp>

namespace snapdisk::cli {

// experiment.cc: the disk experiment.
void AddExperimentCommand(CLI::App& app, int& exit_code);
// pool_commands.cc: pool create|info|fsck|scrub.
void AddPoolCommands(CLI::App& app, int& exit_code);
// volume_commands.cc: volume create|list|info|delete, import, export.
void AddVolumeCommands(CLI::App& app, int& exit_code);
// snapshot_commands.cc: snapshot create|list|delete|diff, clone, rollback.
void AddSnapshotCommands(CLI::App& app, int& exit_code);
// tools/nbd/serve_command.cc: serve (the NBD server).
void AddServeCommand(CLI::App& app, int& exit_code);

}  // namespace snapdisk::cli
