#include "loom/service/auth.h"

#include <cmath>
#include <fstream>
#include <sstream>
#include <utility>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace loom::service {
namespace {

// Users may not raise their jobs above others' unless the tokens file says so.
constexpr int kDefaultUserMaxPriority = 0;

absl::Status LineError(int line_no, absl::string_view what) {
  return absl::InvalidArgumentError(absl::StrCat("tokens line ", line_no, ": ", what));
}

// One `KEY=VALUE` limit into `limits`.
absl::Status ParseLimit(absl::string_view field, int line_no, UserLimits& limits) {
  std::vector<absl::string_view> kv = absl::StrSplit(field, absl::MaxSplits('=', 1));
  if (kv.size() != 2) {
    return LineError(line_no, absl::StrCat("expected KEY=VALUE after the role, got '", field, "'"));
  }
  const absl::string_view key = kv[0], value = kv[1];
  if (key == "max_priority") {
    int v = 0;
    if (!absl::SimpleAtoi(value, &v) || v < -1000 || v > 1000) {
      return LineError(line_no, "max_priority must be an integer in [-1000, 1000]");
    }
    limits.max_priority = v;
  } else if (key == "max_jobs") {
    int v = 0;
    if (!absl::SimpleAtoi(value, &v) || v < 1) {
      return LineError(line_no, "max_jobs must be an integer >= 1");
    }
    limits.max_jobs = v;
  } else if (key == "max_device_seconds") {
    double v = 0;
    if (!absl::SimpleAtod(value, &v) || !(v > 0) || !std::isfinite(v)) {
      return LineError(line_no, "max_device_seconds must be a number > 0");
    }
    limits.max_device_seconds = v;
  } else {
    return LineError(line_no, absl::StrCat("unknown limit '", key,
                                           "' (max_priority, max_jobs, max_device_seconds)"));
  }
  return absl::OkStatus();
}

}  // namespace

absl::string_view RoleName(Role role) {
  switch (role) {
    case Role::kUser:
      return "user";
    case Role::kAdmin:
      return "admin";
    case Role::kAgent:
      return "agent";
  }
  return "user";
}

TokenTable TokenTable::Open() {
  TokenTable t;
  t.open_ = true;
  return t;
}

absl::StatusOr<TokenTable> TokenTable::Parse(absl::string_view text) {
  TokenTable table;
  // Each name has one role and one set of limits, whichever of its tokens is used.
  absl::flat_hash_map<std::string, std::pair<int, Principal>> names;
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> f =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (f.size() < 2) {
      return LineError(line_no, absl::StrCat("expected 'TOKEN NAME [ROLE] [KEY=VALUE ...]', got ",
                                             f.size(), " field"));
    }
    Principal p{std::string(f[1]), Role::kUser};
    size_t next = 2;
    if (f.size() > 2 && !absl::StrContains(f[2], '=')) {
      if (f[2] == "admin") {
        p.role = Role::kAdmin;
      } else if (f[2] == "agent") {
        p.role = Role::kAgent;
      } else if (f[2] != "user") {
        return LineError(line_no, absl::StrCat("unknown role '", f[2], "' (user, admin or agent)"));
      }
      next = 3;
    }
    for (; next < f.size(); ++next) {
      if (p.role == Role::kAgent) {
        return LineError(line_no, "limits apply to users and admins, not to agents");
      }
      absl::Status st = ParseLimit(f[next], line_no, p.limits);
      if (!st.ok()) return st;
    }
    if (p.role == Role::kUser && !p.limits.max_priority.has_value()) {
      p.limits.max_priority = kDefaultUserMaxPriority;
    }
    auto [it, inserted] = names.try_emplace(p.user, line_no, p);
    if (!inserted && (it->second.second.role != p.role || it->second.second.limits != p.limits)) {
      return LineError(line_no,
                       absl::StrCat("'", p.user, "' has another role or other limits on line ",
                                    it->second.first));
    }
    if (!table.tokens_.try_emplace(std::string(f[0]), std::move(p)).second) {
      return LineError(line_no, absl::StrCat("duplicate token (name '", f[1], "')"));
    }
  }
  return table;
}

absl::StatusOr<TokenTable> TokenTable::Load(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read tokens file '", path, "'"));
  std::stringstream ss;
  ss << in.rdbuf();
  auto t = Parse(ss.str());
  if (!t.ok()) {
    return absl::Status(t.status().code(), absl::StrCat(path, ": ", t.status().message()));
  }
  return t;
}

absl::StatusOr<Principal> TokenTable::Authenticate(absl::string_view authorization) const {
  if (open_) return Principal{.user = "local", .role = Role::kAdmin, .anonymous = true};
  if (authorization.empty()) {
    return absl::UnauthenticatedError(
        "no token: set LOOM_TOKEN (sent as 'authorization: Bearer TOKEN')");
  }
  constexpr absl::string_view kBearer = "Bearer ";
  if (!absl::StartsWithIgnoreCase(authorization, kBearer)) {
    return absl::UnauthenticatedError("the authorization metadata must be 'Bearer TOKEN'");
  }
  absl::string_view token = absl::StripAsciiWhitespace(authorization.substr(kBearer.size()));
  auto it = tokens_.find(token);
  if (it == tokens_.end()) return absl::UnauthenticatedError("invalid token");
  return it->second;
}

}  // namespace loom::service
