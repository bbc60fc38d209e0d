// The client side of the service, shared by the user CLI (cli/job_commands.cc), the load test and
// the integration tests: where the daemon is and which token to send, resolved from flags, the
// environment and a config file, and gRPC statuses turned into one-line absl errors.
//
// Resolution, first match wins: the --server flag, then LOOM_SERVER, then `server = HOST:PORT`
// in ~/.config/loom/config (or $XDG_CONFIG_HOME/loom/config), then 127.0.0.1:7070. The token:
// LOOM_TOKEN, then `token = ...` in that file. TLS: LOOM_TLS_CA or `tls_ca = PEM_FILE` turns TLS
// on and trusts that CA.
#pragma once

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/status/status.h"
#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loom::service {

inline constexpr absl::string_view kDefaultServer = "127.0.0.1:7070";

struct ClientConfig {
  std::string server;
  std::string token;
  std::string tls_ca;  // PEM file path; empty: plaintext
};

// `server_flag` empty: not given. kInvalidArgument for a malformed config file line (named).
absl::StatusOr<ClientConfig> ResolveClientConfig(const std::string& server_flag);

// A channel to config.server (TLS when config.tls_ca is set; kNotFound if it cannot be read).
absl::StatusOr<std::shared_ptr<grpc::Channel>> Dial(const ClientConfig& config);

// Adds "authorization: Bearer TOKEN" when there is a token.
void Authorize(grpc::ClientContext& ctx, const ClientConfig& config);

// "NOT_FOUND", "UNAUTHENTICATED", ...
absl::string_view GrpcCodeName(grpc::StatusCode code);
// The same code, message "CODE_NAME: message" (OK stays OK).
absl::Status FromGrpc(const grpc::Status& status);

}  // namespace loom::service
