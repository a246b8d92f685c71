#include "disk/status.h"

#include <gtest/gtest.h>

#include <cerrno>

namespace snapdisk {
namespace {

TEST(StatusTest, OkIsFreeAndEmpty) {
  Status s;
  EXPECT_TRUE(s.ok());
  EXPECT_EQ(s.code(), StatusCode::kOk);
  EXPECT_EQ(s.ToString(), "OK");
  EXPECT_EQ(s.message(), "");
  EXPECT_EQ(sizeof(Status), sizeof(void*));
}

TEST(StatusTest, ErrorsCarryCodeAndMessage) {
  Status s = Status::Corruption("volume db offset 4096: checksum mismatch");
  EXPECT_FALSE(s.ok());
  EXPECT_TRUE(s.IsCorruption());
  EXPECT_EQ(s.ToString(), "Corruption: volume db offset 4096: checksum mismatch");
  Status copy = s;
  EXPECT_EQ(copy.ToString(), s.ToString());
  EXPECT_EQ(s.WithContext("pool p").message(), "pool p: volume db offset 4096: checksum mismatch");
  EXPECT_TRUE(Status::OK().WithContext("x").ok());
  EXPECT_EQ(s.WithMessage("another").ToString(), "Corruption: another");
  EXPECT_TRUE(Status::PermissionDenied("a").WithMessage("b").IsPermissionDenied());
  EXPECT_TRUE(Status::OK().WithMessage("x").ok());
}

TEST(StatusTest, FromErrnoMapsNoSpace) {
  EXPECT_TRUE(Status::FromErrno(ENOSPC, "write /x").IsNoSpace());
  EXPECT_TRUE(Status::FromErrno(EDQUOT, "write /x").IsNoSpace());
  Status eio = Status::FromErrno(EIO, "read /x at 4096");
  EXPECT_TRUE(eio.IsIOError());
  EXPECT_NE(eio.message().find("read /x at 4096"), std::string::npos);
}

Result<int> Half(int v) {
  if (v % 2) return Status::InvalidArgument("odd");
  return v / 2;
}

Status UseHalf(int v, int* out) {
  SNAPDISK_ASSIGN_OR_RETURN(int h, Half(v));
  *out = h;
  return Status::OK();
}

TEST(StatusTest, ResultAndMacros) {
  EXPECT_EQ(*Half(8), 4);
  EXPECT_TRUE(Half(3).status().IsInvalidArgument());
  int out = 0;
  EXPECT_TRUE(UseHalf(10, &out).ok());
  EXPECT_EQ(out, 5);
  EXPECT_TRUE(UseHalf(7, &out).IsInvalidArgument());
}

TEST(StatusDeathTest, ValueOfErrorResultAborts) {
  EXPECT_DEATH({ (void)Half(3).value(); }, "check failed");
}

}  // namespace
}  // namespace snapdisk
