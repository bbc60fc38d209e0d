// `loom top`: a refreshing terminal view of `loom serve`, like htop: the jobs (state, progress,
// rate, ETA, best so far, stage) and the devices (leases, utilization over the last refresh) and
// queues. On a terminal it redraws every --interval seconds on the alternate screen until `q` or
// Ctrl-C, and restores the terminal (cursor, screen, input mode) on the way out. When stdout is
// not a terminal, or with --once, it prints one plain frame and exits. Device and queue rows need
// an admin token (GetStats); with a user token only the jobs and the agents' resources show.
#include <poll.h>
#include <signal.h>
#include <sys/ioctl.h>
#include <termios.h>
#include <unistd.h>

#include <algorithm>
#include <cstdio>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "absl/time/clock.h"
#include "absl/time/time.h"
#include "loom/api/job_client.h"
#include "loom/base/duration_text.h"
#include "loom/cli/commands.h"
#include "loom/cli/job_view.h"
#include "loom/cli/stats_view.h"
#include "loom/service/client.h"
#include "loom/v1/stage_names.h"

namespace loom::cli {
namespace {

struct TopOptions {
  std::string server;
  double interval = 2;
  bool once = false;
  bool all = false;
};

// One sample of the daemon; a frame is drawn from the latest and, for rates, the one before.
struct Sample {
  absl::Time time;
  v1::ListJobsResponse jobs;
  std::optional<v1::ServerStats> stats;  // nullopt: not an admin token
};

absl::StatusOr<Sample> Take(JobClient& client, bool all) {
  Sample s;
  s.time = absl::Now();
  absl::StatusOr<v1::ListJobsResponse> jobs = client.List(all, /*include_ended=*/false);
  if (!jobs.ok()) return jobs.status();
  s.jobs = *std::move(jobs);
  absl::StatusOr<v1::ServerStats> stats = client.Stats();
  if (stats.ok()) {
    s.stats = *std::move(stats);
  } else if (stats.status().code() != absl::StatusCode::kPermissionDenied) {
    return stats.status();
  }
  return s;
}

// The frame's lines. Device utilization is over the time between `prev` and `now` (busy seconds
// gained / seconds passed), or since registration when there is no earlier sample.
std::vector<std::string> Frame(const Sample& now, const Sample* prev, const std::string& server) {
  std::vector<std::string> out;
  out.push_back(absl::StrFormat("loom top - %s - %s", server,
                                absl::FormatTime("%H:%M:%S", now.time, absl::LocalTimeZone())));
  if (now.stats) {
    for (std::string& l : StatsSummaryLines(*now.stats)) out.push_back(std::move(l));
  }
  out.push_back("");
  out.push_back(absl::StrFormat("%-6s %-10s %-16s %-9s %15s %8s %8s %12s %14s  %s", "ID", "OWNER",
                                "NAME", "STATE", "TRIALS", "RATE/S", "ETA", "BEST-LAT",
                                "BEST-GFLOPS", "STAGE"));
  for (const v1::Job& j : now.jobs.jobs()) {
    out.push_back(absl::StrFormat(
        "%-6s %-10.10s %-16.16s %-9s %15s %8s %8s %12s %14s  %s", j.id(), j.owner(), j.name(),
        v1::JobStateShortName(j.state()), absl::StrCat(j.trials_done(), "/", j.trials_total()),
        j.has_trials_per_second() ? absl::StrFormat("%.2f", j.trials_per_second()) : "-",
        FormatEta(j), FormatBestLatency(j), FormatBestGflops(j), CurrentStage(j)));
  }
  if (now.jobs.jobs().empty()) out.push_back("(no active jobs)");
  out.push_back("");
  if (now.stats) {
    v1::ServerStats shown = *now.stats;
    std::string label = "UTIL";
    if (prev != nullptr && prev->stats && now.time > prev->time) {
      std::map<std::pair<std::string, std::string>, double> before;
      for (const v1::DeviceStats& d : prev->stats->devices()) {
        before[{d.agent_id(), d.name()}] = d.busy_seconds();
      }
      const double dt = absl::ToDoubleSeconds(now.time - prev->time);
      for (v1::DeviceStats& d : *shown.mutable_devices()) {
        auto it = before.find({d.agent_id(), d.name()});
        if (it == before.end()) continue;
        d.set_utilization(std::clamp((d.busy_seconds() - it->second) / dt, 0.0, 1.0));
      }
      label = absl::StrFormat("UTIL%s", base::DurationText(dt));
    }
    for (std::string& l : DeviceLines(shown, label)) out.push_back(std::move(l));
    out.push_back("");
    for (std::string& l : QueueLines(shown)) out.push_back(std::move(l));
  } else {
    out.push_back(absl::StrFormat("%-12s %-20s %-6s %-10s %-10s %s", "AGENT", "HOST", "ALIVE",
                                  "CPU-SLOTS", "DEVICES", "LEASES"));
    for (const v1::ResourceUse& u : now.jobs.resources()) {
      out.push_back(absl::StrFormat("%-12s %-20.20s %-6s %4d/%-5d %4d/%-5d %d", u.agent_id(),
                                    u.hostname(), u.alive() ? "yes" : "no", u.cpu_slots_used(),
                                    u.cpu_slots(), u.devices_busy(), u.devices(), u.leases()));
    }
    if (now.jobs.resources().empty()) out.push_back("(no agents)");
    out.push_back("(devices and queues: an admin token)");
  }
  return out;
}

volatile sig_atomic_t g_stop = 0;
void OnSignal(int) { g_stop = 1; }

// The terminal in htop's state while alive: alternate screen, hidden cursor, keys unbuffered and
// unechoed (signals still delivered, so Ctrl-C arrives as SIGINT). The destructor restores all of
// it, also after an error.
class Screen {
 public:
  Screen() {
    if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &saved_) == 0) {
      termios raw = saved_;
      raw.c_lflag &= ~static_cast<tcflag_t>(ICANON | ECHO);
      raw.c_cc[VMIN] = 0;
      raw.c_cc[VTIME] = 0;
      restore_input_ = tcsetattr(STDIN_FILENO, TCSANOW, &raw) == 0;
    }
    std::fputs("\x1b[?1049h\x1b[?25l", stdout);
    std::fflush(stdout);
  }
  ~Screen() {
    std::fputs("\x1b[?25h\x1b[?1049l", stdout);
    std::fflush(stdout);
    if (restore_input_) tcsetattr(STDIN_FILENO, TCSANOW, &saved_);
  }
  Screen(const Screen&) = delete;
  Screen& operator=(const Screen&) = delete;

  void Draw(const std::vector<std::string>& lines) {
    winsize ws{};
    int rows = 24, cols = 80;
    if (ioctl(STDOUT_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0 && ws.ws_col > 0) {
      rows = ws.ws_row;
      cols = ws.ws_col;
    }
    std::string frame = "\x1b[H";
    for (int i = 0; i < rows - 1 && i < static_cast<int>(lines.size()); ++i) {
      absl::StrAppend(&frame, lines[i].substr(0, static_cast<size_t>(cols)), "\x1b[K\n");
    }
    absl::StrAppend(&frame, "\x1b[J");
    std::fputs(frame.c_str(), stdout);
    std::fflush(stdout);
  }

  // Waits up to `timeout` for `q` (true) or a signal (true); false when the time passed.
  bool WaitForQuit(absl::Duration timeout) {
    const absl::Time end = absl::Now() + timeout;
    while (!g_stop) {
      const absl::Duration left = end - absl::Now();
      if (left <= absl::ZeroDuration()) return false;
      pollfd p{.fd = STDIN_FILENO, .events = POLLIN, .revents = 0};
      const int n = poll(restore_input_ ? &p : nullptr, restore_input_ ? 1 : 0,
                         static_cast<int>(absl::ToInt64Milliseconds(left)) + 1);
      if (n > 0 && (p.revents & POLLIN)) {
        char c = 0;
        if (read(STDIN_FILENO, &c, 1) == 1 && (c == 'q' || c == 'Q')) return true;
      }
    }
    return true;
  }

 private:
  termios saved_{};
  bool restore_input_ = false;
};

void RunTop(const TopOptions& o) {
  service::QuietGrpcLogs();
  auto client = JobClient::Connect({.server = o.server, .token = TokenFromFlag()});
  FailIfError(client.status());
  if (o.once || !isatty(STDOUT_FILENO)) {
    absl::StatusOr<Sample> s = Take(**client, o.all);
    FailIfError(s.status());
    for (const std::string& l : Frame(*s, nullptr, (*client)->server())) {
      std::printf("%s\n", l.c_str());
    }
    return;
  }
  struct sigaction sa {};
  sa.sa_handler = OnSignal;
  sigemptyset(&sa.sa_mask);
  struct sigaction old_int {
  }, old_term{};
  sigaction(SIGINT, &sa, &old_int);
  sigaction(SIGTERM, &sa, &old_term);
  std::optional<Sample> prev;
  {
    Screen screen;
    const absl::Duration interval = absl::Seconds(o.interval);
    while (true) {
      absl::StatusOr<Sample> s = Take(**client, o.all);
      if (s.ok()) {
        screen.Draw(Frame(*s, prev ? &*prev : nullptr, (*client)->server()));
        prev = *std::move(s);
      } else {
        // The daemon may come back: say so on the last frame and keep trying.
        std::vector<std::string> lines =
            prev ? Frame(*prev, nullptr, (*client)->server()) : std::vector<std::string>{};
        lines.insert(lines.begin(),
                     absl::StrCat("loom: error: ", s.status().message(), " (retrying; q quits)"));
        screen.Draw(lines);
      }
      if (screen.WaitForQuit(interval)) break;
    }
  }
  sigaction(SIGINT, &old_int, nullptr);
  sigaction(SIGTERM, &old_term, nullptr);
}

}  // namespace

void RegisterTopCommand(CLI::App& app) {
  auto o = std::make_shared<TopOptions>();
  auto* cmd = app.add_subcommand(
      "top", "A refreshing view of loom serve's jobs and devices (q or Ctrl-C quits)");
  AddServerOption(cmd, &o->server);
  AddTokenFileOption(cmd, &Globals().token_file);
  cmd->add_option("--interval", o->interval, "Seconds between refreshes")
      ->check(CLI::Range(0.2, 3600.0));
  cmd->add_flag("--once", o->once, "Print one plain frame and exit (also when not a terminal)");
  cmd->add_flag("--all", o->all, "Every user's jobs (admin token)");
  cmd->callback([o] { RunTop(*o); });
}

}  // namespace loom::cli
