// The client side of the service, shared by the user CLI (cli/job_commands.cc), the load test and
// the integration tests: where the daemon is and which token to send, resolved from flags, the
// environment and a config file, and gRPC statuses turned into one-line absl errors.
//
// Resolution, first match wins: the --server flag, then LOOM_SERVER, then `server = HOST:PORT`
// in ~/.config/loom/config (or $XDG_CONFIG_HOME/loom/config), then 127.0.0.1:7070. The token:
// LOOM_TOKEN, then `token_file = FILE` (ReadTokenFile), then `token = ...` in that file. TLS:
// LOOM_TLS_CA or `tls_ca = PEM_FILE` turns TLS on and trusts that CA.
//
// The server may be a list, "a:7070,b:7070": the daemons of one state, one active and the others
// standbys (server.h). A standby answers every call UNAVAILABLE with the active daemon's address
// in the trailing metadata kLeaderMetadataKey (and in the message after kStandbyMessagePrefix);
// ServerList and Failover follow that redirect, and move to the next daemon of the list when one
// is unreachable. The CLI's job commands, the agent and the tests share them.
#pragma once

#include <grpcpp/grpcpp.h>

#include <functional>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"
#include "absl/synchronization/mutex.h"
#include "absl/time/time.h"

namespace loom::service {

inline constexpr absl::string_view kDefaultServer = "127.0.0.1:7070";

// A standby's redirect: the trailing metadata key holding the active daemon's HOST:PORT, and the
// start of the UNAVAILABLE message that names it too.
inline constexpr absl::string_view kLeaderMetadataKey = "loom-leader";
inline constexpr absl::string_view kStandbyMessagePrefix =
    "this loom serve is a standby; the active daemon is at ";

// The active daemon a standby's answer names; empty when `status` is no redirect.
std::string RedirectTarget(const grpc::ClientContext& ctx, const grpc::Status& status);

// The daemons a client may call, in order, and the one it calls now. A value type, not
// thread-safe: its owner serializes calls (the agent under its mutex).
class ServerList {
 public:
  // "HOST:PORT[,HOST:PORT...]", blanks around entries ignored. kInvalidArgument naming the list
  // for an empty one, an empty entry, or an entry without ":PORT".
  static absl::StatusOr<ServerList> Parse(absl::string_view servers);

  const std::string& current() const { return current_; }
  const std::vector<std::string>& servers() const { return servers_; }
  // After a call to `tried` failed with `status`: moves to the daemon a standby's redirect names,
  // or, when `tried` could not be reached (UNAVAILABLE or DEADLINE_EXCEEDED without a redirect),
  // to the next one in the list. Returns whether current() is now another daemon than `tried`
  // (it already is when another thread moved on meanwhile).
  bool Failover(const std::string& tried, const grpc::ClientContext& ctx,
                const grpc::Status& status);

 private:
  std::vector<std::string> servers_;
  std::string current_;
  size_t next_ = 1;  // the entry the next unreachable daemon moves to
};

struct ClientConfig {
  std::string server;  // HOST:PORT, or a list of them (ServerList)
  std::string token;
  std::string tls_ca;      // PEM file path; empty: plaintext
  std::string token_file;  // where `token` was read from, if from a file
};

// `server_flag` empty: not given. kInvalidArgument for a malformed config file line (named).
absl::StatusOr<ClientConfig> ResolveClientConfig(const std::string& server_flag);

// A channel to config.server (TLS when config.tls_ca is set; kNotFound if it cannot be read).
absl::StatusOr<std::shared_ptr<grpc::Channel>> Dial(const ClientConfig& config);

// Adds "authorization: Bearer TOKEN" when there is a token.
void Authorize(grpc::ClientContext& ctx, const ClientConfig& config);

// One-shot calls that follow standby redirects and fail over along config.server's list: a
// channel per daemon (made on first use, as Dial), a fresh authorized context per try.
// Thread-safe (no lock is held during a call). Used by the CLI's job commands and
// loom::JobClient.
class Failover {
 public:
  // kInvalidArgument for a malformed server list (ServerList::Parse).
  static absl::StatusOr<Failover> Create(ClientConfig config);
  Failover(Failover&&) noexcept;
  Failover& operator=(Failover&&) noexcept;
  ~Failover();

  // Runs `call` on the current daemon with a context whose deadline is `timeout` away; on a
  // redirect or an unreachable daemon (UNAVAILABLE), on the next one, at most three times round
  // the list. DEADLINE_EXCEEDED is returned as it is. Returns the last call's status. A daemon
  // killed after it took a call but before it answered makes the call run again on the next one
  // (at least once: a submission may then be made twice).
  grpc::Status Call(absl::Duration timeout,
                    const std::function<grpc::Status(const std::shared_ptr<grpc::Channel>&,
                                                     grpc::ClientContext&)>& call);
  // The current daemon's channel (for streams, which do not fail over).
  absl::StatusOr<std::shared_ptr<grpc::Channel>> Channel();
  std::string current() const;
  const ClientConfig& config() const { return config_; }

 private:
  Failover(ClientConfig config, ServerList list);
  struct State;  // the list and the channels, under a mutex
  ClientConfig config_;
  std::unique_ptr<State> state_;
};

// The token in a file: its first non-blank line, trimmed (the way agents and clients keep tokens
// out of argv). kNotFound when the file cannot be read, kInvalidArgument when it holds no token
// or one with spaces; messages name the file, never its content.
absl::StatusOr<std::string> ReadTokenFile(const std::string& path);

// Drops gRPC's own log lines (a TLS handshake failure logs several before the call fails), so
// that a failure is the one line the caller prints; unless GRPC_VERBOSITY is set, which asks for
// them. Process-wide; call before the first channel or server.
void QuietGrpcLogs();

// "NOT_FOUND", "UNAUTHENTICATED", ...
absl::string_view GrpcCodeName(grpc::StatusCode code);
// The same code, message "CODE_NAME: message" (OK stays OK).
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace loom::service
