// Import and export of raw disk images: the bodies of `snapdisk import` and
// `snapdisk export` (volume_commands.cc registers them).
//
// Import makes a new volume and writes the image into it with many requests
// in flight (1 MiB each, up to 32 MiB in flight). Holes stay holes: on a
// regular file, SEEK_DATA/SEEK_HOLE skip the holes without reading them, and
// every all-zero block (the pool's block size) is skipped on any input, so the
// volume maps only the blocks that hold data. The volume's size is the
// image's (which must then be a multiple of 512 bytes), or --size (at least
// the image's). A pipe's size is not known in advance: the volume grows as
// the data arrives. Any failure or cancellation deletes the half-made volume
// and commits, so the pool is as before.
//
// Export writes a volume or snapshot as a raw image. To a regular file it is
// sparse: the file is truncated to the volume's size and only mapped,
// non-zero blocks are written (found with Volume::MapExtents). To a pipe,
// terminal-less stdout or a device, every byte is written in order, holes as
// zeros. A failed or cancelled export removes the file it was writing.
//
// Both report progress through ctx.out() and poll ctx.out().Cancelled().
#pragma once

#include <cstdint>
#include <string>

#include "disk/essd_profile.h"
#include "engine/volume.h"
#include "tools/cli/command_context.h"

namespace snapdisk::cli {

struct ImportArgs {
  std::string volume;
  std::string file;  // "-": stdin
  EssdLevel profile = EssdLevel::kUnlimited;
  uint64_t size_bytes = 0;  // 0: the image's size
  // Not empty: a snapshot of the imported volume with this name, taken in
  // the import's commit (an RBD export-diff stream from it applies next).
  std::string snapshot;
};
int ImportImage(CommandContext& ctx, const ImportArgs& args);

struct ExportArgs {
  std::string volume;
  std::string snapshot;  // empty: the live volume
  std::string file;      // "-": stdout
};
int ExportImage(CommandContext& ctx, const ExportArgs& args);

// Bytes of `volume` that are mapped (hold data), reading its map a window at a
// time: O(mapped blocks) time, bounded memory.
Result<uint64_t> MappedBytes(Volume& volume);

}  // namespace snapdisk::cli
