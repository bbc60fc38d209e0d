// The client side of the service, shared by the user CLI (cli/job_commands.cc), the load test and
// the integration tests: where the daemon is and which token to send, resolved from flags, the
// environment and a config file, and gRPC statuses turned into one-line absl errors.
//
// Resolution, first match wins: the --server flag, then LOOM_SERVER, then `server = HOST:PORT`
// in ~/.config/loom/config (or $XDG_CONFIG_HOME/loom/config), then 127.0.0.1:7070. The token:
// LOOM_TOKEN, then `token_file = FILE` (ReadTokenFile), then `token = ...` in that file. TLS:
// LOOM_TLS_CA or `tls_ca = PEM_FILE` turns TLS on and trusts that CA.
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
  std::string tls_ca;      // PEM file path; empty: plaintext
  std::string token_file;  // where `token` was read from, if from a file
};

// `server_flag` empty: not given. kInvalidArgument for a malformed config file line (named).
absl::StatusOr<ClientConfig> ResolveClientConfig(const std::string& server_flag);

// A channel to config.server (TLS when config.tls_ca is set; kNotFound if it cannot be read).
absl::StatusOr<std::shared_ptr<grpc::Channel>> Dial(const ClientConfig& config);

// Adds "authorization: Bearer TOKEN" when there is a token.
void Authorize(grpc::ClientContext& ctx, const ClientConfig& config);

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
