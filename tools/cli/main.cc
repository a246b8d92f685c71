// snapdisk: the command-line tool. `snapdisk --help` lists the commands;
// `snapdisk COMMAND --help` explains each.
//
// Errors are one line on stderr, "snapdisk: ...", and an exit code from
// exit_codes.h; a bad command line also names the --help to read.
#include <CLI/CLI.hpp>
#include <cctype>
#include <cstdio>
#include <string>
#include <vector>

#include "tools/cli/command_context.h"
#include "tools/cli/commands.h"
#include "tools/cli/exit_codes.h"
#include "tools/cli/local_executor.h"

namespace {

// The deepest subcommand the parser reached, and its path
// ("snapdisk volume create").
const CLI::App* Deepest(const CLI::App& app, std::string* path) {
  *path = "snapdisk";
  const CLI::App* cur = &app;
  for (;;) {
    const auto subs = cur->get_subcommands();
    if (subs.empty()) return cur;
    cur = subs.front();
    *path += " " + cur->get_name();
  }
}

// CLI11 says "A subcommand is required" for `snapdisk frob`; name the word it
// did not know instead, and what it knows.
std::string ExplainMissingSubcommand(const CLI::App& group, const std::string& path) {
  const std::vector<std::string> rest = group.remaining();
  if (rest.empty()) {
    std::string names;
    for (const CLI::App* sub : group.get_subcommands({})) {
      names += (names.empty() ? "" : ", ") + sub->get_name();
    }
    return "'" + path + "' needs a command: " + names;
  }
  if (!rest[0].empty() && rest[0][0] == '-') return "unknown option '" + rest[0] + "'";
  std::string names;
  for (const CLI::App* sub : group.get_subcommands({})) {
    names += (names.empty() ? "" : ", ") + sub->get_name();
  }
  return "unknown command '" + rest[0] + "' (commands: " + names + ")";
}

std::string OneLine(std::string text) {
  for (char& c : text) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  while (!text.empty() && text.back() == ' ') text.pop_back();
  // CLI11 capitalizes its messages; ours are lower case after "snapdisk: ".
  if (text.size() > 1 && std::isupper(static_cast<unsigned char>(text[0])) &&
      (text[1] == ' ' || std::islower(static_cast<unsigned char>(text[1])))) {
    text[0] = static_cast<char>(std::tolower(static_cast<unsigned char>(text[0])));
  }
  return text;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> args(argv + 1, argv + argc);
  snapdisk::cli::LocalExecutor executor(args);
  CLI::App app{"snapdisk: block-level snapshots of simulated ESSD cloud disks", "snapdisk"};
  int exit_code = snapdisk::cli::kExitOk;
  snapdisk::cli::AddPoolCommandSet(app, exit_code, executor, args);
  snapdisk::cli::AddServeCommand(app, exit_code);
  snapdisk::cli::AddExperimentCommand(app, exit_code);
  snapdisk::cli::AddCompareCommand(app, exit_code, executor);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    std::string path;
    const CLI::App* deepest = Deepest(app, &path);
    std::string message = OneLine(e.what());
    if (e.get_name() == "RequiredError" && !deepest->get_subcommands({}).empty() &&
        deepest->get_subcommands().empty() &&
        std::string(e.what()).find("ubcommand") != std::string::npos) {
      message = ExplainMissingSubcommand(*deepest, path);
    }
    std::fprintf(stderr, "snapdisk: %s (see '%s --help')\n", message.c_str(), path.c_str());
    bool json = false;
    for (const std::string& a : args) {
      if (a == "--") break;
      json |= a == "--json";
    }
    if (json) {
      const snapdisk::Status usage = snapdisk::Status::InvalidArgument(message);
      std::printf("%s\n", snapdisk::cli::ErrorJson(usage, message).dump(2).c_str());
    }
    return snapdisk::cli::kExitUsage;
  }
  return exit_code;
}
