// `snapdisk volume create|list|info|delete`, `snapdisk import`, `snapdisk export`.
#include "engine/volume.h"
#include "tools/cli/command_util.h"
#include "tools/cli/exit_codes.h"
#include "tools/cli/report.h"
#include "tools/cli/transfer.h"

namespace snapdisk::cli {

namespace {

struct VolumeArgs {
  std::string pool;
  std::string volume;
  std::string size;
  std::string profile = "unlimited";
  std::string file;
  std::string snapshot;  // import --snapshot
  std::string log = "on";
  bool json = false;
};

CLI::Validator ProfileValidator() {
  return CLI::Validator(
      [](std::string& value) -> std::string {
        auto level = ParseEssdLevel(value);
        return level.ok() ? std::string() : level.status().message();
      },
      "", "ESSD profile");
}

std::string ProfileSummary(const VolumeInfo& info) {
  if (info.profile == EssdLevel::kUnlimited) return "unlimited (no QoS limits)";
  auto p = EssdProfile::For(info.profile, info.size_bytes);
  return p.ok() ? p->Describe() : EssdLevelName(info.profile);
}

nlohmann::ordered_json QosJson(const VolumeInfo& info) {
  EssdProfile p = EssdProfile::Unlimited(info.size_bytes);
  if (info.profile != EssdLevel::kUnlimited) {
    auto q = EssdProfile::For(info.profile, info.size_bytes);
    if (q.ok()) p = *q;
  }
  return {{"iops_max", p.iops_max},
          {"throughput_bytes_per_s", p.throughput_bytes_per_s},
          {"write_latency_ns", p.write_latency_ns},
          {"read_latency_ns", p.read_latency_ns}};
}

int CreateVolume(CommandContext& ctx, const VolumeArgs& args) {
  const EssdLevel level = ParseEssdLevel(args.profile).value();
  auto info = ctx.pool().CreateVolume(args.volume, SizeOf(args.size), level);
  if (!info.ok()) return ctx.Fail(info.status());
  if (args.log == "off") {
    if (Status s = ctx.pool().SetLogEnabled(args.volume, false); !s.ok()) return ctx.Fail(s);
  }
  if (Status s = ctx.pool().Commit(); !s.ok()) return ctx.Fail(s);
  if (ctx.json()) {
    ctx.PrintJson(VolumeJson(*info));
  } else {
    ctx.Print("Created volume '" + info->name + "': " + HumanBytes(info->size_bytes) + ", " +
              ProfileSummary(*info) + "\n");
  }
  return kExitOk;
}

int ListVolumes(CommandContext& ctx) {
  if (Status s = ctx.pool().health(); !s.ok()) return ctx.Fail(s);
  const std::vector<VolumeInfo> volumes = ctx.pool().ListVolumes();
  if (ctx.json()) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const VolumeInfo& v : volumes) list.push_back(VolumeJson(v));
    ctx.PrintJson(list);
    return kExitOk;
  }
  Table table({"NAME", "SIZE", "PROFILE", "SNAPSHOTS", "CREATED", "ORIGIN"});
  table.RightAlign(1);
  table.RightAlign(3);
  for (const VolumeInfo& v : volumes) {
    table.AddRow({v.name, HumanBytes(v.size_bytes), EssdLevelName(v.profile),
                  std::to_string(v.snapshots), HumanTime(v.created_unix_ns),
                  v.origin.empty() ? "-" : v.origin});
  }
  ctx.Print(table.Render());
  return kExitOk;
}

int ShowVolume(CommandContext& ctx, const VolumeArgs& args) {
  auto info = ctx.pool().GetVolume(args.volume);
  if (!info.ok()) return ctx.Fail(info.status());
  auto volume = ctx.pool().OpenVolume(args.volume);
  if (!volume.ok()) return ctx.Fail(volume.status());
  auto mapped_bytes = MappedBytes(**volume);
  if (!mapped_bytes.ok()) return ctx.Fail(mapped_bytes.status());
  const uint64_t mapped = *mapped_bytes;
  if (ctx.json()) {
    nlohmann::ordered_json doc = VolumeJson(*info);
    doc["mapped_bytes"] = mapped;
    doc["in_use"] = (*volume)->in_use();
    doc["qos"] = QosJson(*info);
    ctx.PrintJson(doc);
    return kExitOk;
  }
  ctx.Print(KeyValues(
      {{"name", info->name},
       {"id", std::to_string(info->id)},
       {"size", HumanBytes(info->size_bytes) + " (" + std::to_string(info->size_bytes) + " bytes)"},
       {"mapped", HumanBytes(mapped) + " (" + std::to_string(mapped) + " bytes)"},
       {"profile", ProfileSummary(*info)},
       {"created", Rfc3339(info->created_unix_ns)},
       {"snapshots", std::to_string(info->snapshots)},
       {"origin", info->origin.empty() ? "-" : info->origin},
       {"lsn", std::to_string(info->lsn)},
       {"lineage", std::to_string(info->lineage)},
       {"in use", (*volume)->in_use() ? "yes (by a client of the server)" : "no"}}));
  return kExitOk;
}

int DeleteVolume(CommandContext& ctx, const VolumeArgs& args) {
  auto info = ctx.pool().GetVolume(args.volume);
  if (!info.ok()) return ctx.Fail(info.status());
  if (Status s = ctx.pool().DeleteVolume(args.volume); !s.ok()) return ctx.Fail(s);
  if (Status s = ctx.pool().Commit(); !s.ok()) return ctx.Fail(s);
  if (ctx.json()) {
    ctx.PrintJson({{"deleted", VolumeJson(*info)}});
  } else {
    ctx.Print("Deleted volume '" + args.volume + "'\n");
  }
  return kExitOk;
}

}  // namespace

void AddVolumeCommands(CLI::App& app, int& exit_code, Executor& executor) {
  CLI::App* volume = app.add_subcommand("volume", "Create, list, inspect and delete volumes");
  volume->footer(HelpFooter());
  volume->require_subcommand(1);

  {
    auto args = std::make_shared<VolumeArgs>();
    CLI::App* cmd = AddCommand(*volume, "create", "Create an empty (all zeros), thin volume");
    AddPoolArg(cmd, args->pool);
    AddVolumeArg(cmd, args->volume, "Name of the new volume (1-128 of A-Z a-z 0-9 . _ -)");
    cmd->add_option("--size", args->size, "Volume size: a multiple of 512 bytes")
        ->required()
        ->check(SizeValidator())
        ->type_name("SIZE");
    cmd->add_option("--profile", args->profile,
                    "ESSD performance level: PL0, PL1, PL2, PL3 or unlimited (default)")
        ->check(ProfileValidator())
        ->type_name("PL0|PL1|PL2|PL3|unlimited");
    cmd->add_option("--log", args->log,
                    "Write log (log backup), on by default: each write's blocks are kept\n"
                    "until a log backup ships them (at most 256 MiB, less when the pool\n"
                    "runs short, while no backup policy requires the log)")
        ->check(CLI::IsMember({"on", "off"}))
        ->type_name("on|off");
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, &exit_code, &executor] {
      exit_code = executor.RunOnPool(args->pool, {args->json}, [args](CommandContext& ctx) {
        return CreateVolume(ctx, *args);
      });
    });
  }
  {
    auto args = std::make_shared<VolumeArgs>();
    CLI::App* cmd = AddCommand(*volume, "list", "List the volumes of a pool");
    AddPoolArg(cmd, args->pool);
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, &exit_code, &executor] {
      exit_code = executor.RunOnPool(args->pool, {args->json}, ListVolumes);
    });
  }
  {
    auto args = std::make_shared<VolumeArgs>();
    CLI::App* cmd = AddCommand(*volume, "info",
                               "Show a volume: size, mapped bytes, ESSD profile and its QoS "
                               "figures, snapshots, origin");
    AddPoolArg(cmd, args->pool);
    AddVolumeArg(cmd, args->volume);
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, &exit_code, &executor] {
      exit_code = executor.RunOnPool(
          args->pool, {args->json}, [args](CommandContext& ctx) { return ShowVolume(ctx, *args); });
    });
  }
  {
    auto args = std::make_shared<VolumeArgs>();
    CLI::App* cmd = AddCommand(*volume, "delete",
                               "Delete a volume (refused while it has snapshots or is in use)");
    AddPoolArg(cmd, args->pool);
    AddVolumeArg(cmd, args->volume);
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, &exit_code, &executor] {
      exit_code = executor.RunOnPool(args->pool, {args->json}, [args](CommandContext& ctx) {
        return DeleteVolume(ctx, *args);
      });
    });
  }
  {
    auto args = std::make_shared<VolumeArgs>();
    args->profile = "unlimited";
    CLI::App* cmd = AddCommand(
        app, "import",
        "Import a raw disk image into a new volume of the image's size (which must be a\n"
        "multiple of 512 bytes, or give --size); holes and all-zero blocks stay unallocated.\n"
        "FILE - reads stdin. A failed or interrupted import leaves no volume behind.\n"
        "Migrating from Ceph RBD: `rbd export IMG@S1 raw`, then `snapdisk import POOL VOL\n"
        "raw --snapshot S1`, then `snapdisk import-diff POOL VOL` each `rbd export-diff\n"
        "--from-snap` stream in order.");
    AddPoolArg(cmd, args->pool);
    AddVolumeArg(cmd, args->volume, "Name of the new volume");
    cmd->add_option("FILE", args->file, "Raw image file, or - for stdin")->required();
    cmd->add_option("--size", args->size,
                    "Volume size, at least the image's (default: the image's size)")
        ->check(SizeValidator())
        ->type_name("SIZE");
    cmd->add_option("--profile", args->profile,
                    "ESSD performance level of the new volume: PL0..PL3 or unlimited (default)")
        ->check(ProfileValidator())
        ->type_name("PL0|PL1|PL2|PL3|unlimited");
    cmd->add_option("--snapshot", args->snapshot,
                    "Take a snapshot with this name of the imported volume (the from-snapshot\n"
                    "of the RBD diff streams to import next)")
        ->check(NameValidator("snapshot name"))
        ->type_name("NAME");
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, &exit_code, &executor] {
      JobOptions options{args->json};
      options.uses_stdin = args->file == "-";
      exit_code = executor.RunOnPool(args->pool, options, [args](CommandContext& ctx) {
        ImportArgs import;
        import.volume = args->volume;
        import.file = args->file;
        import.profile = ParseEssdLevel(args->profile).value();
        import.size_bytes = args->size.empty() ? 0 : SizeOf(args->size);
        import.snapshot = args->snapshot;
        return ImportImage(ctx, import);
      });
    });
  }
  {
    auto args = std::make_shared<VolumeArgs>();
    CLI::App* cmd = AddCommand(
        app, "export",
        "Export a volume or snapshot as a raw image: sparse into a file (holes stay holes),\n"
        "every byte into a pipe. FILE - writes stdout (not a terminal). An existing FILE is\n"
        "overwritten; a failed export removes it.");
    AddPoolArg(cmd, args->pool);
    cmd->add_option("VOL[@SNAP]", args->volume, "The volume, or one of its snapshots")
        ->required()
        ->check(VolumeRefValidator(false));
    cmd->add_option("FILE", args->file, "Output file, or - for stdout")->required();
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, &exit_code, &executor] {
      if (args->json && args->file == "-") {
        throw CLI::ValidationError("--json",
                                   "cannot be used with FILE - (stdout carries the image)");
      }
      JobOptions options{args->json};
      options.uses_stdout = args->file == "-";
      exit_code = executor.RunOnPool(args->pool, options, [args](CommandContext& ctx) {
        const VolumeRef ref = ParseVolumeRef(args->volume, false).value();
        return ExportImage(ctx, {ref.volume, ref.snapshot, args->file});
      });
    });
  }
}

}  // namespace snapdisk::cli
