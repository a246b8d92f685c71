// The pool command tree, shared by the `snapdisk` process and the control
// server (which parses forwarded command lines with it).
#include "tools/cli/commands.h"
#include "tools/cli/exit_codes.h"

namespace snapdisk::cli {

std::string HelpFooter() {
  return std::string(
             "POOL is the path of the pool file. While `snapdisk serve` holds a pool, commands\n"
             "on it are carried out by the server (through POOL.ctl).\n"
             "Sizes: bytes or binary units K, M, G, T, P, E (1K = 1024), e.g. 512M, 64G, 4KiB.\n") +
         kExitCodeHelp;
}

namespace {

// Positional arguments show their name alone in --help ("POOL", not
// "POOL TEXT").
void PlainPositionals(CLI::App& app) {
  for (CLI::Option* option : app.get_options()) {
    if (option->get_positional()) option->type_name("");
  }
  for (CLI::App* sub : app.get_subcommands({})) PlainPositionals(*sub);
}

}  // namespace

void AddPoolCommandSet(CLI::App& app, int& exit_code, Executor& executor,
                       const std::vector<std::string>& command_line) {
  app.footer(HelpFooter());
  app.require_subcommand(1);
  AddPoolCommands(app, exit_code, executor);
  AddVolumeCommands(app, exit_code, executor);
  AddSnapshotCommands(app, exit_code, executor);
  AddStoreCommands(app, exit_code, executor);
  AddBackupCommands(app, exit_code, executor, command_line);
  AddPolicyCommands(app, exit_code, executor);
  AddRestoreCommands(app, exit_code, executor);
  AddDiffCommands(app, exit_code, executor);
  PlainPositionals(app);
}

}  // namespace snapdisk::cli
