// Bearer-token authentication for the service: a tokens file maps each token to a user and a
// role. The gRPC handlers (server.cc) call Authenticate() with the `authorization` metadata of
// every request before anything else.
//
// Tokens file: one entry per line, `TOKEN USER [ROLE]`, ROLE one of `user` (default), `admin`
// (sees and cancels every job) or `agent` (may only call the agent RPCs). Blank lines and lines
// starting with '#' are ignored.
#pragma once

#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loom::service {

enum class Role { kUser, kAdmin, kAgent };
absl::string_view RoleName(Role role);

struct Principal {
  std::string user;
  Role role = Role::kUser;
  bool admin() const { return role == Role::kAdmin; }
};

class TokenTable {
 public:
  // No tokens file: authentication is off; every caller is user "local" with the admin role.
  static TokenTable Open();
  // kInvalidArgument naming the line for a malformed entry, an unknown role or a duplicate token.
  static absl::StatusOr<TokenTable> Parse(absl::string_view text);
  // kNotFound when the file cannot be read; otherwise as Parse (messages name the file).
  static absl::StatusOr<TokenTable> Load(const std::string& path);

  // `authorization` is the metadata value ("Bearer TOKEN"). kUnauthenticated when it is missing,
  // malformed or the token is unknown (the message never echoes the token).
  absl::StatusOr<Principal> Authenticate(absl::string_view authorization) const;

  bool open() const { return open_; }
  size_t size() const { return tokens_.size(); }

 private:
  bool open_ = false;
  absl::flat_hash_map<std::string, Principal> tokens_;
};

}  // namespace loom::service
