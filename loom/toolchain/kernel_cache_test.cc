#include "loom/toolchain/kernel_cache.h"

#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <string>

#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/toolchain/builder.h"

namespace loom::tune {
namespace {

namespace fs = std::filesystem;
using ::testing::HasSubstr;

std::string Hash(char c, size_t n = 32) { return std::string(n, c); }

fs::file_time_type FileTime(absl::Time t) {
  return std::chrono::time_point_cast<fs::file_time_type::duration>(
      std::chrono::file_clock::from_sys(absl::ToChronoTime(t)));
}

class KernelCacheTest : public ::testing::Test {
 protected:
  void SetUp() override {
    dir_ = fs::path(::testing::TempDir()) /
           absl::StrCat("kernel_cache_test_", getpid(), "_",
                        ::testing::UnitTest::GetInstance()->current_test_info()->name());
    fs::remove_all(dir_);
    fs::create_directories(dir_);
    now_ = absl::Now();
  }
  void TearDown() override { fs::remove_all(dir_); }

  // A file of `bytes` bytes last modified `age` before now_.
  void Put(const fs::path& rel, int64_t bytes, absl::Duration age) {
    const fs::path p = dir_ / rel;
    fs::create_directories(p.parent_path());
    std::ofstream(p, std::ios::binary) << std::string(static_cast<size_t>(bytes), 'x');
    fs::last_write_time(p, FileTime(now_ - age));
  }
  bool Has(const fs::path& rel) const { return fs::exists(dir_ / rel); }

  fs::path dir_;
  absl::Time now_;
};

TEST_F(KernelCacheTest, InspectCountsEntriesTempsAndForeignFiles) {
  Put(Hash('a') + ".so", 100, absl::Hours(3));
  Put(Hash('a') + ".cc", 50, absl::Hours(2));
  Put(Hash('b') + ".cubin", 10, absl::Hours(1));
  Put("received/" + Hash('c', 64) + ".so", 7, absl::Minutes(5));
  Put("tmp-" + Hash('d') + "-12-0.cc", 3, absl::Minutes(1));
  Put("notes.txt", 1, absl::Hours(1));
  Put(Hash('e', 31) + ".so", 1, absl::Hours(1));  // not a cache name: 31 digits
  absl::StatusOr<KernelCacheInfo> info = InspectKernelCache(dir_.string());
  ASSERT_TRUE(info.ok()) << info.status();
  EXPECT_EQ(info->entries, 3);
  EXPECT_EQ(info->files, 4);
  EXPECT_EQ(info->bytes, 167);
  EXPECT_EQ(info->temp_files, 1);
  EXPECT_EQ(info->temp_bytes, 3);
  EXPECT_EQ(info->other_files, 2);
  // An entry's last use is its newest file's: a's .cc, two hours ago.
  EXPECT_LT(absl::AbsDuration(info->oldest_use - (now_ - absl::Hours(2))), absl::Seconds(1));
  EXPECT_LT(absl::AbsDuration(info->newest_use - (now_ - absl::Minutes(5))), absl::Seconds(1));
}

TEST_F(KernelCacheTest, PrunesLeastRecentlyUsedFirstDownToTheSize) {
  Put(Hash('a') + ".so", 100, absl::Hours(3));
  Put(Hash('a') + ".cc", 100, absl::Hours(3));
  Put(Hash('b') + ".so", 100, absl::Hours(2));
  Put(Hash('c') + ".so", 100, absl::Hours(1));
  Put("notes.txt", 1000, absl::Hours(100));
  absl::StatusOr<PruneResult> r = PruneKernelCache(dir_.string(), {.max_bytes = 150, .now = now_});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->removed_entries, 2);
  EXPECT_EQ(r->removed_bytes, 300);
  EXPECT_EQ(r->kept_entries, 1);
  EXPECT_EQ(r->kept_bytes, 100);
  EXPECT_FALSE(Has(Hash('a') + ".so"));
  EXPECT_FALSE(Has(Hash('a') + ".cc"));
  EXPECT_FALSE(Has(Hash('b') + ".so"));
  EXPECT_TRUE(Has(Hash('c') + ".so"));
  EXPECT_TRUE(Has("notes.txt"));  // never the cache's to remove
}

TEST_F(KernelCacheTest, PrunesByAgeAndKeepsRecentlyUsed) {
  Put(Hash('a') + ".so", 10, absl::Hours(24 * 40));
  Put("received/" + Hash('b', 64) + ".cubin", 10, absl::Hours(24 * 31));
  Put(Hash('c') + ".so", 10, absl::Hours(24 * 29));
  absl::StatusOr<PruneResult> r =
      PruneKernelCache(dir_.string(), {.older_than = absl::Hours(24 * 30), .now = now_});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->removed_entries, 2);
  EXPECT_FALSE(Has(Hash('a') + ".so"));
  EXPECT_FALSE(Has("received/" + Hash('b', 64) + ".cubin"));
  EXPECT_TRUE(Has(Hash('c') + ".so"));

  // Entries used within keep_used_within stay whatever the size limit.
  Put(Hash('d') + ".so", 10, absl::Minutes(1));
  r = PruneKernelCache(dir_.string(),
                       {.max_bytes = 0, .keep_used_within = absl::Minutes(10), .now = now_});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_EQ(r->removed_entries, 1);
  EXPECT_FALSE(Has(Hash('c') + ".so"));
  EXPECT_TRUE(Has(Hash('d') + ".so"));
}

TEST_F(KernelCacheTest, DryRunRemovesNothingAndStaleTempsGo) {
  Put(Hash('a') + ".so", 10, absl::Hours(2));
  Put("tmp-" + Hash('b') + "-1-0.so", 5, absl::Hours(2));    // a killed build's leftover
  Put("tmp-" + Hash('c') + "-1-1.so", 5, absl::Minutes(1));  // a build in progress
  absl::StatusOr<PruneResult> dry =
      PruneKernelCache(dir_.string(), {.max_bytes = 0, .now = now_, .dry_run = true});
  ASSERT_TRUE(dry.ok()) << dry.status();
  EXPECT_EQ(dry->removed_entries, 1);
  EXPECT_EQ(dry->removed_bytes, 15);
  EXPECT_TRUE(Has(Hash('a') + ".so"));
  EXPECT_TRUE(Has("tmp-" + Hash('b') + "-1-0.so"));
  absl::StatusOr<PruneResult> r = PruneKernelCache(dir_.string(), {.max_bytes = 0, .now = now_});
  ASSERT_TRUE(r.ok()) << r.status();
  EXPECT_FALSE(Has(Hash('a') + ".so"));
  EXPECT_FALSE(Has("tmp-" + Hash('b') + "-1-0.so"));
  EXPECT_TRUE(Has("tmp-" + Hash('c') + "-1-1.so"));
}

TEST_F(KernelCacheTest, ErrorsNameTheFolder) {
  const std::string missing = (dir_ / "nope").string();
  EXPECT_EQ(InspectKernelCache(missing).status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(PruneKernelCache(missing, {}).status().message(), HasSubstr("nope"));
  Put("file", 1, absl::ZeroDuration());
  EXPECT_EQ(InspectKernelCache((dir_ / "file").string()).status().code(),
            absl::StatusCode::kFailedPrecondition);
  EXPECT_EQ(PruneKernelCache(dir_.string(), {.older_than = absl::Seconds(-1)}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

TEST_F(KernelCacheTest, CapPrunesToNinetyPercentOnlyWhenOver) {
  for (char c : {'a', 'b', 'c', 'd'}) Put(Hash(c) + ".so", 100, absl::Hours('z' - c));
  absl::StatusOr<PruneResult> under = CapKernelCache(dir_.string(), 400);
  ASSERT_TRUE(under.ok()) << under.status();
  EXPECT_EQ(under->removed_entries, 0);
  // Over 250: down to 225, so two entries (a, b: the oldest) go, not just one.
  absl::StatusOr<PruneResult> over = CapKernelCache(dir_.string(), 250);
  ASSERT_TRUE(over.ok()) << over.status();
  EXPECT_EQ(over->removed_entries, 2);
  EXPECT_FALSE(Has(Hash('a') + ".so"));
  EXPECT_FALSE(Has(Hash('b') + ".so"));
  EXPECT_TRUE(Has(Hash('d') + ".so"));
}

// The builder keeps its cache under the cap: old entries go when it writes a new artifact, and a
// cache hit marks its artifact as used.
TEST_F(KernelCacheTest, BuilderCapsItsCacheAndTouchesHits) {
  for (char c : {'a', 'b', 'c'}) Put(Hash(c) + ".so", 4000, absl::Hours(24));
  absl::StatusOr<std::unique_ptr<Builder>> builder =
      MakeLocalBuilder({.cache_dir = dir_.string(), .cache_max_bytes = 6000});
  ASSERT_TRUE(builder.ok()) << builder.status();
  const ops::KernelSource src{"extern \"C\" int loom_cache_test_kernel() { return 7; }\n", ""};
  BuildResult built = (*builder)->BuildSource(src, ops::Config{});
  ASSERT_EQ(built.error, ErrorKind::kNone) << built.error_msg;
  EXPECT_FALSE(built.cache_hit);
  EXPECT_FALSE(Has(Hash('a') + ".so"));
  EXPECT_FALSE(Has(Hash('b') + ".so"));
  EXPECT_FALSE(Has(Hash('c') + ".so"));
  EXPECT_TRUE(fs::exists(built.artifact_path));

  const fs::file_time_type old = FileTime(absl::Now() - absl::Hours(5));
  fs::last_write_time(built.artifact_path, old);
  BuildResult hit = (*builder)->BuildSource(src, ops::Config{});
  ASSERT_EQ(hit.error, ErrorKind::kNone) << hit.error_msg;
  EXPECT_TRUE(hit.cache_hit);
  EXPECT_GT(fs::last_write_time(hit.artifact_path), old + std::chrono::hours(4));

  EXPECT_EQ(MakeLocalBuilder({.cache_dir = dir_.string(), .cache_max_bytes = -1}).status().code(),
            absl::StatusCode::kInvalidArgument);
}

// The builders' cache keys: FNV-1a over 128 bits (values from an independent implementation), so
// that a cache written by an earlier Loom keeps its hits; parts are separated.
TEST(KernelCacheKeyTest, StableValuesAndPartsAreSeparated) {
  EXPECT_EQ(KernelCacheKey({"g++ 12", "-O3", "int x;"}), "088c19a01d10fb21ab2c228ecc8c6a75");
  EXPECT_EQ(KernelCacheKey({"ab", "c"}), "32763e664083d94f70814487f805ad59");
  EXPECT_EQ(KernelCacheKey({"a", "bc"}), "36cc24064d83d94f708145dd58651e3b");
  EXPECT_EQ(KernelCacheKey({}), "6c62272e07bb014262b821756295c58d");
}

TEST_F(KernelCacheTest, EntryPublishesItsTemporariesAtomicallyAndRemovesTheRest) {
  const std::string key = Hash('c');
  const KernelCacheEntry a = KernelCacheEntry::Make(dir_.string(), key, ".so", ".cc");
  const KernelCacheEntry b = KernelCacheEntry::Make(dir_.string(), key, ".so", ".cc");
  EXPECT_EQ(a.artifact, (dir_ / (key + ".so")).string());
  EXPECT_EQ(a.source, (dir_ / (key + ".cc")).string());
  EXPECT_NE(a.temp_artifact, b.temp_artifact);  // unique within the process
  EXPECT_THAT(a.temp_artifact, ::testing::StartsWith((dir_ / ("tmp-" + key + "-")).string()));
  EXPECT_THAT(a.temp_source, ::testing::EndsWith(".cc"));

  ASSERT_TRUE(WriteCacheFile(a.temp_artifact, "elf"));
  ASSERT_TRUE(WriteCacheFile(a.temp_source, "int x;"));
  ASSERT_TRUE(a.Publish().ok());
  a.RemoveTemporaries();
  EXPECT_TRUE(fs::exists(a.artifact));
  EXPECT_TRUE(fs::exists(a.source));
  EXPECT_FALSE(fs::exists(a.temp_artifact));

  // Nothing to move: the error names the artifact's place; the temporaries go.
  ASSERT_TRUE(WriteCacheFile(b.temp_source, "int y;"));
  const absl::Status missing = b.Publish();
  EXPECT_EQ(missing.code(), absl::StatusCode::kInternal);
  EXPECT_THAT(missing.message(), HasSubstr("cannot move the artifact into " + b.artifact));
  b.RemoveTemporaries();
  EXPECT_FALSE(fs::exists(b.temp_source));
  EXPECT_FALSE(WriteCacheFile((dir_ / "no-such-folder" / "f").string(), "x"));
}

TEST_F(KernelCacheTest, CreateKernelCacheDirMakesParentsAndRefusesAFile) {
  EXPECT_TRUE(CreateKernelCacheDir((dir_ / "a" / "b").string()).ok());
  EXPECT_TRUE(fs::is_directory(dir_ / "a" / "b"));
  EXPECT_TRUE(CreateKernelCacheDir((dir_ / "a" / "b").string()).ok());  // exists already
  std::ofstream(dir_ / "file") << "x";
  const absl::Status s = CreateKernelCacheDir((dir_ / "file").string());
  EXPECT_EQ(s.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(s.message(),
              HasSubstr("cannot create the kernel cache directory " + (dir_ / "file").string()));
}

TEST(ParseByteSizeTest, BinaryUnits) {
  EXPECT_EQ(*ParseByteSize("4096"), 4096);
  EXPECT_EQ(*ParseByteSize("100k"), 102400);
  EXPECT_EQ(*ParseByteSize("2G"), int64_t{2} << 30);
  EXPECT_EQ(*ParseByteSize("2GB"), int64_t{2} << 30);
  EXPECT_EQ(*ParseByteSize("1.5GiB"), int64_t{3} << 29);
  EXPECT_EQ(*ParseByteSize("512m"), int64_t{512} << 20);
  EXPECT_EQ(*ParseByteSize("0"), 0);
  for (const char* bad : {"", "G", "-1G", "2X", "1e3", "2 G B", "99999999999T"}) {
    absl::StatusOr<int64_t> r = ParseByteSize(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("bad size")) << bad;
  }
}

TEST(ParseAgeTest, Units) {
  EXPECT_EQ(*ParseAge("30d"), absl::Hours(24 * 30));
  EXPECT_EQ(*ParseAge("2w"), absl::Hours(24 * 14));
  EXPECT_EQ(*ParseAge("12h"), absl::Hours(12));
  EXPECT_EQ(*ParseAge("90m"), absl::Minutes(90));
  EXPECT_EQ(*ParseAge("45s"), absl::Seconds(45));
  for (const char* bad : {"", "d", "30", "0d", "-3d", "1.5h", "3y"}) {
    absl::StatusOr<absl::Duration> r = ParseAge(bad);
    EXPECT_EQ(r.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(r.status().message(), HasSubstr("bad age")) << bad;
  }
}

TEST(FormatByteSizeTest, Units) {
  EXPECT_EQ(FormatByteSize(12), "12 B");
  EXPECT_EQ(FormatByteSize(2048), "2.0 KiB");
  EXPECT_EQ(FormatByteSize(int64_t{5} << 30), "5.0 GiB");
}

}  // namespace
}  // namespace loom::tune
