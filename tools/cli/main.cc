// snapdisk: the command-line tool. `snapdisk --help` lists the commands;
// `snapdisk COMMAND --help` explains each.
#include <CLI/CLI.hpp>
#include <cstdio>

#include "tools/cli/commands.h"
#include "tools/cli/exit_codes.h"

int main(int argc, char** argv) {
  CLI::App app{"snapdisk: block-level snapshots of simulated ESSD cloud disks"};
  app.footer(snapdisk::cli::kExitCodeHelp);
  app.require_subcommand(1);
  int exit_code = snapdisk::cli::kExitOk;
  snapdisk::cli::AddPoolCommands(app, exit_code);
  snapdisk::cli::AddVolumeCommands(app, exit_code);
  snapdisk::cli::AddSnapshotCommands(app, exit_code);
  snapdisk::cli::AddServeCommand(app, exit_code);
  snapdisk::cli::AddExperimentCommand(app, exit_code);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::fprintf(stderr, "snapdisk: %s\n", e.what());
    std::fprintf(stderr, "Run 'snapdisk --help' for usage.\n");
    return snapdisk::cli::kExitUsage;
  }
  return exit_code;
}
