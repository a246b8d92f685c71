// Writes and reads back a block through the installed library.
#include <snapdisk/disk/memory_device.h>

#include <cstdio>
#include <vector>

int main() {
  auto dev = snapdisk::MemoryDevice::Create(1 << 20);
  if (!dev.ok()) return 1;
  std::vector<std::byte> block(4096, std::byte{0x5a}), back(4096);
  if (!(*dev)->Write(4096, block).ok() || !(*dev)->Read(4096, back).ok()) return 1;
  if (back != block) return 1;
  std::printf("consumer: snapdisk package works\n");
  return 0;
}
