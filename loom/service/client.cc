#include "loom/service/client.h"

#include <grpc/support/log.h>

#include <cstdlib>
#include <fstream>
#include <sstream>

#include "absl/strings/ascii.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"
#include "loom/base/status_macros.h"

namespace loom::service {
namespace {

std::string Env(const char* name) {
  const char* v = std::getenv(name);
  return v ? std::string(v) : std::string();
}

std::string ConfigPath() {
  std::string xdg = Env("XDG_CONFIG_HOME");
  if (!xdg.empty()) return absl::StrCat(xdg, "/loom/config");
  std::string home = Env("HOME");
  return home.empty() ? std::string() : absl::StrCat(home, "/.config/loom/config");
}

}  // namespace

absl::StatusOr<ClientConfig> ResolveClientConfig(const std::string& server_flag) {
  ClientConfig file;
  const std::string path = ConfigPath();
  if (!path.empty()) {
    std::ifstream in(path);
    std::string line;
    int n = 0;
    while (in && std::getline(in, line)) {
      ++n;
      absl::string_view l = absl::StripAsciiWhitespace(line);
      if (l.empty() || l[0] == '#') continue;
      std::vector<std::string> kv = absl::StrSplit(l, absl::MaxSplits('=', 1));
      if (kv.size() != 2) {
        return absl::InvalidArgumentError(absl::StrCat(
            path, ":", n, ": expected 'key = value' (server, token, token_file, tls_ca)"));
      }
      std::string key(absl::StripAsciiWhitespace(kv[0]));
      std::string value(absl::StripAsciiWhitespace(kv[1]));
      if (key == "server") {
        file.server = value;
      } else if (key == "token") {
        file.token = value;
      } else if (key == "token_file") {
        file.token_file = value;
      } else if (key == "tls_ca") {
        file.tls_ca = value;
      } else {
        return absl::InvalidArgumentError(absl::StrCat(path, ":", n, ": unknown key '", key,
                                                       "' (server, token, token_file, tls_ca)"));
      }
    }
  }
  ClientConfig c;
  c.server = !server_flag.empty()          ? server_flag
             : !Env("LOOM_SERVER").empty() ? Env("LOOM_SERVER")
             : !file.server.empty()        ? file.server
                                           : std::string(kDefaultServer);
  c.token = Env("LOOM_TOKEN");
  if (c.token.empty() && !file.token_file.empty()) {
    absl::StatusOr<std::string> t = ReadTokenFile(file.token_file);
    if (!t.ok())
      return absl::Status(t.status().code(), absl::StrCat(path, ": ", t.status().message()));
    c.token = *std::move(t);
  }
  if (c.token.empty()) c.token = file.token;
  c.tls_ca = !Env("LOOM_TLS_CA").empty() ? Env("LOOM_TLS_CA") : file.tls_ca;
  return c;
}

absl::StatusOr<std::string> ReadTokenFile(const std::string& path) {
  std::ifstream in(path);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot read token file '", path, "'"));
  std::string line;
  while (std::getline(in, line)) {
    absl::string_view t = absl::StripAsciiWhitespace(line);
    if (t.empty()) continue;
    if (t.find_first_of(" \t") != absl::string_view::npos) {
      return absl::InvalidArgumentError(
          absl::StrCat("token file '", path, "': the token's line holds spaces"));
    }
    return std::string(t);
  }
  return absl::InvalidArgumentError(absl::StrCat("token file '", path, "' holds no token"));
}

namespace {
void DropGrpcLog(gpr_log_func_args*) {}
}  // namespace

void QuietGrpcLogs() {
  if (std::getenv("GRPC_VERBOSITY") == nullptr) gpr_set_log_function(DropGrpcLog);
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> Dial(const ClientConfig& config) {
  std::shared_ptr<grpc::ChannelCredentials> creds;
  if (!config.tls_ca.empty()) {
    std::ifstream in(config.tls_ca);
    if (!in) return absl::NotFoundError(absl::StrCat("cannot read TLS CA '", config.tls_ca, "'"));
    std::stringstream ss;
    ss << in.rdbuf();
    grpc::SslCredentialsOptions ssl;
    ssl.pem_root_certs = ss.str();
    creds = grpc::SslCredentials(ssl);
  } else {
    creds = grpc::InsecureChannelCredentials();
  }
  grpc::ChannelArguments args;
  args.SetMaxReceiveMessageSize(512 << 20);
  args.SetMaxSendMessageSize(512 << 20);
  return grpc::CreateCustomChannel(config.server, creds, args);
}

void Authorize(grpc::ClientContext& ctx, const ClientConfig& config) {
  if (!config.token.empty()) {
    ctx.AddMetadata("authorization", absl::StrCat("Bearer ", config.token));
  }
}

std::string RedirectTarget(const grpc::ClientContext& ctx, const grpc::Status& status) {
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE) return "";
  const auto& md = ctx.GetServerTrailingMetadata();
  auto it = md.find(grpc::string_ref(kLeaderMetadataKey.data(), kLeaderMetadataKey.size()));
  if (it == md.end()) return "";
  std::string target(it->second.data(), it->second.size());
  // Only an address: a redirect is no way to smuggle text into logs or a channel target.
  if (target.empty() || target.size() > 255 || target.find(':') == std::string::npos ||
      target.find_first_of(" \t\r\n,") != std::string::npos) {
    return "";
  }
  return target;
}

absl::StatusOr<ServerList> ServerList::Parse(absl::string_view servers) {
  ServerList list;
  for (absl::string_view entry : absl::StrSplit(servers, ',')) {
    entry = absl::StripAsciiWhitespace(entry);
    if (entry.empty() || entry.find(':') == absl::string_view::npos) {
      return absl::InvalidArgumentError(absl::StrCat(
          "server list '", servers, "': every entry must be HOST:PORT, comma-separated"));
    }
    list.servers_.emplace_back(entry);
  }
  list.current_ = list.servers_.front();
  return list;
}

bool ServerList::Failover(const std::string& tried, const grpc::ClientContext& ctx,
                          const grpc::Status& status) {
  if (current_ != tried) return true;  // another caller moved on already
  const std::string target = RedirectTarget(ctx, status);
  if (!target.empty()) {
    current_ = target;
    return current_ != tried;
  }
  if (status.error_code() != grpc::StatusCode::UNAVAILABLE &&
      status.error_code() != grpc::StatusCode::DEADLINE_EXCEEDED) {
    return false;
  }
  if (servers_.size() < 2) return false;
  current_ = servers_[next_ % servers_.size()];
  next_ = (next_ + 1) % servers_.size();
  if (current_ == tried) {  // a redirect had taken us off the list: skip the one that failed
    current_ = servers_[next_ % servers_.size()];
    next_ = (next_ + 1) % servers_.size();
  }
  return current_ != tried;
}

struct Failover::State {
  explicit State(ServerList l) : list(std::move(l)) {}
  absl::Mutex mu;
  ServerList list ABSL_GUARDED_BY(mu);
  std::map<std::string, std::shared_ptr<grpc::Channel>> channels ABSL_GUARDED_BY(mu);
};

Failover::Failover(ClientConfig config, ServerList list)
    : config_(std::move(config)), state_(std::make_unique<State>(std::move(list))) {}
Failover::Failover(Failover&&) noexcept = default;
Failover& Failover::operator=(Failover&&) noexcept = default;
Failover::~Failover() = default;

absl::StatusOr<Failover> Failover::Create(ClientConfig config) {
  LOOM_ASSIGN_OR_RETURN(ServerList list, ServerList::Parse(config.server));
  return Failover(std::move(config), std::move(list));
}

std::string Failover::current() const {
  absl::MutexLock lock(&state_->mu);
  return state_->list.current();
}

absl::StatusOr<std::shared_ptr<grpc::Channel>> Failover::Channel() {
  absl::MutexLock lock(&state_->mu);
  std::shared_ptr<grpc::Channel>& channel = state_->channels[state_->list.current()];
  if (channel == nullptr) {
    ClientConfig one = config_;
    one.server = state_->list.current();
    LOOM_ASSIGN_OR_RETURN(channel, Dial(one));
  }
  return channel;
}

grpc::Status Failover::Call(absl::Duration timeout,
                            const std::function<grpc::Status(const std::shared_ptr<grpc::Channel>&,
                                                             grpc::ClientContext&)>& call) {
  size_t tries = 0;
  {
    absl::MutexLock lock(&state_->mu);
    tries = 3 * state_->list.servers().size() + 1;
  }
  grpc::Status st;
  for (size_t i = 0; i < tries; ++i) {
    const std::string tried = current();
    absl::StatusOr<std::shared_ptr<grpc::Channel>> channel = Channel();
    if (!channel.ok()) {
      return grpc::Status(static_cast<grpc::StatusCode>(channel.status().code()),
                          std::string(channel.status().message()));
    }
    grpc::ClientContext ctx;
    Authorize(ctx, config_);
    ctx.set_deadline(std::chrono::system_clock::now() +
                     std::chrono::milliseconds(absl::ToInt64Milliseconds(timeout)));
    st = call(*channel, ctx);
    // The deadline is the caller's whole budget, and a call that timed out may have been done.
    if (st.ok() || st.error_code() == grpc::StatusCode::DEADLINE_EXCEEDED) return st;
    absl::MutexLock lock(&state_->mu);
    if (!state_->list.Failover(tried, ctx, st)) return st;
  }
  return st;
}

absl::string_view GrpcCodeName(grpc::StatusCode code) {
  switch (code) {
    case grpc::StatusCode::OK:
      return "OK";
    case grpc::StatusCode::CANCELLED:
      return "CANCELLED";
    case grpc::StatusCode::UNKNOWN:
      return "UNKNOWN";
    case grpc::StatusCode::INVALID_ARGUMENT:
      return "INVALID_ARGUMENT";
    case grpc::StatusCode::DEADLINE_EXCEEDED:
      return "DEADLINE_EXCEEDED";
    case grpc::StatusCode::NOT_FOUND:
      return "NOT_FOUND";
    case grpc::StatusCode::ALREADY_EXISTS:
      return "ALREADY_EXISTS";
    case grpc::StatusCode::PERMISSION_DENIED:
      return "PERMISSION_DENIED";
    case grpc::StatusCode::RESOURCE_EXHAUSTED:
      return "RESOURCE_EXHAUSTED";
    case grpc::StatusCode::FAILED_PRECONDITION:
      return "FAILED_PRECONDITION";
    case grpc::StatusCode::ABORTED:
      return "ABORTED";
    case grpc::StatusCode::OUT_OF_RANGE:
      return "OUT_OF_RANGE";
    case grpc::StatusCode::UNIMPLEMENTED:
      return "UNIMPLEMENTED";
    case grpc::StatusCode::INTERNAL:
      return "INTERNAL";
    case grpc::StatusCode::UNAVAILABLE:
      return "UNAVAILABLE";
    case grpc::StatusCode::DATA_LOSS:
      return "DATA_LOSS";
    case grpc::StatusCode::UNAUTHENTICATED:
      return "UNAUTHENTICATED";
    default:
      return "UNKNOWN";
  }
}

absl::Status FromGrpc(const grpc::Status& status) {
  if (status.ok()) return absl::OkStatus();
  return absl::Status(
      static_cast<absl::StatusCode>(status.error_code()),
      absl::StrCat(GrpcCodeName(status.error_code()), ": ", status.error_message()));
}

}  // namespace loom::service
