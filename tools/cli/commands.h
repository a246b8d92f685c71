// The snapdisk CLI's subcommands. Each Add*Command registers a subcommand
// (its options, --help text and callback) on the root app; the callback sets
// the process exit code (see exit_codes.h).
#pragma once

#include <CLI/CLI.hpp>

namespace snapdisk::cli {

void AddExperimentCommand(CLI::App& app, int& exit_code);

}  // namespace snapdisk::cli
