// `snapdisk serve`: the NBD server (tools/nbd/nbd_server.h) on the command line.
#include <cstdlib>
#include <memory>
#include <string>

#include "tools/cli/args.h"
#include "tools/cli/commands.h"
#include "tools/cli/exit_codes.h"
#include "tools/nbd/nbd_server.h"

namespace snapdisk::cli {

void AddServeCommand(CLI::App& app, int& exit_code) {
  auto opt = std::make_shared<nbd::ServerOptions>();
  CLI::App* cmd = app.add_subcommand(
      "serve",
      "Serve a pool's volumes over NBD: every volume by name, every snapshot read-only as "
      "VOL@SNAP (qemu-img, qemu-io, nbdcopy, nbdinfo, fio --ioengine=nbd)");
  cmd->footer(
      "Examples:\n"
      "  snapdisk serve pool.img --socket /tmp/pool.sock\n"
      "  qemu-img info 'nbd+unix:///db?socket=/tmp/pool.sock'\n"
      "  nbdinfo --map 'nbd+unix:///db@nightly?socket=/tmp/pool.sock'\n"
      "  snapdisk serve pool.img --port 10809      # TCP on 127.0.0.1\n\n"
      "Exports: VOL (read-write), VOL@SNAP (read-only); the empty name means the pool's\n"
      "only volume. Requests up to 32 MiB; flush and FUA commit the pool (every\n"
      "connection sees them). Clients holding a volume make rollback and delete busy.\n\n"
      "Prints one line to stderr when ready. While it runs, other snapdisk commands on the\n"
      "pool go through its control socket (POOL.ctl). SIGTERM or SIGINT finishes the\n"
      "requests in flight, commits the pool and exits 0.\n\n"
      "Instant restores go on by themselves: a volume still being filled from its backup\n"
      "(after a restart or a crash) gets its store attached again when the server starts,\n"
      "and the fill continues in the background (`backup jobs POOL` lists it, `backup\n"
      "cancel` stops it) at --hydrate-rate, or the cap its `restore --rate` set. A store\n"
      "that cannot be opened is named on stderr (reads of data not filled yet attach it\n"
      "again on demand; `snapdisk restore resume` continues the fill).\n\n"
      "Backup policies run by themselves: every --policy-check seconds the server plans\n"
      "what each volume's policy says is due (`policy show` gives the last and next run)\n"
      "and runs it as a job between NBD requests (`backup jobs`, `backup cancel`), a line\n"
      "each on stderr; `backup history POOL` keeps every task.\n\n" +
      std::string(kExitCodeHelp));
  cmd->add_option("POOL", opt->pool_path, "Path of the pool file")->required();
  auto* socket = cmd->add_option("--socket", opt->socket_path, "Listen on this Unix socket");
  auto* port =
      cmd->add_option("--port", opt->tcp_port, "Listen on this TCP port (0: any free port)")
          ->check(CLI::Range(0, 65535));
  socket->excludes(port);
  cmd->add_option("--bind", opt->bind_address, "Address for --port")
      ->capture_default_str()
      ->needs(port);
  cmd->add_option("--max-clients", opt->max_clients, "Connections served at once")
      ->capture_default_str()
      ->check(CLI::Range(1, 4096));
  cmd->add_option("--max-requests", opt->max_requests_per_client,
                  "Requests in flight per connection")
      ->capture_default_str()
      ->check(CLI::Range(1, 1024));
  cmd->add_flag("--verbose", opt->verbose, "Log connections and client errors to stderr");
  cmd->add_option("--hydrate-rate", opt->hydrate_rate_mb_per_s,
                  "Cap each fill of an instant restore the server resumes at this many MB/s\n"
                  "(10^6 bytes/s; default: the cap its `restore --rate` recorded, if any)")
      ->type_name("MB/s")
      ->check(CheckValidator(CheckRate, "MB/s"));
  cmd->add_option("--policy-check", opt->policy_check_interval_s,
                  "Seconds between two looks at what the backup policies have due (0: never;\n"
                  "then only `snapdisk policy run` runs them)")
      ->capture_default_str()
      ->type_name("SECONDS")
      ->check(CLI::Range(0.0, 86400.0));
  cmd->callback([opt, &exit_code] { exit_code = nbd::Serve(*opt); });
}

}  // namespace snapdisk::cli
