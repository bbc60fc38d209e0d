// The kernel cache's inventory and least-recently-used pruning (kernel_cache.h).
#include "loom/toolchain/kernel_cache.h"

#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <map>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"

namespace loom::tune {
namespace {

namespace fs = std::filesystem;

// Stale temporary files: no build runs for an hour (the build timeout is a minute).
constexpr absl::Duration kStaleTemp = absl::Hours(1);

bool IsHex(std::string_view s) {
  return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f');
  });
}

// "<hash>.<ext>" with a 32-digit (builder) or 64-digit (SHA-256, received) hash and one of the
// extensions builders write; returns the hash, empty otherwise.
std::string_view EntryStem(std::string_view name) {
  const size_t dot = name.find('.');
  if (dot == std::string_view::npos) return {};
  const std::string_view stem = name.substr(0, dot);
  const std::string_view ext = name.substr(dot + 1);
  if ((stem.size() != 32 && stem.size() != 64) || !IsHex(stem)) return {};
  for (std::string_view known : {"so", "cc", "cubin", "cu", "o"}) {
    if (ext == known) return stem;
  }
  return {};
}

absl::Time ToAbslTime(fs::file_time_type t) {
  return absl::FromChrono(std::chrono::time_point_cast<std::chrono::system_clock::duration>(
      std::chrono::file_clock::to_sys(t)));
}

struct Entry {
  std::vector<fs::path> files;
  int64_t bytes = 0;
  absl::Time last_use = absl::InfinitePast();
};

struct Inventory {
  std::vector<Entry> entries;
  std::vector<std::pair<fs::path, absl::Time>> temps;  // with their modification time
  int64_t temp_bytes = 0;
  int64_t other_files = 0;
};

absl::Status CheckDir(const std::string& dir) {
  std::error_code ec;
  if (!fs::exists(dir, ec)) {
    return absl::NotFoundError(absl::StrCat("the kernel cache ", dir, " does not exist"));
  }
  if (!fs::is_directory(dir, ec)) {
    return absl::FailedPreconditionError(
        absl::StrCat("the kernel cache ", dir, " is not a folder"));
  }
  return absl::OkStatus();
}

// Lists `dir` and its `received/` folder. Files that vanish meanwhile (another process pruning
// or renaming) are skipped.
absl::StatusOr<Inventory> Scan(const std::string& dir) {
  if (absl::Status s = CheckDir(dir); !s.ok()) return s;
  Inventory inv;
  std::map<std::pair<std::string, std::string>, Entry> by_stem;  // (folder, hash)
  for (const fs::path& folder : {fs::path(dir), fs::path(dir) / "received"}) {
    std::error_code ec;
    fs::directory_iterator it(folder, ec);
    if (ec) {
      if (folder != fs::path(dir)) continue;  // no received/ folder
      return absl::PermissionDeniedError(
          absl::StrCat("cannot list the kernel cache ", dir, ": ", ec.message()));
    }
    for (; it != fs::directory_iterator(); it.increment(ec)) {
      if (ec) break;
      std::error_code fe;
      if (!it->is_regular_file(fe)) {
        if (it->path().filename() != "received") ++inv.other_files;
        continue;
      }
      const uint64_t size = it->file_size(fe);
      if (fe) continue;
      const fs::file_time_type mtime = it->last_write_time(fe);
      if (fe) continue;
      const std::string name = it->path().filename().string();
      if (name.rfind("tmp-", 0) == 0) {
        inv.temps.emplace_back(it->path(), ToAbslTime(mtime));
        inv.temp_bytes += static_cast<int64_t>(size);
        continue;
      }
      const std::string_view stem = EntryStem(name);
      if (stem.empty()) {
        ++inv.other_files;
        continue;
      }
      Entry& e = by_stem[{folder.string(), std::string(stem)}];
      e.files.push_back(it->path());
      e.bytes += static_cast<int64_t>(size);
      e.last_use = std::max(e.last_use, ToAbslTime(mtime));
    }
    if (ec) {
      return absl::PermissionDeniedError(
          absl::StrCat("cannot list the kernel cache ", folder.string(), ": ", ec.message()));
    }
  }
  inv.entries.reserve(by_stem.size());
  for (auto& [_, e] : by_stem) inv.entries.push_back(std::move(e));
  // Least recently used first; ties by path, so the order does not depend on the listing.
  std::sort(inv.entries.begin(), inv.entries.end(), [](const Entry& a, const Entry& b) {
    if (a.last_use != b.last_use) return a.last_use < b.last_use;
    return a.files.front() < b.files.front();
  });
  return inv;
}

}  // namespace

absl::StatusOr<KernelCacheInfo> InspectKernelCache(const std::string& dir) {
  absl::StatusOr<Inventory> inv = Scan(dir);
  if (!inv.ok()) return inv.status();
  KernelCacheInfo info;
  info.dir = dir;
  info.entries = static_cast<int64_t>(inv->entries.size());
  for (const Entry& e : inv->entries) {
    info.files += static_cast<int64_t>(e.files.size());
    info.bytes += e.bytes;
  }
  if (!inv->entries.empty()) {
    info.oldest_use = inv->entries.front().last_use;
    info.newest_use = inv->entries.back().last_use;
  }
  info.temp_files = static_cast<int64_t>(inv->temps.size());
  info.temp_bytes = inv->temp_bytes;
  info.other_files = inv->other_files;
  return info;
}

absl::StatusOr<PruneResult> PruneKernelCache(const std::string& dir, const PruneOptions& options) {
  if (options.older_than < absl::ZeroDuration() ||
      options.keep_used_within < absl::ZeroDuration()) {
    return absl::InvalidArgumentError("PruneOptions: durations must not be negative");
  }
  absl::StatusOr<Inventory> inv = Scan(dir);
  if (!inv.ok()) return inv.status();
  PruneResult result;
  auto remove = [&](const fs::path& p) {
    if (options.dry_run) return;
    std::error_code ec;
    fs::remove(p, ec);  // already gone: another process pruned it
  };
  for (const auto& [path, mtime] : inv->temps) {
    if (options.now - mtime < kStaleTemp) continue;
    std::error_code ec;
    const uintmax_t size = fs::file_size(path, ec);
    if (!ec) result.removed_bytes += static_cast<int64_t>(size);
    remove(path);
  }
  int64_t total = 0;
  for (const Entry& e : inv->entries) total += e.bytes;
  for (const Entry& e : inv->entries) {  // least recently used first
    const absl::Duration age = options.now - e.last_use;
    const bool too_old = options.older_than != absl::InfiniteDuration() && age > options.older_than;
    const bool over = options.max_bytes >= 0 && total > options.max_bytes;
    if ((too_old || over) && age >= options.keep_used_within) {
      for (const fs::path& f : e.files) remove(f);
      ++result.removed_entries;
      result.removed_bytes += e.bytes;
      total -= e.bytes;
    } else {
      ++result.kept_entries;
      result.kept_bytes += e.bytes;
    }
  }
  return result;
}

absl::StatusOr<PruneResult> CapKernelCache(const std::string& dir, int64_t max_bytes) {
  if (max_bytes <= 0) return PruneResult{};
  absl::StatusOr<KernelCacheInfo> info = InspectKernelCache(dir);
  if (!info.ok()) return info.status();
  if (info->bytes <= max_bytes)
    return PruneResult{.kept_entries = info->entries, .kept_bytes = info->bytes};
  return PruneKernelCache(dir,
                          {.max_bytes = max_bytes / 10 * 9, .keep_used_within = absl::Minutes(10)});
}

std::string KernelCacheKey(std::initializer_list<std::string_view> parts) {
  unsigned __int128 h =
      (static_cast<unsigned __int128>(0x6c62272e07bb0142ULL) << 64) | 0x62b821756295c58dULL;
  const unsigned __int128 prime = (static_cast<unsigned __int128>(1) << 88) + 0x13b;
  for (std::string_view part : parts) {
    for (unsigned char c : part) {
      h ^= c;
      h *= prime;
    }
    h ^= 0xff;  // part separator
    h *= prime;
  }
  return absl::StrFormat("%016x%016x", static_cast<uint64_t>(h >> 64), static_cast<uint64_t>(h));
}

absl::Status CreateKernelCacheDir(const std::string& dir) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  if (ec || !fs::is_directory(dir)) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create the kernel cache directory ",
                                                      dir, ": ",
                                                      ec ? ec.message() : "not a directory"));
  }
  return absl::OkStatus();
}

KernelCacheEntry KernelCacheEntry::Make(const std::string& dir, const std::string& key,
                                        absl::string_view artifact_ext,
                                        absl::string_view source_ext) {
  static std::atomic<uint64_t> counter{0};  // unique temporary names within this process
  const std::string stem =
      absl::StrCat(dir, "/tmp-", key, "-", getpid(), "-", counter.fetch_add(1));
  return KernelCacheEntry{
      .artifact = absl::StrCat(dir, "/", key, artifact_ext),
      .source = absl::StrCat(dir, "/", key, source_ext),
      .temp_artifact = absl::StrCat(stem, artifact_ext),
      .temp_source = absl::StrCat(stem, source_ext),
  };
}

absl::Status KernelCacheEntry::Publish() const {
  std::error_code ec;
  fs::rename(temp_source, source, ec);  // the source is for inspection: its failure is no error
  fs::rename(temp_artifact, artifact, ec);
  if (ec) {
    return absl::InternalError(
        absl::StrCat("cannot move the artifact into ", artifact, ": ", ec.message()));
  }
  return absl::OkStatus();
}

void KernelCacheEntry::RemoveTemporaries() const {
  std::error_code ec;
  fs::remove(temp_artifact, ec);
  fs::remove(temp_source, ec);
}

bool WriteCacheFile(const std::string& path, std::string_view data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  if (!f) return false;
  f.write(data.data(), static_cast<std::streamsize>(data.size()));
  f.close();
  return static_cast<bool>(f);
}

void TouchCacheEntry(const std::string& path) {
  std::error_code ec;
  fs::last_write_time(path, fs::file_time_type::clock::now(), ec);
}

absl::StatusOr<int64_t> ParseByteSize(std::string_view view) {
  const std::string text(view);
  const std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  size_t end = 0;
  while (end < t.size() && (absl::ascii_isdigit(t[end]) || t[end] == '.')) ++end;
  std::string unit = t.substr(end);
  if (!unit.empty() && unit.back() == 'b') unit.pop_back();     // "GB", "B"
  if (unit.size() == 2 && unit.back() == 'i') unit.pop_back();  // "GiB"
  double value = 0;
  int shift = -1;
  if (unit.empty()) shift = 0;
  if (unit == "k") shift = 10;
  if (unit == "m") shift = 20;
  if (unit == "g") shift = 30;
  if (unit == "t") shift = 40;
  if (end == 0 || shift < 0 || !absl::SimpleAtod(t.substr(0, end), &value) ||
      !std::isfinite(value) || value < 0 || value * std::ldexp(1.0, shift) > 9.0e18) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad size '", text, "' (a number with an optional unit K, M, G or T, e.g. 2G)"));
  }
  return static_cast<int64_t>(std::llround(value * std::ldexp(1.0, shift)));
}

absl::StatusOr<absl::Duration> ParseAge(std::string_view view) {
  const std::string text(view);
  const std::string t = absl::AsciiStrToLower(absl::StripAsciiWhitespace(text));
  int64_t n = 0;
  absl::Duration unit;
  bool ok = t.size() >= 2 && absl::SimpleAtoi(t.substr(0, t.size() - 1), &n) && n > 0 &&
            n < (int64_t{1} << 40);
  switch (ok ? t.back() : '\0') {
    case 's':
      unit = absl::Seconds(1);
      break;
    case 'm':
      unit = absl::Minutes(1);
      break;
    case 'h':
      unit = absl::Hours(1);
      break;
    case 'd':
      unit = absl::Hours(24);
      break;
    case 'w':
      unit = absl::Hours(24 * 7);
      break;
    default:
      ok = false;
  }
  if (!ok) {
    return absl::InvalidArgumentError(absl::StrCat(
        "bad age '", text, "' (a positive whole number and a unit s, m, h, d or w, e.g. 30d)"));
  }
  return n * unit;
}

std::string FormatByteSize(int64_t bytes) {
  if (bytes < 1024) return absl::StrCat(bytes, " B");
  const char* units[] = {"KiB", "MiB", "GiB", "TiB"};
  double v = static_cast<double>(bytes) / 1024;
  int u = 0;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  return absl::StrFormat("%.1f %s", v, units[u]);
}

}  // namespace loom::tune
