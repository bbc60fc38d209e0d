// `loom cache info|prune`: what the kernel cache (~/.cache/loom/kernels, or --cache-dir) holds,
// and pruning it least recently used first by size (--max-size 2G) and age (--older-than 30d).
// The builder also keeps the cache under a 5 GiB cap by itself (toolchain/kernel_cache.h).
#include <cstdio>

#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "loom/cli/commands.h"
#include "loom/cli/json_output.h"
#include "loom/toolchain/builder.h"
#include "loom/toolchain/kernel_cache.h"
#include "nlohmann/json.hpp"

namespace loom::cli {
namespace {

struct CacheOptions {
  std::string cache_dir;  // empty: the default (tune::DefaultKernelCacheDir)
  bool json = false;
  std::string max_size;    // empty: not given
  std::string older_than;  // empty: not given
  bool dry_run = false;
};

std::string Dir(const CacheOptions& o) {
  return o.cache_dir.empty() ? tune::DefaultKernelCacheDir() : o.cache_dir;
}

std::string When(absl::Time t) {
  return absl::FormatTime("%Y-%m-%d %H:%M:%S", t, absl::LocalTimeZone());
}

void RunInfo(const CacheOptions& o) {
  const std::string dir = Dir(o);
  absl::StatusOr<tune::KernelCacheInfo> info = tune::InspectKernelCache(dir);
  const bool missing = absl::IsNotFound(info.status());
  if (missing) info = tune::KernelCacheInfo{.dir = dir};
  FailIfError(info.status());
  if (o.json) {
    auto time = [](absl::Time t) {
      return t == absl::InfinitePast()
                 ? nlohmann::json(nullptr)
                 : nlohmann::json(absl::FormatTime(absl::RFC3339_sec, t, absl::UTCTimeZone()));
    };
    nlohmann::json j = {{"dir", dir},
                        {"exists", !missing},
                        {"entries", info->entries},
                        {"files", info->files},
                        {"bytes", info->bytes},
                        {"cap_bytes", tune::kDefaultKernelCacheMaxBytes},
                        {"oldest_use", time(info->oldest_use)},
                        {"newest_use", time(info->newest_use)},
                        {"temp_files", info->temp_files},
                        {"temp_bytes", info->temp_bytes},
                        {"other_files", info->other_files}};
    PrintJson(j);
    return;
  }
  std::printf("kernel cache %s%s\n", dir.c_str(), missing ? " (does not exist yet)" : "");
  std::printf("  %lld entries, %lld files, %s (automatic cap %s, least recently used first)\n",
              static_cast<long long>(info->entries), static_cast<long long>(info->files),
              tune::FormatByteSize(info->bytes).c_str(),
              tune::FormatByteSize(tune::kDefaultKernelCacheMaxBytes).c_str());
  if (info->entries > 0) {
    std::printf("  least recently used %s, most recently used %s\n", When(info->oldest_use).c_str(),
                When(info->newest_use).c_str());
  }
  if (info->temp_files > 0) {
    std::printf("  %lld temporary files (%s): builds in progress or leftovers\n",
                static_cast<long long>(info->temp_files),
                tune::FormatByteSize(info->temp_bytes).c_str());
  }
  if (info->other_files > 0) {
    std::printf("  %lld other files (not the cache's; never pruned)\n",
                static_cast<long long>(info->other_files));
  }
}

void RunPrune(const CacheOptions& o) {
  tune::PruneOptions po;
  po.max_bytes = tune::kDefaultKernelCacheMaxBytes;
  if (!o.max_size.empty()) {
    absl::StatusOr<int64_t> bytes = tune::ParseByteSize(o.max_size);
    if (!bytes.ok())
      Fail(absl::InvalidArgumentError(absl::StrCat("--max-size: ", bytes.status().message())));
    po.max_bytes = *bytes;
  }
  if (!o.older_than.empty()) {
    absl::StatusOr<absl::Duration> age = tune::ParseAge(o.older_than);
    if (!age.ok())
      Fail(absl::InvalidArgumentError(absl::StrCat("--older-than: ", age.status().message())));
    po.older_than = *age;
    if (o.max_size.empty()) po.max_bytes = -1;  // only the age was asked for
  }
  po.dry_run = o.dry_run;
  const std::string dir = Dir(o);
  absl::StatusOr<tune::PruneResult> r = tune::PruneKernelCache(dir, po);
  if (absl::IsNotFound(r.status())) {
    if (o.json) {
      PrintJson({{"dir", dir}, {"exists", false}, {"dry_run", o.dry_run}});
      return;
    }
    std::printf("kernel cache %s does not exist: nothing to prune\n", dir.c_str());
    return;
  }
  FailIfError(r.status());
  if (o.json) {
    PrintJson({{"dir", dir},
               {"exists", true},
               {"dry_run", o.dry_run},
               {"removed_entries", r->removed_entries},
               {"removed_bytes", r->removed_bytes},
               {"kept_entries", r->kept_entries},
               {"kept_bytes", r->kept_bytes}});
    return;
  }
  std::printf("%s %lld entries (%s), kept %lld (%s) in %s\n",
              o.dry_run ? "would remove" : "removed", static_cast<long long>(r->removed_entries),
              tune::FormatByteSize(r->removed_bytes).c_str(),
              static_cast<long long>(r->kept_entries), tune::FormatByteSize(r->kept_bytes).c_str(),
              dir.c_str());
}

}  // namespace

void RegisterCacheCommand(CLI::App& app) {
  auto o = std::make_shared<CacheOptions>();
  auto* cache = app.add_subcommand("cache", "Show or prune the kernel cache");
  cache->require_subcommand(1);
  auto add_dir = [&](CLI::App* c) {
    c->add_option("--cache-dir", o->cache_dir,
                  "Kernel cache folder (default: $XDG_CACHE_HOME/loom/kernels or "
                  "~/.cache/loom/kernels)");
  };
  auto* info = cache->add_subcommand("info", "Entries, size and last use of the kernel cache");
  add_dir(info);
  AddJsonFlag(info, &o->json, "One JSON object");
  info->callback([o] { RunInfo(*o); });

  auto* prune = cache->add_subcommand(
      "prune",
      "Remove least recently used kernels down to --max-size and those unused for --older-than "
      "(neither: down to the automatic 5G cap)");
  add_dir(prune);
  prune->add_option("--max-size", o->max_size, "Largest size to keep, e.g. 2G, 500M (K=1024)");
  prune->add_option("--older-than", o->older_than,
                    "Remove kernels unused for this long, e.g. 30d, 12h, 2w");
  prune->add_flag("--dry-run", o->dry_run, "Only report what would be removed");
  AddJsonFlag(prune, &o->json, "One JSON object");
  prune->callback([o] { RunPrune(*o); });
}

}  // namespace loom::cli
