#include "loom/records/testing/postgres_cluster.h"

#include <fcntl.h>
#include <grp.h>
#include <libpq-fe.h>
#include <pwd.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>
#include <vector>

#include "absl/status/status.h"
#include "absl/strings/str_cat.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "loom/base/status_macros.h"

namespace loom::tune::testing {
namespace {

namespace fs = std::filesystem;

// Who runs the server: ourselves, or `nobody` when we are root.
struct RunAs {
  bool drop = false;
  uid_t uid = 0;
  gid_t gid = 0;
};

absl::StatusOr<RunAs> ServerUser() {
  if (geteuid() != 0) return RunAs{};
  const passwd* pw = getpwnam("nobody");
  if (pw == nullptr) {
    return absl::FailedPreconditionError(
        "running as root and there is no user 'nobody' to run PostgreSQL as (it refuses root)");
  }
  return RunAs{true, pw->pw_uid, pw->pw_gid};
}

std::string FindBinaries() {
  if (const char* env = std::getenv("LOOM_PG_BIN"); env != nullptr && *env != '\0') return env;
  std::string best;
  int best_version = -1;
  std::error_code ec;
  for (const auto& e : fs::directory_iterator("/usr/lib/postgresql", ec)) {
    const std::string name = e.path().filename().string();
    const int version = std::atoi(name.c_str());
    if (version > best_version && fs::exists(e.path() / "bin" / "initdb") &&
        fs::exists(e.path() / "bin" / "postgres")) {
      best_version = version;
      best = (e.path() / "bin").string();
    }
  }
  return best;
}

std::string Tail(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  std::string text = ss.str();
  if (text.size() > 600) text = text.substr(text.size() - 600);
  for (char& c : text) {
    if (c == '\n') c = ' ';
  }
  return text;
}

// Forks and execs `argv` as `who`, output to `log`. In the child only async-signal-safe calls.
// With `die_with_parent` the child is killed when the calling thread ends.
absl::StatusOr<pid_t> Spawn(const std::vector<std::string>& argv, const RunAs& who,
                            const std::string& log, bool die_with_parent) {
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  const pid_t parent = getpid();
  const pid_t pid = fork();
  if (pid < 0) return absl::InternalError("fork failed");
  if (pid == 0) {
    const int fd = open(log.c_str(), O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
    if (fd >= 0) {
      dup2(fd, 1);
      dup2(fd, 2);
    }
    if (who.drop && (setgroups(0, nullptr) != 0 || setgid(who.gid) != 0 || setuid(who.uid) != 0)) {
      _exit(126);
    }
    // After the uid change: changing credentials clears the parent-death signal.
    if (die_with_parent && (prctl(PR_SET_PDEATHSIG, SIGKILL) != 0 || getppid() != parent)) {
      _exit(125);
    }
    execv(args[0], args.data());
    _exit(127);
  }
  return pid;
}

// The exit status of `pid`, waited for up to `timeout` (then killed: kDeadlineExceeded).
absl::StatusOr<int> WaitFor(pid_t pid, absl::Duration timeout) {
  const absl::Time deadline = absl::Now() + timeout;
  while (true) {
    int status = 0;
    if (waitpid(pid, &status, WNOHANG) == pid) return status;
    if (absl::Now() > deadline) break;
    absl::SleepFor(absl::Milliseconds(10));
  }
  kill(pid, SIGKILL);
  waitpid(pid, nullptr, 0);
  return absl::DeadlineExceededError("timed out");
}

// An initialized data folder for this PostgreSQL version, made by `initdb` once per user (it is
// the slow part of a start; a failed or concurrent initdb never leaves a half-made one: it is
// renamed into place when complete). Clusters start from copies of it.
absl::StatusOr<std::string> Template(const std::string& bin, const RunAs& who,
                                     const std::string& log) {
  const std::string version = fs::path(bin).parent_path().filename().string();
  const std::string path = absl::StrCat("/tmp/loom_pg_template_", geteuid(), "_", version);
  if (fs::exists(path + "/PG_VERSION")) return path;
  const std::string tmp = absl::StrCat(path, ".", getpid());
  std::error_code ec;
  fs::remove_all(tmp, ec);
  if (mkdir(tmp.c_str(), 0700) != 0 || (who.drop && chown(tmp.c_str(), who.uid, who.gid) != 0)) {
    return absl::FailedPreconditionError(absl::StrCat("cannot create ", tmp, " for initdb"));
  }
  LOOM_ASSIGN_OR_RETURN(pid_t pid, Spawn({bin + "/initdb", "-D", tmp, "-U", "loom", "--auth=trust",
                                          "-E", "UTF8", "--no-sync"},
                                         who, log, /*die_with_parent=*/false));
  absl::StatusOr<int> status = WaitFor(pid, absl::Seconds(60));
  if (!status.ok() || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    fs::remove_all(tmp, ec);
    return absl::InternalError(absl::StrCat("initdb failed: ", Tail(log)));
  }
  if (rename(tmp.c_str(), path.c_str()) != 0) fs::remove_all(tmp, ec);  // another made it first
  if (!fs::exists(path + "/PG_VERSION")) {
    return absl::InternalError(absl::StrCat("no initdb template at ", path));
  }
  return path;
}

}  // namespace

absl::StatusOr<std::unique_ptr<PostgresCluster>> PostgresCluster::Start() {
  const std::string bin = FindBinaries();
  if (bin.empty()) {
    return absl::NotFoundError(
        "PostgreSQL server binaries (initdb, postgres) not found under /usr/lib/postgresql/*/bin "
        "or $LOOM_PG_BIN: install Debian's postgresql to run the PostgreSQL tests");
  }
  LOOM_ASSIGN_OR_RETURN(RunAs who, ServerUser());
  // Under /tmp, not the test's temp dir: a Unix socket path must stay under 108 bytes.
  std::string pattern = "/tmp/loom_pg_XXXXXX";
  if (mkdtemp(pattern.data()) == nullptr) return absl::InternalError("mkdtemp failed");
  std::unique_ptr<PostgresCluster> cluster(new PostgresCluster());
  cluster->dir_ = pattern;
  if (who.drop && chown(cluster->dir_.c_str(), who.uid, who.gid) != 0) {
    return absl::FailedPreconditionError(
        absl::StrCat("cannot hand ", cluster->dir_, " to user nobody"));
  }
  const std::string log = cluster->dir_ + "/server.log";
  LOOM_ASSIGN_OR_RETURN(const std::string data, Template(bin, who, log));
  {
    // A copy of the initialized template (cp -a keeps the server user's ownership and modes).
    LOOM_ASSIGN_OR_RETURN(pid_t pid, Spawn({"/bin/cp", "-a", data, cluster->dir_ + "/data"},
                                           RunAs{}, log, /*die_with_parent=*/false));
    absl::StatusOr<int> status = WaitFor(pid, absl::Seconds(60));
    if (!status.ok() || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
      return absl::InternalError(absl::StrCat("copying the initdb template failed: ", Tail(log)));
    }
  }
  LOOM_ASSIGN_OR_RETURN(
      cluster->server_pid_,
      Spawn({bin + "/postgres", "-D", cluster->dir_ + "/data", "-k", cluster->dir_, "-c",
             "listen_addresses=", "-c", "fsync=off", "-c", "max_connections=200"},
            who, log, /*die_with_parent=*/true));
  const std::string probe = cluster->Uri("postgres");
  const absl::Time deadline = absl::Now() + absl::Seconds(30);
  while (PQping(probe.c_str()) != PQPING_OK) {
    int status = 0;
    if (waitpid(cluster->server_pid_, &status, WNOHANG) == cluster->server_pid_) {
      cluster->server_pid_ = -1;
      return absl::InternalError(absl::StrCat("postgres exited at start: ", Tail(log)));
    }
    if (absl::Now() > deadline) {
      return absl::DeadlineExceededError(
          absl::StrCat("postgres did not accept connections within 30 s: ", Tail(log)));
    }
    absl::SleepFor(absl::Milliseconds(20));
  }
  return cluster;
}

PostgresCluster::~PostgresCluster() {
  if (server_pid_ > 0) {
    kill(server_pid_, SIGQUIT);  // immediate shutdown, as `pg_ctl stop -m immediate`
    WaitFor(server_pid_, absl::Seconds(20)).IgnoreError();
  }
  std::error_code ec;
  if (!dir_.empty()) fs::remove_all(dir_, ec);
}

std::string PostgresCluster::Uri(const std::string& name) const {
  return absl::StrCat("postgresql:///", name, "?host=", dir_, "&user=loom");
}

absl::StatusOr<std::string> PostgresCluster::CreateDatabase() {
  const std::string name = absl::StrCat("loom_test_", next_database_++);
  PGconn* conn = PQconnectdb(Uri("postgres").c_str());
  std::string error;
  if (PQstatus(conn) != CONNECTION_OK) {
    error = PQerrorMessage(conn);
  } else {
    PGresult* res = PQexec(conn, absl::StrCat("CREATE DATABASE ", name).c_str());
    if (PQresultStatus(res) != PGRES_COMMAND_OK) error = PQresultErrorMessage(res);
    PQclear(res);
  }
  PQfinish(conn);
  if (!error.empty()) return absl::InternalError(absl::StrCat("CREATE DATABASE: ", error));
  return Uri(name);
}

absl::StatusOr<PostgresCluster*> SharedPostgresCluster() {
  static absl::StatusOr<std::unique_ptr<PostgresCluster>> cluster = PostgresCluster::Start();
  if (!cluster.ok()) return cluster.status();
  return cluster->get();
}

}  // namespace loom::tune::testing
