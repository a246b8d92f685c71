// `snapdisk pool create|info|fsck|scrub`.
#include <unistd.h>

#include <filesystem>

#include "engine/format.h"
#include "engine/fsck.h"
#include "engine/pool_file.h"
#include "tools/cli/command_util.h"
#include "tools/cli/exit_codes.h"
#include "tools/cli/report.h"

namespace snapdisk::cli {

namespace {

struct PoolArgs {
  std::string pool;
  std::string size;
  std::string block_size = "4K";
  bool json = false;
};

std::vector<std::pair<std::string, std::string>> PoolInfoRows(const PoolInfo& info,
                                                              const std::string& path) {
  auto with_bytes = [](uint64_t v) { return HumanBytes(v) + " (" + std::to_string(v) + " bytes)"; };
  return {{"pool", path},
          {"size", with_bytes(info.pool_bytes)},
          {"block size", HumanBytes(info.block_bytes)},
          {"used", with_bytes(info.used_bytes)},
          {"free", with_bytes(info.free_bytes)},
          {"metadata", with_bytes(info.metadata_bytes)},
          {"volumes", std::to_string(info.volumes)},
          {"snapshots", std::to_string(info.snapshots)},
          {"generation", std::to_string(info.generation)}};
}

int CreatePool(CommandContext& ctx, const PoolArgs& args) {
  const std::string& path = args.pool;
  const uint64_t size = SizeOf(args.size);
  const uint64_t block = SizeOf(args.block_size);
  if (!format::IsValidBlockSize(block)) {
    return ctx.Fail(Status::InvalidArgument("block size " + args.block_size +
                                            " is not a power of two from 4K to 64K"));
  }
  std::error_code ec;
  if (std::filesystem::exists(std::filesystem::symlink_status(path, ec))) {
    return ctx.Fail(Status::AlreadyExists(path + " already exists"));
  }
  const std::filesystem::path parent = std::filesystem::path(path).parent_path();
  if (!parent.empty() && !std::filesystem::is_directory(parent, ec)) {
    return ctx.Fail(Status::NotFound("directory " + parent.string() + " does not exist"));
  }
  const std::string lock = PoolFile::LockPath(path);
  const bool lock_existed = std::filesystem::exists(lock, ec);
  PoolOptions options;
  options.block_bytes = static_cast<uint32_t>(block);
  auto pf = PoolFile::Create(path, size, options);
  if (!pf.ok()) {
    // Leave nothing behind: PoolFile removes a half-made pool, not its lock.
    if (!lock_existed && !std::filesystem::exists(path, ec)) ::unlink(lock.c_str());
    return ctx.Fail(pf.status());
  }
  const PoolInfo info = (*pf)->pool().Info();
  if (Status s = (*pf)->Close(); !s.ok()) return ctx.Fail(s);
  if (ctx.json()) {
    ctx.PrintJson(PoolInfoJson(info, path));
  } else {
    ctx.Print("Created pool " + path + ": " + HumanBytes(info.pool_bytes) + ", " +
              HumanBytes(info.block_bytes) + " blocks\n");
  }
  return kExitOk;
}

int ShowPool(CommandContext& ctx) {
  const PoolInfo info = ctx.pool().Info();
  if (Status s = ctx.pool().health(); !s.ok()) return ctx.Fail(s);
  if (ctx.json()) {
    ctx.PrintJson(PoolInfoJson(info, ctx.pool_path()));
  } else {
    ctx.Print(KeyValues(PoolInfoRows(info, ctx.pool_path())));
  }
  return kExitOk;
}

int CheckPool(CommandContext& ctx) {
  auto report = Fsck::Check(ctx.pool(), [&](uint64_t done, uint64_t total) {
    ctx.out().Progress("fsck", done, total, ProgressUnit::kBlocks);
  });
  ctx.out().ProgressEnd();
  if (!report.ok()) return ctx.Fail(report.status());
  const FsckReport& r = *report;
  if (ctx.json()) {
    nlohmann::ordered_json doc = FsckJson(r);
    doc["pool"] = ctx.pool_path();
    ctx.PrintJson(doc);
  } else if (r.clean()) {
    ctx.Print("pool " + ctx.pool_path() + " is clean: generation " + std::to_string(r.generation) +
              ", " + std::to_string(r.blocks_in_use) + " blocks in use (" +
              std::to_string(r.map_nodes) + " map nodes, " + std::to_string(r.data_blocks) +
              " data blocks, " + std::to_string(r.catalog_blocks) + " catalog blocks)\n");
  } else {
    Table table({"PROBLEM", "BLOCK", "DETAIL"});
    table.RightAlign(1);
    for (const FsckProblem& p : r.problems) {
      table.AddRow({p.kind, std::to_string(p.block), p.detail});
    }
    ctx.Print(table.Render());
  }
  if (r.clean()) return kExitOk;
  ctx.Note("fsck found " + std::to_string(r.problems.size()) + " problem" +
           (r.problems.size() == 1 ? "" : "s") + " in pool " + ctx.pool_path());
  return kExitProblemsFound;
}

int ScrubPool(CommandContext& ctx) {
  auto report = Fsck::Scrub(ctx.pool(), [&](uint64_t done, uint64_t total) {
    ctx.out().Progress("scrub", done, total, ProgressUnit::kBlocks);
  });
  ctx.out().ProgressEnd();
  if (!report.ok()) return ctx.Fail(report.status());
  const ScrubReport& r = *report;
  if (ctx.json()) {
    nlohmann::ordered_json doc = ScrubJson(r);
    doc["pool"] = ctx.pool_path();
    ctx.PrintJson(doc);
  } else if (r.clean()) {
    ctx.Print("pool " + ctx.pool_path() + ": " + std::to_string(r.blocks_read) + " data blocks (" +
              HumanBytes(r.bytes_read) + ") read, all checksums match\n");
  } else {
    Table table({"VOLUME", "SNAPSHOT", "OFFSET", "BLOCK", "DETAIL"});
    table.RightAlign(2);
    table.RightAlign(3);
    for (const ScrubProblem& p : r.problems) {
      table.AddRow({p.volume, p.snapshot.empty() ? "-" : p.snapshot, std::to_string(p.offset_bytes),
                    std::to_string(p.block), p.detail});
    }
    ctx.Print(table.Render());
  }
  if (r.clean()) return kExitOk;
  ctx.Note("scrub found " + std::to_string(r.problems.size()) + " bad block reference" +
           (r.problems.size() == 1 ? "" : "s") + " in pool " + ctx.pool_path());
  return kExitProblemsFound;
}

}  // namespace

void AddPoolCommands(CLI::App& app, int& exit_code, Executor& executor) {
  CLI::App* pool = app.add_subcommand("pool", "Create, inspect and check pools");
  pool->footer(HelpFooter());
  pool->require_subcommand(1);

  {
    auto args = std::make_shared<PoolArgs>();
    CLI::App* cmd = AddCommand(*pool, "create", "Create a pool: a new sparse file");
    AddPoolArg(cmd, args->pool);
    cmd->add_option("--size", args->size, "Pool size (rounded down to the block size)")
        ->required()
        ->check(SizeValidator())
        ->type_name("SIZE");
    cmd->add_option("--block-size", args->block_size,
                    "Block size: a power of two from 4K to 64K (default 4K)")
        ->check(SizeValidator())
        ->type_name("SIZE");
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, &exit_code, &executor] {
      exit_code = executor.RunWithoutPool(
          args->pool, {args->json}, [args](CommandContext& ctx) { return CreatePool(ctx, *args); });
    });
  }
  {
    auto args = std::make_shared<PoolArgs>();
    CLI::App* cmd = AddCommand(*pool, "info", "Show a pool's size, usage and contents");
    AddPoolArg(cmd, args->pool);
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, &exit_code, &executor] {
      exit_code = executor.RunOnPool(args->pool, {args->json}, ShowPool);
    });
  }
  {
    auto args = std::make_shared<PoolArgs>();
    CLI::App* cmd =
        AddCommand(*pool, "fsck",
                   "Check the pool's metadata: checksums of every map node and catalog block, and\n"
                   "reference counts (exit 0 clean, 1 problems found, each listed)");
    AddPoolArg(cmd, args->pool);
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, &exit_code, &executor] {
      exit_code = executor.RunOnPool(args->pool, {args->json}, CheckPool);
    });
  }
  {
    auto args = std::make_shared<PoolArgs>();
    CLI::App* cmd = AddCommand(*pool, "scrub",
                               "Read every data block and verify its checksum (exit 1 if a "
                               "block is bad; each reference to it is listed)");
    AddPoolArg(cmd, args->pool);
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, &exit_code, &executor] {
      exit_code = executor.RunOnPool(args->pool, {args->json}, ScrubPool);
    });
  }
}

}  // namespace snapdisk::cli
