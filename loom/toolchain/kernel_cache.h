// The kernel cache on disk (BuildOptions::cache_dir, default ~/.cache/loom/kernels): what it
// holds, and pruning it least recently used first. The local builder keeps it under a size cap
// (BuildOptions::cache_max_bytes, 5 GiB by default) through MaybeCapKernelCache; `loom cache
// info|prune` (cli/cache_command.cc) shows and prunes it by hand.
//
// An entry is the set of files that share a content hash in one folder: `<hash>.so` + `<hash>.cc`
// (CPU kernels and the objects of exported models), `<hash>.cubin` + `<hash>.cu` (CUDA kernels),
// `received/<sha256>.so|.cubin` (artifacts an agent received). Its last use is the newest
// modification time of its files: the builder touches an artifact on every cache hit. Temporary
// files of a build (`tmp-*`) older than an hour are leftovers of a killed build and are pruned
// with the rest. Nothing else in the folder is ever removed, so pointing the cache at a folder
// with other files in it loses none of them.
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>
#include <string_view>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/time/time.h"

namespace loom::tune {

// The default size cap of the kernel cache (5 GiB, about 250k CPU candidates).
inline constexpr int64_t kDefaultKernelCacheMaxBytes = int64_t{5} << 30;

struct KernelCacheInfo {
  std::string dir;
  int64_t entries = 0;
  int64_t files = 0;
  int64_t bytes = 0;                             // of the entries' files
  absl::Time oldest_use = absl::InfinitePast();  // InfinitePast when there is no entry
  absl::Time newest_use = absl::InfinitePast();
  int64_t temp_files = 0;  // tmp-* files (builds in progress, or leftovers)
  int64_t temp_bytes = 0;
  int64_t other_files = 0;  // files the cache does not own (never pruned)
};

// kNotFound when `dir` does not exist, kFailedPrecondition when it is not a folder.
absl::StatusOr<KernelCacheInfo> InspectKernelCache(const std::string& dir);

struct PruneOptions {
  // Remove least recently used entries until the entries take at most this many bytes; negative:
  // no size limit.
  int64_t max_bytes = -1;
  // Remove entries last used longer ago than this; InfiniteDuration: no age limit.
  absl::Duration older_than = absl::InfiniteDuration();
  // Entries used within this span of `now` are kept whatever the limits (a build or link in
  // progress may be about to read them).
  absl::Duration keep_used_within = absl::ZeroDuration();
  absl::Time now = absl::Now();
  // Report what would be removed without removing it.
  bool dry_run = false;
};

struct PruneResult {
  int64_t removed_entries = 0;
  int64_t removed_bytes = 0;  // stale temporary files included
  int64_t kept_entries = 0;
  int64_t kept_bytes = 0;
};

// Removes the entries the options select, least recently used first. A file that another
// process removed meanwhile is not an error. kNotFound / kFailedPrecondition as InspectKernelCache;
// kInvalidArgument for negative durations.
absl::StatusOr<PruneResult> PruneKernelCache(const std::string& dir, const PruneOptions& options);

// The builder's automatic cap: when the entries in `dir` take more than `max_bytes`, prunes
// them to 90% of it (so that the next builds do not prune again at once), keeping entries used
// in the last ten minutes. max_bytes <= 0: no cap. Returns what was removed.
absl::StatusOr<PruneResult> CapKernelCache(const std::string& dir, int64_t max_bytes);

// Marks a cache artifact as used now (its modification time), for least-recently-used pruning.
// Best effort: a failure (read-only cache) is ignored.
void TouchCacheEntry(const std::string& path);

// The builders' side of the cache (local_builder.cc, nvrtc_builder.cc).

// The content hash that names an entry: FNV-1a over 128 bits of `parts` (the compiler's identity,
// its flags, the source), with a separator between parts so that ("ab", "c") != ("a", "bc"); 32
// hex digits, stable across runs and machines, wide enough that distinct kernels do not collide
// in a cache of any realistic size.
std::string KernelCacheKey(std::initializer_list<std::string_view> parts);

// Creates the cache folder `dir` and its parents when missing. kFailedPrecondition naming the
// folder when it cannot, or when `dir` is not a folder.
absl::Status CreateKernelCacheDir(const std::string& dir);

// The files of one entry a builder writes: the artifact and its source beside it (kept for
// inspection), first written under temporary names unique to this process (`tmp-<key>-<pid>-<n>`)
// and then renamed into place, atomically, so that a concurrent builder (another thread or
// process sharing the cache) never sees a partial file.
struct KernelCacheEntry {
  // The entry `key` of `dir`, with file name endings `artifact_ext` (".so") and `source_ext`
  // (".cc"); fresh temporary names at each call.
  static KernelCacheEntry Make(const std::string& dir, const std::string& key,
                               absl::string_view artifact_ext, absl::string_view source_ext);

  // Renames the temporary source, then the temporary artifact into place. An error (kInternal)
  // names the artifact's place when the artifact cannot move.
  absl::Status Publish() const;
  // Removes the temporaries (best effort: after Publish there is nothing left to remove).
  void RemoveTemporaries() const;

  std::string artifact;       // <dir>/<key><artifact_ext>
  std::string source;         // <dir>/<key><source_ext>
  std::string temp_artifact;  // <dir>/tmp-<key>-<pid>-<n><artifact_ext>
  std::string temp_source;    // <dir>/tmp-<key>-<pid>-<n><source_ext>
};

// Writes `data` to `path` (created or truncated); false when it cannot (errno says why).
bool WriteCacheFile(const std::string& path, std::string_view data);

// "2G", "512M", "1.5GiB", "100k", "4096": a size in bytes, binary units (K = 1024, ...), case
// insensitive. kInvalidArgument naming the text otherwise.
absl::StatusOr<int64_t> ParseByteSize(std::string_view text);
// "30d", "12h", "90m", "45s", "2w": a positive age. kInvalidArgument naming the text otherwise.
absl::StatusOr<absl::Duration> ParseAge(std::string_view text);
// 5368709120 -> "5.0 GiB", 2048 -> "2.0 KiB", 12 -> "12 B".
std::string FormatByteSize(int64_t bytes);

}  // namespace loom::tune
