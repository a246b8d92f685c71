// `snapdisk snapshot create|list|delete|diff`, `snapdisk clone`, `snapdisk rollback`.
#include "engine/names.h"
#include "restore/restore_apply.h"
#include "tools/cli/command_util.h"
#include "tools/cli/exit_codes.h"
#include "tools/cli/report.h"

namespace snapdisk::cli {

namespace {

// In `snapshot diff`, TO "-" means the live volume.
constexpr const char* kLive = "-";

struct SnapshotArgs {
  std::string pool;
  std::string volume;
  std::string snapshot;
  std::string to = kLive;
  std::string new_volume;
  bool json = false;
};

Result<SnapshotInfo> FindSnapshot(Pool& pool, const std::string& volume, const std::string& name,
                                  bool with_usage = false) {
  SNAPDISK_ASSIGN_OR_RETURN(auto snaps, pool.ListSnapshots(volume, with_usage));
  for (SnapshotInfo& s : snaps) {
    if (s.name == name) return s;
  }
  return Status::NotFound("snapshot '" + volume + "@" + name + "' does not exist");
}

int CreateSnapshot(CommandContext& ctx, const SnapshotArgs& args) {
  if (args.snapshot == kLive) {
    return ctx.Fail(Status::InvalidArgument(
        "snapshot name '-' is reserved: it means the live volume in `snapshot diff`"));
  }
  if (Status s = CheckNotRestoring(ctx.pool(), args.volume, "snapshotted"); !s.ok()) {
    return ctx.Fail(s);
  }
  auto info = ctx.pool().CreateSnapshot(args.volume, args.snapshot);
  if (!info.ok()) return ctx.Fail(info.status());
  if (Status s = ctx.pool().Commit(); !s.ok()) return ctx.Fail(s);
  if (ctx.json()) {
    ctx.PrintJson(SnapshotJson(*info));
  } else {
    ctx.Print("Created snapshot '" + args.volume + "@" + args.snapshot + "'\n");
  }
  return kExitOk;
}

int ListSnapshots(CommandContext& ctx, const SnapshotArgs& args) {
  auto snaps = ctx.pool().ListSnapshots(args.volume, /*with_usage=*/true);
  if (!snaps.ok()) return ctx.Fail(snaps.status());
  if (ctx.json()) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const SnapshotInfo& s : *snaps) list.push_back(SnapshotJson(s));
    ctx.PrintJson(list);
    return kExitOk;
  }
  Table table({"NAME", "CREATED", "SIZE", "EXCLUSIVE", "SHARED"});
  for (size_t c = 2; c <= 4; ++c) table.RightAlign(c);
  for (const SnapshotInfo& s : *snaps) {
    table.AddRow({s.name, HumanTime(s.created_unix_ns), HumanBytes(s.size_bytes),
                  HumanBytes(s.exclusive_bytes), HumanBytes(s.shared_bytes)});
  }
  ctx.Print(table.Render());
  return kExitOk;
}

int DeleteSnapshot(CommandContext& ctx, const SnapshotArgs& args) {
  auto info = FindSnapshot(ctx.pool(), args.volume, args.snapshot);
  if (!info.ok()) return ctx.Fail(info.status());
  if (Status s = ctx.pool().DeleteSnapshot(args.volume, args.snapshot); !s.ok()) {
    return ctx.Fail(s);
  }
  if (Status s = ctx.pool().Commit(); !s.ok()) return ctx.Fail(s);
  if (ctx.json()) {
    ctx.PrintJson({{"deleted", SnapshotJson(*info)}});
  } else {
    ctx.Print("Deleted snapshot '" + args.volume + "@" + args.snapshot + "'\n");
  }
  return kExitOk;
}

int DiffSnapshots(CommandContext& ctx, const SnapshotArgs& args) {
  if (args.snapshot == kLive) {
    return ctx.Fail(
        Status::InvalidArgument("FROM must be a snapshot; '-' (the live volume) can only be TO"));
  }
  const bool to_live = args.to == kLive;
  auto extents = ctx.pool().Diff(args.volume, args.snapshot, to_live ? std::string() : args.to);
  if (!extents.ok()) return ctx.Fail(extents.status());
  uint64_t changed = 0, zeroed = 0;
  for (const Extent& e : *extents) (e.zero ? zeroed : changed) += e.length_bytes;
  if (ctx.json()) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const Extent& e : *extents) list.push_back(ExtentJson(e));
    ctx.PrintJson(
        {{"volume", args.volume},
         {"from", args.snapshot},
         {"to", to_live ? nlohmann::ordered_json(nullptr) : nlohmann::ordered_json(args.to)},
         {"extent_count", extents->size()},
         {"changed_bytes", changed + zeroed},
         {"data_bytes", changed},
         {"zeroed_bytes", zeroed},
         {"extents", list}});
    return kExitOk;
  }
  Table table({"OFFSET", "LENGTH", "CHANGE"});
  table.RightAlign(0);
  table.RightAlign(1);
  for (const Extent& e : *extents) {
    table.AddRow(
        {std::to_string(e.offset_bytes), ExactBytes(e.length_bytes), e.zero ? "zeroed" : "data"});
  }
  if (!extents->empty()) ctx.Print(table.Render());
  const std::string to = to_live ? "the live volume" : "'" + args.volume + "@" + args.to + "'";
  ctx.Print(std::to_string(extents->size()) + " extent" + (extents->size() == 1 ? "" : "s") +
            " changed from '" + args.volume + "@" + args.snapshot + "' to " + to + ": " +
            HumanBytes(changed) + " of data, " + HumanBytes(zeroed) + " zeroed\n");
  return kExitOk;
}

int CloneSnapshot(CommandContext& ctx, const SnapshotArgs& args) {
  if (Status s = CheckNotRestoring(ctx.pool(), args.volume, "cloned"); !s.ok()) {
    return ctx.Fail(s);
  }
  auto info = ctx.pool().Clone(args.volume, args.snapshot, args.new_volume);
  if (!info.ok()) return ctx.Fail(info.status());
  if (Status s = ctx.pool().Commit(); !s.ok()) return ctx.Fail(s);
  if (ctx.json()) {
    ctx.PrintJson(VolumeJson(*info));
  } else {
    ctx.Print("Cloned '" + args.volume + "@" + args.snapshot + "' to new volume '" +
              args.new_volume + "' (" + HumanBytes(info->size_bytes) + ")\n");
  }
  return kExitOk;
}

int Rollback(CommandContext& ctx, const SnapshotArgs& args) {
  auto snap = FindSnapshot(ctx.pool(), args.volume, args.snapshot);
  if (!snap.ok()) {
    // Name the volume first when it is the one missing.
    if (auto v = ctx.pool().GetVolume(args.volume); !v.ok()) return ctx.Fail(v.status());
    return ctx.Fail(snap.status());
  }
  if (Status s = ctx.pool().Rollback(args.volume, args.snapshot); !s.ok()) return ctx.Fail(s);
  if (Status s = ctx.pool().Commit(); !s.ok()) return ctx.Fail(s);
  auto info = ctx.pool().GetVolume(args.volume);
  if (!info.ok()) return ctx.Fail(info.status());
  if (ctx.json()) {
    ctx.PrintJson({{"volume", VolumeJson(*info)}, {"snapshot", SnapshotJson(*snap)}});
  } else {
    ctx.Print("Rolled volume '" + args.volume + "' back to snapshot '" + args.snapshot +
              "' (taken " + HumanTime(snap->created_unix_ns) + ")\n");
  }
  return kExitOk;
}

void AddSnapshotArg(CLI::App* cmd, std::string& snapshot, const std::string& name = "SNAP",
                    const std::string& description = "Snapshot name") {
  cmd->add_option(name, snapshot, description)->required()->check(NameValidator("snapshot name"));
}

}  // namespace

void AddSnapshotCommands(CLI::App& app, int& exit_code, Executor& executor) {
  CLI::App* snapshot =
      app.add_subcommand("snapshot", "Create, list, delete and compare snapshots of a volume");
  snapshot->footer(HelpFooter());
  snapshot->require_subcommand(1);

  auto run = [&exit_code, &executor](const std::shared_ptr<SnapshotArgs>& args,
                                     int (*body)(CommandContext&, const SnapshotArgs&)) {
    exit_code = executor.RunOnPool(args->pool, {args->json},
                                   [args, body](CommandContext& ctx) { return body(ctx, *args); });
  };

  {
    auto args = std::make_shared<SnapshotArgs>();
    CLI::App* cmd = AddCommand(*snapshot, "create",
                               "Take a read-only, point-in-time snapshot of a volume (O(1))");
    AddPoolArg(cmd, args->pool);
    AddVolumeArg(cmd, args->volume);
    AddSnapshotArg(cmd, args->snapshot, "SNAP", "Name of the new snapshot");
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, run] { run(args, CreateSnapshot); });
  }
  {
    auto args = std::make_shared<SnapshotArgs>();
    CLI::App* cmd = AddCommand(*snapshot, "list",
                               "List a volume's snapshots, oldest first, with the bytes each "
                               "holds alone (exclusive) and shares");
    AddPoolArg(cmd, args->pool);
    AddVolumeArg(cmd, args->volume);
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, run] { run(args, ListSnapshots); });
  }
  {
    auto args = std::make_shared<SnapshotArgs>();
    CLI::App* cmd = AddCommand(*snapshot, "delete", "Delete a snapshot");
    AddPoolArg(cmd, args->pool);
    AddVolumeArg(cmd, args->volume);
    AddSnapshotArg(cmd, args->snapshot);
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, run] { run(args, DeleteSnapshot); });
  }
  {
    auto args = std::make_shared<SnapshotArgs>();
    CLI::App* cmd = AddCommand(
        *snapshot, "diff",
        "List the extents that changed from snapshot FROM to snapshot TO, or to the live\n"
        "volume when TO is - or omitted (\"zeroed\": trimmed or zeroed in the newer image)");
    AddPoolArg(cmd, args->pool);
    AddVolumeArg(cmd, args->volume);
    AddSnapshotArg(cmd, args->snapshot, "FROM", "The older snapshot");
    cmd->add_option("TO", args->to, "The newer snapshot, or - for the live volume (default)")
        ->check(CLI::Validator(
            [](std::string& value) -> std::string {
              if (value == kLive) return std::string();
              Status s = ValidateName(value, "snapshot name");
              return s.ok() ? std::string() : s.message();
            },
            "", "snapshot or -"));
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, run] { run(args, DiffSnapshots); });
  }
  {
    auto args = std::make_shared<SnapshotArgs>();
    CLI::App* cmd = AddCommand(app, "clone",
                               "Make a new writable volume from a snapshot (O(1); the two are "
                               "independent afterwards)");
    AddPoolArg(cmd, args->pool);
    auto ref = std::make_shared<std::string>();
    cmd->add_option("VOL@SNAP", *ref, "The snapshot to clone")
        ->required()
        ->check(VolumeRefValidator(true));
    AddVolumeArg(cmd, args->new_volume, "Name of the new volume");
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, ref, run] {
      const VolumeRef parsed = ParseVolumeRef(*ref, true).value();
      args->volume = parsed.volume;
      args->snapshot = parsed.snapshot;
      run(args, CloneSnapshot);
    });
  }
  {
    auto args = std::make_shared<SnapshotArgs>();
    CLI::App* cmd = AddCommand(app, "rollback",
                               "Reset a volume to one of its snapshots (O(1)); writes made "
                               "since the snapshot are lost.\nRefused while the volume is in "
                               "use (exported by `snapdisk serve`)");
    AddPoolArg(cmd, args->pool);
    AddVolumeArg(cmd, args->volume);
    AddSnapshotArg(cmd, args->snapshot);
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, run] { run(args, Rollback); });
  }
}

}  // namespace snapdisk::cli
