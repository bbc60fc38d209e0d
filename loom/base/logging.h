// Minimal leveled logging to stderr. The CLI sets the level from --verbose/--quiet; libraries log
// through these functions rather than printing, so embedding programs can silence them.
#pragma once

#include <string_view>

#include "absl/strings/str_cat.h"

namespace loom::base {

enum class LogLevel { kDebug = 0, kInfo = 1, kWarning = 2, kError = 3, kOff = 4 };

void SetLogLevel(LogLevel level);
LogLevel GetLogLevel();
void LogLine(LogLevel level, std::string_view message);

template <typename... Args>
void LogInfo(const Args&... args) {
  if (GetLogLevel() <= LogLevel::kInfo) LogLine(LogLevel::kInfo, absl::StrCat(args...));
}
template <typename... Args>
void LogWarning(const Args&... args) {
  if (GetLogLevel() <= LogLevel::kWarning) LogLine(LogLevel::kWarning, absl::StrCat(args...));
}
template <typename... Args>
void LogDebug(const Args&... args) {
  if (GetLogLevel() <= LogLevel::kDebug) LogLine(LogLevel::kDebug, absl::StrCat(args...));
}

}  // namespace loom::base
