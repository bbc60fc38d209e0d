#include "loom/service/auth.h"

#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/match.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace loom::service {

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
  int line_no = 0;
  for (absl::string_view line : absl::StrSplit(text, '\n')) {
    ++line_no;
    line = absl::StripAsciiWhitespace(line);
    if (line.empty() || line[0] == '#') continue;
    std::vector<absl::string_view> f =
        absl::StrSplit(line, absl::ByAnyChar(" \t"), absl::SkipEmpty());
    if (f.size() < 2 || f.size() > 3) {
      return absl::InvalidArgumentError(absl::StrCat(
          "tokens line ", line_no, ": expected 'TOKEN USER [ROLE]', got ", f.size(), " fields"));
    }
    Principal p{std::string(f[1]), Role::kUser};
    if (f.size() == 3) {
      if (f[2] == "admin") {
        p.role = Role::kAdmin;
      } else if (f[2] == "agent") {
        p.role = Role::kAgent;
      } else if (f[2] != "user") {
        return absl::InvalidArgumentError(absl::StrCat("tokens line ", line_no, ": unknown role '",
                                                       f[2], "' (user, admin or agent)"));
      }
    }
    if (!table.tokens_.try_emplace(std::string(f[0]), std::move(p)).second) {
      return absl::InvalidArgumentError(
          absl::StrCat("tokens line ", line_no, ": duplicate token (user '", f[1], "')"));
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
  if (open_) return Principal{"local", Role::kAdmin};
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
