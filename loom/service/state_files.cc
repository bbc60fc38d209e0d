#include "loom/service/state_files.h"

#include <dirent.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <sstream>
#include <vector>

#include "absl/strings/ascii.h"
#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_split.h"

namespace loom::service {
namespace {

// A raw connection to the record database for the pairing table (the record store owns the rest
// of the file's schema).
class Db {
 public:
  explicit Db(const std::string& path) {
    rc_ = sqlite3_open_v2(path.c_str(), &db_, SQLITE_OPEN_READWRITE | SQLITE_OPEN_NOMUTEX, nullptr);
    if (rc_ == SQLITE_OK) sqlite3_busy_timeout(db_, 30000);
  }
  ~Db() { sqlite3_close(db_); }
  Db(const Db&) = delete;
  Db& operator=(const Db&) = delete;
  bool ok() const { return rc_ == SQLITE_OK; }
  std::string error() const { return db_ ? sqlite3_errmsg(db_) : "out of memory"; }

  // The first column of each row (as text), or the error.
  absl::StatusOr<std::vector<std::string>> Query(const std::string& sql) {
    sqlite3_stmt* stmt = nullptr;
    if (sqlite3_prepare_v2(db_, sql.c_str(), -1, &stmt, nullptr) != SQLITE_OK) {
      return absl::InternalError(error());
    }
    std::vector<std::string> rows;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
      const unsigned char* t = sqlite3_column_text(stmt, 0);
      rows.emplace_back(t ? reinterpret_cast<const char*>(t) : "");
    }
    sqlite3_finalize(stmt);
    if (rc != SQLITE_DONE) return absl::InternalError(error());
    return rows;
  }

 private:
  sqlite3* db_ = nullptr;
  int rc_ = SQLITE_ERROR;
};

std::string ReadSmallFile(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str().substr(0, 4096);
}

}  // namespace

std::string OneLine(absl::string_view verdict) {
  std::string out(verdict.substr(0, 200));
  for (char& c : out) {
    if (c == '\n' || c == '\r') c = ' ';
  }
  return out;
}

absl::StatusOr<StateLock> StateLock::Acquire(const std::string& state_path) {
  const std::string path = absl::StrCat(state_path, ".lock");
  int fd = open(path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
  if (fd < 0) {
    return absl::NotFoundError(
        absl::StrCat("cannot create the lock file '", path, "': ", std::strerror(errno)));
  }
  if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
    const int err = errno;
    close(fd);
    if (err == EWOULDBLOCK) {
      std::string holder(absl::StripAsciiWhitespace(ReadSmallFile(path)));
      int64_t pid = 0;
      return absl::FailedPreconditionError(absl::StrCat(
          "state file '", state_path, "' is in use by another loom serve",
          absl::SimpleAtoi(holder, &pid) ? absl::StrCat(" (pid ", pid, ")") : std::string(),
          ": one daemon per state file"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("cannot lock '", path, "': ", std::strerror(err)));
  }
  const std::string pid = absl::StrCat(getpid(), "\n");
  if (ftruncate(fd, 0) != 0 || pwrite(fd, pid.data(), pid.size(), 0) < 0) {
    // The lock holds without the pid; the message of a second daemon is only less specific.
  }
  return StateLock(fd);
}

StateLock& StateLock::operator=(StateLock&& other) noexcept {
  if (this != &other) {
    if (fd_ >= 0) close(fd_);
    fd_ = other.fd_;
    other.fd_ = -1;
  }
  return *this;
}

StateLock::~StateLock() {
  if (fd_ >= 0) close(fd_);  // releases the flock
}

absl::Status PairRecordDatabase(const std::string& records_path, const std::string& state_path,
                                const std::string& store_id, bool state_had_jobs) {
  if (records_path == ":memory:") return absl::OkStatus();
  Db db(records_path);
  if (!db.ok()) {
    return absl::NotFoundError(
        absl::StrCat("cannot open record database '", records_path, "': ", db.error()));
  }
  absl::StatusOr<std::vector<std::string>> check = db.Query("PRAGMA quick_check");
  const std::string verdict = !check.ok()      ? std::string(check.status().message())
                              : check->empty() ? "no answer"
                                               : (*check)[0];
  if (verdict != "ok") {
    return absl::DataLossError(absl::StrCat("record database '", records_path,
                                            "' is damaged (quick_check: ", OneLine(verdict),
                                            "); restore it from a backup"));
  }
  auto fail = [&](const absl::Status& s) {
    return absl::Status(s.code(),
                        absl::StrCat("record database '", records_path, "': ", s.message()));
  };
  absl::StatusOr<std::vector<std::string>> made =
      db.Query("CREATE TABLE IF NOT EXISTS service_pairing (store_id TEXT NOT NULL)");
  if (!made.ok()) return fail(made.status());
  absl::StatusOr<std::vector<std::string>> paired =
      db.Query("SELECT store_id FROM service_pairing");
  if (!paired.ok()) return fail(paired.status());
  if (!paired->empty()) {
    if ((*paired)[0] == store_id) return absl::OkStatus();
    if (!state_had_jobs) {
      return absl::FailedPreconditionError(absl::StrCat(
          "state file '", state_path, "' has no jobs but its record database '", records_path,
          "' belongs to another state (store id ", (*paired)[0].substr(0, 32),
          "): the state was lost or replaced; restore it, or move the record database away to "
          "start afresh"));
    }
    return absl::FailedPreconditionError(
        absl::StrCat("record database '", records_path, "' belongs to another state file than '",
                     state_path, "' (store id ", (*paired)[0].substr(0, 32), ", the state's is ",
                     store_id, "): each state keeps its own records"));
  }
  absl::StatusOr<std::vector<std::string>> count = db.Query("SELECT count(*) FROM records");
  if (!count.ok()) return fail(count.status());
  int64_t n = 0;
  if (!count->empty() && absl::SimpleAtoi((*count)[0], &n) && n > 0 && !state_had_jobs) {
    return absl::FailedPreconditionError(absl::StrCat(
        "state file '", state_path, "' has no jobs but its record database '", records_path,
        "' holds ", n,
        " records: the state was lost or replaced; restore it, or move the record database away "
        "to start afresh"));
  }
  absl::StatusOr<std::vector<std::string>> put =
      db.Query(absl::StrCat("INSERT INTO service_pairing (store_id) VALUES ('", store_id, "')"));
  if (!put.ok()) return fail(put.status());
  return absl::OkStatus();
}

std::string DescribePortHolder(int port) {
  if (port <= 0) return "";
  // The socket inodes listening on the port (state 0A = LISTEN), IPv4 and IPv6.
  std::vector<std::string> inodes;
  for (const char* table : {"/proc/net/tcp", "/proc/net/tcp6"}) {
    std::ifstream in(table);
    std::string line;
    std::getline(in, line);  // header
    while (std::getline(in, line)) {
      std::vector<std::string> f = absl::StrSplit(line, ' ', absl::SkipEmpty());
      if (f.size() < 10 || f[3] != "0A") continue;
      const size_t colon = f[1].rfind(':');
      int local_port = 0;
      if (colon == std::string::npos || !absl::SimpleHexAtoi(f[1].substr(colon + 1), &local_port) ||
          local_port != port) {
        continue;
      }
      inodes.push_back(absl::StrCat("socket:[", f[9], "]"));
    }
  }
  if (inodes.empty()) return "";
  DIR* proc = opendir("/proc");
  if (proc == nullptr) return "";
  std::string found;
  while (dirent* e = readdir(proc)) {
    int pid = 0;
    if (!absl::SimpleAtoi(e->d_name, &pid) || pid == getpid()) continue;
    const std::string fd_dir = absl::StrCat("/proc/", pid, "/fd");
    DIR* fds = opendir(fd_dir.c_str());
    if (fds == nullptr) continue;
    while (dirent* f = readdir(fds)) {
      char target[128];
      const std::string link = absl::StrCat(fd_dir, "/", f->d_name);
      ssize_t n = readlink(link.c_str(), target, sizeof(target) - 1);
      if (n <= 0) continue;
      target[n] = '\0';
      for (const std::string& inode : inodes) {
        if (inode == target) found = absl::StrCat("pid ", pid);
      }
      if (!found.empty()) break;
    }
    closedir(fds);
    if (!found.empty()) {
      std::string comm(
          absl::StripAsciiWhitespace(ReadSmallFile(absl::StrCat("/proc/", pid, "/comm"))));
      if (!comm.empty()) absl::StrAppend(&found, " (", comm, ")");
      break;
    }
  }
  closedir(proc);
  return found;
}

}  // namespace loom::service
