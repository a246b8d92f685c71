// snapdisk: the command-line tool. Subcommands grow with the issues; see
// `snapdisk --help`.
#include <cstdio>
#include <cstring>

int main(int argc, char** argv) {
  if (argc < 2 || std::strcmp(argv[1], "--help") == 0) {
    std::printf("usage: snapdisk COMMAND ...\n");
    return argc < 2 ? 2 : 0;
  }
  std::fprintf(stderr, "snapdisk: unknown command '%s'\n", argv[1]);
  return 2;
}
