// The client side's server list: parsing, failover along the list, and following a standby's
// redirect (UNAVAILABLE with the leader in trailing metadata) against real in-process gRPC servers.
#include "loom/service/client.h"

#include <grpcpp/grpcpp.h>

#include <memory>
#include <string>

#include "absl/strings/str_cat.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/v1/agent.grpc.pb.h"

namespace loom::service {
namespace {

using ::testing::ElementsAre;
using ::testing::HasSubstr;

TEST(ServerListTest, ParsesACommaSeparatedListAndStartsWithTheFirst) {
  auto list = ServerList::Parse(" a:7070, b:7071 ");
  ASSERT_TRUE(list.ok()) << list.status();
  EXPECT_THAT(list->servers(), ElementsAre("a:7070", "b:7071"));
  EXPECT_EQ(list->current(), "a:7070");
}

TEST(ServerListTest, EmptyEntriesAndEntriesWithoutAPortAreRefused) {
  for (const char* bad : {"", "a:1,,b:2", "a:1,", "hostonly"}) {
    auto list = ServerList::Parse(bad);
    EXPECT_EQ(list.status().code(), absl::StatusCode::kInvalidArgument) << bad;
    EXPECT_THAT(list.status().message(),
                HasSubstr(absl::StrCat("server list '", bad,
                                       "': every entry must be HOST:PORT, comma-separated")));
  }
}

TEST(ServerListTest, AnUnreachableDaemonMovesToTheNextRoundTheList) {
  auto list = ServerList::Parse("a:1,b:2,c:3");
  ASSERT_TRUE(list.ok());
  grpc::ClientContext ctx;
  const grpc::Status down(grpc::StatusCode::UNAVAILABLE, "connection refused");
  EXPECT_TRUE(list->Failover("a:1", ctx, down));
  EXPECT_EQ(list->current(), "b:2");
  EXPECT_TRUE(list->Failover("b:2", ctx, down));
  EXPECT_EQ(list->current(), "c:3");
  EXPECT_TRUE(list->Failover("c:3", ctx, down));
  EXPECT_EQ(list->current(), "a:1");
  // Another caller already moved on: nothing changes.
  EXPECT_TRUE(list->Failover("c:3", ctx, down));
  EXPECT_EQ(list->current(), "a:1");
  // An answer that is no outage stays.
  EXPECT_FALSE(list->Failover("a:1", ctx, grpc::Status(grpc::StatusCode::NOT_FOUND, "no job")));
  EXPECT_EQ(list->current(), "a:1");
}

TEST(ServerListTest, OneDaemonHasNowhereElseToGo) {
  auto list = ServerList::Parse("a:1");
  ASSERT_TRUE(list.ok());
  grpc::ClientContext ctx;
  EXPECT_FALSE(list->Failover("a:1", ctx, grpc::Status(grpc::StatusCode::UNAVAILABLE, "down")));
  EXPECT_EQ(list->current(), "a:1");
}

// An agent service that answers every heartbeat as a standby does (server.cc), or as an active
// daemon.
class FakeDaemon final : public v1::AgentService::Service {
 public:
  explicit FakeDaemon(std::string leader) : leader_(std::move(leader)) {}
  grpc::Status Heartbeat(grpc::ServerContext* ctx, const v1::HeartbeatRequest*,
                         v1::HeartbeatResponse*) override {
    ++calls;
    if (leader_.empty()) return grpc::Status::OK;
    ctx->AddTrailingMetadata(std::string(kLeaderMetadataKey), leader_);
    return grpc::Status(grpc::StatusCode::UNAVAILABLE,
                        absl::StrCat(kStandbyMessagePrefix, leader_));
  }
  int calls = 0;

 private:
  std::string leader_;
};

struct Running {
  std::unique_ptr<FakeDaemon> service;
  std::unique_ptr<grpc::Server> server;
  std::string address;
};

Running Serve(const std::string& leader) {
  Running r;
  r.service = std::make_unique<FakeDaemon>(leader);
  grpc::ServerBuilder builder;
  int port = 0;
  builder.AddListeningPort("127.0.0.1:0", grpc::InsecureServerCredentials(), &port);
  builder.RegisterService(r.service.get());
  r.server = builder.BuildAndStart();
  r.address = absl::StrCat("127.0.0.1:", port);
  return r;
}

grpc::Status Heartbeat(const std::shared_ptr<grpc::Channel>& channel, grpc::ClientContext& ctx) {
  v1::HeartbeatResponse resp;
  return v1::AgentService::NewStub(channel)->Heartbeat(&ctx, v1::HeartbeatRequest{}, &resp);
}

TEST(FailoverTest, AStandbysRedirectIsFollowedToTheActiveDaemon) {
  Running active = Serve("");
  Running standby = Serve(active.address);
  ASSERT_NE(active.server, nullptr);
  ASSERT_NE(standby.server, nullptr);

  // The redirect as a client sees it.
  grpc::ClientContext ctx;
  grpc::Status st =
      Heartbeat(grpc::CreateChannel(standby.address, grpc::InsecureChannelCredentials()), ctx);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(RedirectTarget(ctx, st), active.address);
  auto list = ServerList::Parse(standby.address);
  ASSERT_TRUE(list.ok());
  EXPECT_TRUE(list->Failover(standby.address, ctx, st));
  EXPECT_EQ(list->current(), active.address);

  // Failover::Call: the standby first, then the daemon it names; the caller sees only OK.
  auto failover = Failover::Create(ClientConfig{.server = standby.address});
  ASSERT_TRUE(failover.ok()) << failover.status();
  st = failover->Call(absl::Seconds(10), Heartbeat);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(failover->current(), active.address);
  EXPECT_EQ(active.service->calls, 1);
  EXPECT_EQ(standby.service->calls, 2);
  standby.server->Shutdown();
  active.server->Shutdown();
}

TEST(FailoverTest, ADeadDaemonInTheListIsSkipped) {
  Running active = Serve("");
  ASSERT_NE(active.server, nullptr);
  // Port 1 on loopback: nothing listens there.
  auto failover =
      Failover::Create(ClientConfig{.server = absl::StrCat("127.0.0.1:1,", active.address)});
  ASSERT_TRUE(failover.ok()) << failover.status();
  grpc::Status st = failover->Call(absl::Seconds(10), Heartbeat);
  EXPECT_TRUE(st.ok()) << st.error_message();
  EXPECT_EQ(failover->current(), active.address);
  active.server->Shutdown();
}

TEST(FailoverTest, ARedirectWithoutAnAddressIsNoRedirect) {
  Running standby = Serve("not an address");
  ASSERT_NE(standby.server, nullptr);
  grpc::ClientContext ctx;
  grpc::Status st =
      Heartbeat(grpc::CreateChannel(standby.address, grpc::InsecureChannelCredentials()), ctx);
  EXPECT_EQ(st.error_code(), grpc::StatusCode::UNAVAILABLE);
  EXPECT_EQ(RedirectTarget(ctx, st), "");
  standby.server->Shutdown();
}

}  // namespace
}  // namespace loom::service
