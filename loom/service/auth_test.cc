#include "loom/service/auth.h"

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::service {
namespace {

using ::testing::HasSubstr;

TEST(TokenTableTest, RolesNamesAndLimitsComeFromTheLine) {
  auto t = TokenTable::Parse(
      "# comment\n"
      "tok-a alice\n"
      "tok-a2 alice user\n"
      "tok-b bob user max_priority=5 max_jobs=2 max_device_seconds=90.5\n"
      "tok-r root admin\n"
      "tok-g gpu-host-1 agent\n");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->size(), 5u);

  auto a = t->Authenticate("Bearer tok-a");
  ASSERT_TRUE(a.ok());
  EXPECT_EQ(a->user, "alice");
  EXPECT_EQ(a->role, Role::kUser);
  EXPECT_FALSE(a->anonymous);
  // A user without max_priority may not raise a job above the default 0.
  EXPECT_EQ(a->limits.max_priority, 0);
  EXPECT_FALSE(a->limits.max_jobs.has_value());

  auto b = t->Authenticate("bearer tok-b");
  ASSERT_TRUE(b.ok());
  EXPECT_EQ(b->limits.max_priority, 5);
  EXPECT_EQ(b->limits.max_jobs, 2);
  EXPECT_DOUBLE_EQ(*b->limits.max_device_seconds, 90.5);

  auto r = t->Authenticate("Bearer tok-r");
  ASSERT_TRUE(r.ok());
  EXPECT_TRUE(r->admin());
  EXPECT_FALSE(r->limits.max_priority.has_value());  // admins: no default limit

  auto g = t->Authenticate("Bearer tok-g");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->role, Role::kAgent);
  EXPECT_EQ(g->user, "gpu-host-1");
}

TEST(TokenTableTest, UnknownMissingAndMalformedTokensAreUnauthenticatedWithoutEcho) {
  auto t = TokenTable::Parse("secret-token alice\n");
  ASSERT_TRUE(t.ok());
  for (const char* bad : {"", "Bearer", "Basic secret-token", "Bearer not-the-token"}) {
    auto p = t->Authenticate(bad);
    EXPECT_EQ(p.status().code(), absl::StatusCode::kUnauthenticated) << bad;
    EXPECT_THAT(p.status().message(), ::testing::Not(HasSubstr("secret")));
  }
}

TEST(TokenTableTest, OpenTableMakesEveryCallerTheAnonymousAdmin) {
  TokenTable t = TokenTable::Open();
  auto p = t.Authenticate("Bearer whatever");
  ASSERT_TRUE(p.ok());
  EXPECT_TRUE(p->anonymous);
  EXPECT_TRUE(p->admin());
}

TEST(TokenTableTest, BadLinesAreRefusedNamingTheLine) {
  struct Case {
    const char* text;
    const char* message;
  } cases[] = {
      {"lonely\n", "tokens line 1: expected 'TOKEN NAME [ROLE] [KEY=VALUE ...]'"},
      {"t alice boss\n", "tokens line 1: unknown role 'boss'"},
      {"t a\nt b\n", "tokens line 2: duplicate token (name 'b')"},
      {"t a user max_gpus=3\n", "tokens line 1: unknown limit 'max_gpus'"},
      {"t a user max_priority=2000\n", "max_priority must be an integer in [-1000, 1000]"},
      {"t a user max_jobs=0\n", "max_jobs must be an integer >= 1"},
      {"t a user max_device_seconds=-1\n", "max_device_seconds must be a number > 0"},
      {"t a user max_jobs\n", "expected KEY=VALUE after the role, got 'max_jobs'"},
      {"t gpu agent max_jobs=3\n", "limits apply to users and admins, not to agents"},
      {"t1 a user\nt2 a admin\n", "tokens line 2: 'a' has another role or other limits on line 1"},
      {"t1 a max_jobs=1\nt2 a max_jobs=2\n", "'a' has another role or other limits on line 1"},
  };
  for (const Case& c : cases) {
    auto t = TokenTable::Parse(c.text);
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << c.text;
    EXPECT_THAT(t.status().message(), HasSubstr(c.message)) << c.text;
  }
}

}  // namespace
}  // namespace loom::service
