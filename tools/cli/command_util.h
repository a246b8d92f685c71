// Small helpers for registering commands: the POOL argument, --json, and
// reading sizes that a validator has already checked.
#pragma once

#include <CLI/CLI.hpp>
#include <string>

#include "tools/cli/args.h"
#include "tools/cli/commands.h"

namespace snapdisk::cli {

inline CLI::App* AddCommand(CLI::App& parent, const std::string& name,
                            const std::string& description) {
  CLI::App* cmd = parent.add_subcommand(name, description);
  cmd->footer(HelpFooter());
  return cmd;
}

inline void AddPoolArg(CLI::App* cmd, std::string& pool) {
  cmd->add_option("POOL", pool, "Path of the pool file")->required();
}

inline void AddJsonFlag(CLI::App* cmd, bool& json) {
  cmd->add_flag("--json", json, "Print the result as JSON on stdout");
}

inline CLI::Option* AddVolumeArg(CLI::App* cmd, std::string& volume,
                                 const std::string& description = "Volume name") {
  return cmd->add_option("VOL", volume, description)
      ->required()
      ->check(NameValidator("volume name"));
}

// The value of a size option its SizeValidator accepted.
inline uint64_t SizeOf(const std::string& text) { return ParseSize(text).value(); }

// "--rate MB/s" (10^6 bytes/s, checked by CheckRate; ParseRate reads it).
inline CLI::Option* AddRateOption(CLI::App* cmd, std::string& rate, const std::string& help) {
  return cmd->add_option("--rate", rate, help)
      ->check(CheckValidator(CheckRate, "rate"))
      ->type_name("MB/s");
}

}  // namespace snapdisk::cli
