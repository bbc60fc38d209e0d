// Bearer-token authentication for the service: a tokens file maps each token to a principal (a
// user, an admin or one agent) and the limits the daemon enforces for it. The gRPC handlers
// (server.cc) call Authenticate() with the `authorization` metadata of every request before
// anything else; the job driver reads the principal's role, identity and limits.
//
// Tokens file: one entry per line, `TOKEN NAME [ROLE] [KEY=VALUE ...]`, ROLE one of `user`
// (default), `admin` (sees and cancels every job) or `agent` (may only call the agent RPCs; NAME
// is that agent's identity: one token per agent, and the daemon binds the agent's id to it).
// Limits of users and admins: `max_priority=N` (highest job priority, default 0 for users, none
// for admins), `max_jobs=N` (queued or running jobs at once), `max_device_seconds=S` (device time
// per job; the job fails when it has used it). Blank lines and lines starting with '#' are
// ignored.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

#include "absl/container/flat_hash_map.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loom::service {

enum class Role { kUser, kAdmin, kAgent };
absl::string_view RoleName(Role role);

// What a user may ask for; unset: no limit.
struct UserLimits {
  std::optional<int> max_priority;
  std::optional<int> max_jobs;
  std::optional<double> max_device_seconds;
  bool operator==(const UserLimits&) const = default;
};

struct Principal {
  std::string user;  // the NAME of the tokens file line (for agents: the agent's identity)
  Role role = Role::kUser;
  UserLimits limits{};
  // True when the daemon runs without a tokens file (`--insecure`): nobody proved who they are.
  bool anonymous = false;
  bool admin() const { return role == Role::kAdmin; }
};

class TokenTable {
 public:
  // No tokens file: authentication is off; every caller is the anonymous admin "local".
  static TokenTable Open();
  // kInvalidArgument naming the line for a malformed entry, an unknown role or limit, a limit on
  // an agent, a duplicate token, or a name given two different roles or limits.
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
