// The snapdisk CLI's subcommands. Each Add*Command registers its subcommands
// (options, --help text, callback) on the root app; a callback stores the
// process exit code (exit_codes.h) in `exit_code`.
//
// Commands on a pool do their work through an Executor (command_context.h):
// in the `snapdisk` process a LocalExecutor (which forwards to the pool's
// server when one is running), inside the server the control socket's own.
// So the same registration serves both: AddPoolCommandSet builds the command
// tree the control server parses a forwarded command line with.
#pragma once

#include <CLI/CLI.hpp>
#include <string>
#include <vector>

#include "tools/cli/command_context.h"

namespace snapdisk::cli {

// experiment.cc: the disk experiment.
void AddExperimentCommand(CLI::App& app, int& exit_code);
// `compare`: runs in this process only (it makes its own scratch pools).
void AddCompareCommand(CLI::App& app, int& exit_code, Executor& executor);
// pool_commands.cc: pool create|info|fsck|scrub.
void AddPoolCommands(CLI::App& app, int& exit_code, Executor& executor);
// volume_commands.cc: volume create|list|info|delete, import, export.
void AddVolumeCommands(CLI::App& app, int& exit_code, Executor& executor);
// snapshot_commands.cc: snapshot create|list|delete|diff, clone, rollback.
void AddSnapshotCommands(CLI::App& app, int& exit_code, Executor& executor);
// store_commands.cc: store create|verify|expire|report (no pool).
void AddStoreCommands(CLI::App& app, int& exit_code, Executor& executor);
// backup_commands.cc: backup POOL VOL (on the pool) and backup list|extend|
// export (store only). `command_line` (the arguments after the program
// name) tells `backup POOL VOL` from `backup list` (see the file comment).
void AddBackupCommands(CLI::App& app, int& exit_code, Executor& executor,
                       const std::vector<std::string>& command_line);
// policy_commands.cc: policy set|show|remove|run|simulate.
void AddPolicyCommands(CLI::App& app, int& exit_code, Executor& executor);
// diff_commands.cc: import-diff, export-diff (Ceph RBD export-diff streams).
void AddDiffCommands(CLI::App& app, int& exit_code, Executor& executor);
// restore_commands.cc: restore, restore apply|open|status.
void AddRestoreCommands(CLI::App& app, int& exit_code, Executor& executor);
// tools/nbd/serve_command.cc: serve (the NBD server).
void AddServeCommand(CLI::App& app, int& exit_code);

// Sets up `app` as the root of the pool commands (footer with the exit codes,
// one subcommand required) and adds the pool, volume, snapshot, store, backup
// and policy commands. `command_line`: the arguments that will be parsed
// (after the program name).
void AddPoolCommandSet(CLI::App& app, int& exit_code, Executor& executor,
                       const std::vector<std::string>& command_line = {});

// The footer of every pool command's --help: sizes, exit codes, the server.
std::string HelpFooter();

}  // namespace snapdisk::cli
