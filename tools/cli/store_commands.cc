// `snapdisk store create|verify|expire|report`: the WORM store backups go to
// (engine/worm_store.h). These commands touch no pool: they open the store's
// directory in this process (OpenStore).
#include <bit>

#include "tools/cli/command_util.h"
#include "tools/cli/exit_codes.h"
#include "tools/cli/report.h"
#include "tools/cli/store_util.h"

namespace snapdisk::cli {

namespace {

constexpr uint64_t kMinChunkBytes = uint64_t{64} << 10;
constexpr uint64_t kMaxChunkBytes = uint64_t{64} << 20;
constexpr int kMinZstdLevel = 1;
constexpr int kMaxZstdLevel = 19;

struct StoreArgs {
  std::string dir;
  std::string chunk_size;
  std::string zstd_level;
  std::string volume;
  bool json = false;
};

Status CheckChunkSize(const std::string& text) {
  auto size = ParseSize(text);
  if (!size.ok()) return size.status();
  if (*size < kMinChunkBytes || *size > kMaxChunkBytes || !std::has_single_bit(*size)) {
    return Status::InvalidArgument("chunk size must be a power of two from 64K to 64M (got " +
                                   text + ")");
  }
  return Status::OK();
}

Status CheckZstdLevel(const std::string& text) {
  const auto bad = [&] {
    return Status::InvalidArgument("zstd level must be " + std::to_string(kMinZstdLevel) + "-" +
                                   std::to_string(kMaxZstdLevel) + " (got " + text + ")");
  };
  if (text.empty() || text.size() > 2) return bad();
  for (char c : text) {
    if (c < '0' || c > '9') return bad();
  }
  const int level = std::stoi(text);
  if (level < kMinZstdLevel || level > kMaxZstdLevel) return bad();
  return Status::OK();
}

int CreateStore(CommandContext& ctx, const StoreArgs& args) {
  WormStoreConfig config;
  if (!args.chunk_size.empty()) config.chunk_bytes = SizeOf(args.chunk_size);
  if (!args.zstd_level.empty()) config.zstd_level = std::stoi(args.zstd_level);
  const std::string dir = ctx.ResolvePath(args.dir);
  if (Status s = CreateDirStore(dir, config); !s.ok()) return ctx.Fail(s);
  if (ctx.json()) {
    ctx.PrintJson({{"store", args.dir},
                   {"chunk_bytes", config.chunk_bytes},
                   {"zstd_level", config.zstd_level}});
  } else {
    ctx.Print("Created store " + args.dir + ": " + ExactBytes(config.chunk_bytes) +
              " chunks, zstd level " + std::to_string(config.zstd_level) + "\n");
  }
  return kExitOk;
}

int VerifyStore(CommandContext& ctx, const StoreArgs& args) {
  auto store = OpenStore(ctx.ResolvePath(args.dir));
  if (!store.ok()) return ctx.Fail(store.status());
  const std::string label = "verify " + args.dir;
  auto report = (*store)->Verify([&](uint64_t done, uint64_t total) {
    ctx.out().Progress(label, done, total, ProgressUnit::kBytes);
    return !ctx.out().Cancelled();
  });
  ctx.out().ProgressEnd();
  if (!report.ok()) return ctx.Fail(report.status());
  const WormVerifyReport& r = *report;
  if (ctx.json()) {
    nlohmann::ordered_json doc = {{"store", args.dir}};
    doc.update(WormVerifyJson(r));
    ctx.PrintJson(doc);
  } else if (r.ok()) {
    ctx.Print("store " + args.dir + " is intact: " + std::to_string(r.objects) + " objects (" +
              HumanBytes(r.bytes) + ") match their checksums and the audit log; log head sha256 " +
              r.head_sha256 + "\n");
  } else {
    std::string lines;
    for (const WormProblem& p : r.problems) lines += p.key + ": " + p.what + "\n";
    ctx.Print(lines);
  }
  if (r.ok()) return kExitOk;
  ctx.Note("verify found " + std::to_string(r.problems.size()) + " problem" +
           (r.problems.size() == 1 ? "" : "s") + " in store " + args.dir);
  return kExitProblemsFound;
}

int ExpireStore(CommandContext& ctx, const StoreArgs& args) {
  auto store = OpenStore(ctx.ResolvePath(args.dir));
  if (!store.ok()) return ctx.Fail(store.status());
  auto report = (*store)->Expire();
  if (!report.ok()) return ctx.Fail(report.status());
  if (ctx.json()) {
    ctx.PrintJson({{"store", args.dir}, {"objects", report->objects}, {"bytes", report->bytes}});
  } else {
    ctx.Print("Expired " + std::to_string(report->objects) + " object" +
              (report->objects == 1 ? "" : "s") + " (" + HumanBytes(report->bytes) +
              ") whose retention had passed from store " + args.dir + "\n");
  }
  return kExitOk;
}

int ReportStore(CommandContext& ctx, const StoreArgs& args) {
  auto store = OpenStore(ctx.ResolvePath(args.dir));
  if (!store.ok()) return ctx.Fail(store.status());
  auto reports = ReportStorage(**store, args.volume);
  if (!reports.ok()) return ctx.Fail(reports.status());
  if (ctx.json()) {
    nlohmann::ordered_json list = nlohmann::ordered_json::array();
    for (const StorageReport& r : *reports) list.push_back(StorageReportJson(r));
    ctx.PrintJson(list);
    return kExitOk;
  }
  if (reports->empty()) {
    ctx.Print("no backup sets" + (args.volume.empty() ? "" : " of volume '" + args.volume + "'") +
              " in store " + args.dir + "\n");
    return kExitOk;
  }
  Table table({"VOLUME", "SIZE", "SETS", "SNAPSHOT", "PHYSICAL", "LOG", "FREE QUOTA", "BILLABLE"});
  for (size_t c = 1; c <= 7; ++c) table.RightAlign(c);
  for (const StorageReport& r : *reports) {
    table.AddRow({r.volume, HumanBytes(r.volume_size_bytes), std::to_string(r.sets),
                  HumanBytes(r.snapshot_bytes), HumanBytes(r.physical_bytes),
                  HumanBytes(r.log_bytes), HumanBytes(r.free_quota_bytes),
                  HumanBytes(r.billable_bytes)});
  }
  ctx.Print(table.Render());
  return kExitOk;
}

}  // namespace

void AddStoreCommands(CLI::App& app, int& exit_code, Executor& executor) {
  CLI::App* store = app.add_subcommand(
      "store", "Create, verify, expire and report on a WORM store (where backups go)");
  store->footer(HelpFooter());
  store->require_subcommand(1);

  auto run = [&exit_code, &executor](const std::shared_ptr<StoreArgs>& args,
                                     int (*body)(CommandContext&, const StoreArgs&)) {
    exit_code = executor.RunWithoutPool(
        "", {args->json}, [args, body](CommandContext& ctx) { return body(ctx, *args); });
  };
  auto add_dir = [](CLI::App* cmd, StoreArgs& args) {
    cmd->add_option("DIR", args.dir, "The store's directory")->required();
  };

  {
    auto args = std::make_shared<StoreArgs>();
    CLI::App* cmd = AddCommand(*store, "create",
                               "Make DIR (absent or empty) a WORM store: write-once objects with "
                               "retention locks,\nchecksums and a hash-chained audit log");
    add_dir(cmd, *args);
    cmd->add_option("--chunk-size", args->chunk_size,
                    "Size backups cut data into: a power of two from 64K to 64M (default 1M)")
        ->check(CheckValidator(CheckChunkSize, "size"))
        ->type_name("SIZE");
    cmd->add_option("--zstd-level", args->zstd_level, "zstd compression level, 1-19 (default 1)")
        ->check(CheckValidator(CheckZstdLevel, "level"))
        ->type_name("N");
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, run] { run(args, CreateStore); });
  }
  {
    auto args = std::make_shared<StoreArgs>();
    CLI::App* cmd = AddCommand(
        *store, "verify",
        "Read every object and check it against its checksum and the audit log, and the log's\n"
        "hash chain (exit 0 intact, 1 problems found: one line per bad object). Keep the\n"
        "printed log head hash elsewhere to also detect a rewrite of the whole store");
    add_dir(cmd, *args);
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, run] { run(args, VerifyStore); });
  }
  {
    auto args = std::make_shared<StoreArgs>();
    CLI::App* cmd = AddCommand(*store, "expire",
                               "The expiry pass: remove every object whose retention has passed "
                               "(the only way\nanything leaves a store)");
    add_dir(cmd, *args);
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, run] { run(args, ExpireStore); });
  }
  {
    auto args = std::make_shared<StoreArgs>();
    CLI::App* cmd = AddCommand(
        *store, "report",
        "Storage used by each volume's backups, by method (snapshot, physical, log), against\n"
        "the free quota (half the volume's size; physical and log bytes beyond it are billable)");
    add_dir(cmd, *args);
    cmd->add_option("--volume", args->volume, "Only this volume")
        ->check(NameValidator("volume name"))
        ->type_name("VOL");
    AddJsonFlag(cmd, args->json);
    cmd->callback([args, run] { run(args, ReportStore); });
  }
}

}  // namespace snapdisk::cli
