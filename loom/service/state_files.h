// The daemon's files on disk, opened so that two daemons never share them and a state is never
// paired with the wrong records: an exclusive lock beside the state file, the store id the state
// and its record database share, and the checks that refuse a damaged or mismatched pair with one
// line. Called by Server::Start (server.cc) before the job driver loads anything.
#pragma once

#include <string>

#include "absl/status/statusor.h"
#include "absl/strings/string_view.h"

namespace loom::service {

// Holds `<state>.lock` with an exclusive, non-blocking flock for the life of the object; the file
// holds the holder's pid. kFailedPrecondition naming the holder's pid when another process holds
// it; kNotFound when the file cannot be created.
class StateLock {
 public:
  static absl::StatusOr<StateLock> Acquire(const std::string& state_path);
  StateLock() = default;
  StateLock(StateLock&& other) noexcept : fd_(other.fd_) { other.fd_ = -1; }
  StateLock& operator=(StateLock&& other) noexcept;
  StateLock(const StateLock&) = delete;
  StateLock& operator=(const StateLock&) = delete;
  ~StateLock();

 private:
  explicit StateLock(int fd) : fd_(fd) {}
  int fd_ = -1;
};

// Checks the record database at `records_path` (already opened and migrated by the record store)
// and pairs it with the state whose id is `store_id`: `PRAGMA quick_check` must pass; a database
// paired with another state is refused; an unpaired one holding records beside a state that never
// had a job (`state_had_jobs` false: a lost or replaced state) is refused; otherwise it is paired.
// kDataLoss for damage, kFailedPrecondition for a mismatch, each one line naming the files.
absl::Status PairRecordDatabase(const std::string& records_path, const std::string& state_path,
                                const std::string& store_id, bool state_had_jobs);

// `PRAGMA quick_check`'s answer for an error message: one line, at most 200 characters.
std::string OneLine(absl::string_view verdict);

// "pid 1234 (loom)" for the process listening on TCP `port` on this host, as far as /proc shows
// it (processes of this user); empty when unknown.
std::string DescribePortHolder(int port);

}  // namespace loom::service
