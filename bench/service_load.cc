// Load test of `loom serve` (issue 7 figure): starts the daemon as a child process, connects N
// simulated agents on loopback (threads of this process, one gRPC connection each), submits J
// simulated jobs at once, and waits until every job has ended. Reports: jobs succeeded / lost,
// wall time, stage dispatch latency p50/p99 (grant -> agent receives it, from the daemon's
// GetStats) and the queue wait, daemon CPU seconds and peak RSS (from /proc/PID).
// --scrape: the daemon also serves its web view (`--http`), and during the run this process
// scrapes /metrics every second and fetches each page's fragment every 3 s, as an open browser
// tab does. --compare: issue 21's overhead figure: runs the load without and with --scrape (each
// in a child process with a daemon of its own), --repeat N pairs alternating which goes first,
// and prints the figures side by side with their ratio (with / without; medians over the pairs).
// Take it on a quiet machine. --state: the daemon's state, a `postgresql://` URI of an empty
// database (issue 22's figures on PostgreSQL; docs/BENCHMARKS.md has the throw-away cluster's
// commands) or an SQLite file; default a fresh SQLite file in a temporary folder. Throughput is
// jobs/s (succeeded jobs over the wall time from the first submit) and stage commits/s (stages
// dispatched and not requeued, each committed with its report).
//
//   service_load [--loom PATH] [--jobs 1000] [--agents 50] [--stage-seconds 0.02]
//                [--rounds 1] [--tasks 1] [--policy interleaved] [--json FILE]
//                [--state FILE|URI] [--scrape | --compare [--repeat 1]] [--timeout 600]
#include <grpcpp/grpcpp.h>
#include <httplib.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <regex>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "loom/v1/agent.grpc.pb.h"
#include "loom/v1/jobs.grpc.pb.h"
#include "loom/v1/version.h"
#include "nlohmann/json.hpp"

namespace fs = std::filesystem;

namespace {

struct Options {
  std::string loom = LOOM_BINARY;
  int jobs = 1000;
  int agents = 50;
  double stage_seconds = 0.02;
  int rounds = 1;
  int tasks = 1;
  std::string policy = "interleaved";
  std::string json;
  std::string state;  // empty: state.db in the run's temporary folder
  double timeout_s = 600;
  bool scrape = false;
  bool compare = false;
  int repeat = 1;
};

std::string ReadAll(const std::string& path) {
  std::ifstream in(path);
  std::stringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// utime + stime of `pid`, in seconds.
double CpuSeconds(pid_t pid) {
  std::string s = ReadAll("/proc/" + std::to_string(pid) + "/stat");
  size_t p = s.rfind(')');
  if (p == std::string::npos) return 0;
  std::istringstream in(s.substr(p + 2));
  std::string f;
  std::vector<std::string> fields;
  while (in >> f) fields.push_back(f);
  if (fields.size() < 13) return 0;
  return (std::stod(fields[11]) + std::stod(fields[12])) / sysconf(_SC_CLK_TCK);
}

// A /proc/PID/status field in MiB ("VmRSS", "VmHWM").
double StatusMiB(pid_t pid, const std::string& key) {
  std::istringstream in(ReadAll("/proc/" + std::to_string(pid) + "/status"));
  std::string line;
  while (std::getline(in, line)) {
    if (line.rfind(key + ":", 0) == 0) return std::stod(line.substr(key.size() + 1)) / 1024.0;
  }
  return 0;
}

std::shared_ptr<grpc::Channel> Channel(const std::string& server) {
  grpc::ChannelArguments args;
  args.SetInt(GRPC_ARG_USE_LOCAL_SUBCHANNEL_POOL, 1);  // one connection per agent
  return grpc::CreateCustomChannel(server, grpc::InsecureChannelCredentials(), args);
}

class Agent {
 public:
  Agent(std::string server, int index) : stub_(loom::v1::AgentService::NewStub(Channel(server))) {
    host_ = "load-agent-" + std::to_string(index);
  }
  bool Register() {
    loom::v1::RegisterRequest r;
    r.set_hostname(host_);
    r.set_cpu_slots(2);
    r.set_version(loom::v1::kLoomVersion);
    auto* d = r.add_devices();
    d->set_name("cpu:1");
    d->set_kind("cpu");
    d->set_target_key("cpu:generic:load");
    loom::v1::RegisterResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
    if (!stub_->Register(&ctx, r, &resp).ok()) return false;
    std::lock_guard<std::mutex> l(mu_);
    id_ = resp.agent_id();
    session_ = resp.session();
    return true;
  }
  void Heartbeat() {
    loom::v1::HeartbeatRequest r;
    {
      std::lock_guard<std::mutex> l(mu_);
      r.set_agent_id(id_);
      r.set_session(session_);
    }
    loom::v1::HeartbeatResponse resp;
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(5));
    if (stub_->Heartbeat(&ctx, r, &resp).ok() && resp.reregister()) Register();
  }
  void Loop(const std::atomic<bool>& stop) {
    while (!stop) {
      loom::v1::AcquireStagesRequest r;
      {
        std::lock_guard<std::mutex> l(mu_);
        r.set_agent_id(id_);
        r.set_session(session_);
      }
      r.set_wait_ms(500);
      loom::v1::AcquireStagesResponse resp;
      grpc::ClientContext ctx;
      ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(10));
      if (!stub_->AcquireStages(&ctx, r, &resp).ok()) {
        std::this_thread::sleep_for(std::chrono::milliseconds(50));
        continue;
      }
      for (const auto& s : resp.stages()) {
        std::thread([this, s] {
          std::this_thread::sleep_for(
              std::chrono::microseconds(static_cast<int64_t>(s.simulated().seconds() * 1e6)));
          loom::v1::ReportStageRequest rep;
          {
            std::lock_guard<std::mutex> l(mu_);
            rep.set_agent_id(id_);
            rep.set_session(session_);
          }
          rep.mutable_result()->set_lease_id(s.lease_id());
          loom::v1::ReportStageResponse out;
          grpc::ClientContext c;
          c.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
          stub_->ReportStage(&c, rep, &out);
          ++reported;
        }).detach();
      }
    }
  }
  std::atomic<int64_t> reported{0};

 private:
  std::unique_ptr<loom::v1::AgentService::Stub> stub_;
  std::string host_;
  std::mutex mu_;
  std::string id_;
  std::string session_;  // RegisterResponse.session: shown in every call naming the agent
};

int Run(const Options& o) {
  const fs::path dir =
      fs::temp_directory_path() / ("loom_service_load_" + std::to_string(getpid()));
  fs::remove_all(dir);
  fs::create_directories(dir);
  const std::string log = (dir / "serve.log").string();
  pid_t serve = fork();
  if (serve == 0) {
    FILE* f = std::freopen(log.c_str(), "w", stderr);
    (void)f;
    const std::string state = o.state.empty() ? (dir / "state.db").string() : o.state;
    std::vector<std::string> args = {o.loom,        "serve",   "--listen",
                                     "127.0.0.1:0", "--state", state,
                                     "--policy",    o.policy,  "--heartbeat-timeout",
                                     "30",          "--quiet", "--insecure"};
    if (o.scrape) args.insert(args.end(), {"--http", "127.0.0.1:0"});
    std::vector<char*> argv;
    for (std::string& a : args) argv.push_back(a.data());
    argv.push_back(nullptr);
    execv(o.loom.c_str(), argv.data());
    _exit(127);
  }
  std::string server;
  int http_port = 0;
  std::regex re("event=serving .* port=([0-9]+) .* http_port=([0-9]+)");
  for (int i = 0; i < 300 && server.empty(); ++i) {
    std::smatch m;
    std::string s = ReadAll(log);
    if (std::regex_search(s, m, re)) {
      server = "127.0.0.1:" + std::string(m[1]);
      http_port = std::stoi(m[2]);
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(100));
  }
  if (server.empty()) {
    std::fprintf(stderr, "service_load: loom serve did not start:\n%s\n", ReadAll(log).c_str());
    kill(serve, SIGKILL);
    return 1;
  }
  const double cpu_start = CpuSeconds(serve);

  std::atomic<bool> stop{false};
  std::vector<std::unique_ptr<Agent>> agents;
  for (int i = 0; i < o.agents; ++i) {
    agents.push_back(std::make_unique<Agent>(server, i));
    if (!agents.back()->Register()) {
      std::fprintf(stderr, "service_load: agent %d could not register\n", i);
      kill(serve, SIGKILL);
      return 1;
    }
  }
  std::vector<std::thread> threads;
  for (auto& a : agents) threads.emplace_back([&, ag = a.get()] { ag->Loop(stop); });
  std::thread heartbeats([&] {
    while (!stop) {
      for (auto& a : agents) a->Heartbeat();
      std::this_thread::sleep_for(std::chrono::seconds(2));
    }
  });

  // The open web view: /metrics every second, every page's fragment every 3 s.
  std::atomic<int64_t> scrapes{0}, scrape_errors{0};
  std::atomic<double> scrape_ms{0};
  std::thread scraper;
  if (o.scrape) {
    scraper = std::thread([&] {
      httplib::Client c("127.0.0.1", http_port);
      c.set_read_timeout(30, 0);
      // As the page's script does, a fragment is asked for with the ETag of the one it has (a 304
      // when it is unchanged).
      std::map<std::string, std::string> etags;
      auto get = [&](const char* path) {
        const auto s0 = std::chrono::steady_clock::now();
        httplib::Headers h;
        if (auto e = etags.find(path); e != etags.end()) h.emplace("If-None-Match", e->second);
        auto r = c.Get(path, h);
        scrape_ms = scrape_ms +
                    std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - s0)
                        .count();
        ++scrapes;
        if (!r || (r->status != 200 && r->status != 304)) {
          ++scrape_errors;
        } else if (r->status == 200 && std::string(path) != "/metrics") {
          etags[path] = r->get_header_value("ETag");
        }
      };
      for (int tick = 0; !stop; ++tick) {
        get("/metrics");
        if (tick % 3 == 0) {
          for (const char* page :
               {"/api/fragment/jobs", "/api/fragment/devices", "/api/fragment/scheduler"}) {
            get(page);
          }
        }
        std::this_thread::sleep_for(std::chrono::seconds(1));
      }
    });
  }

  auto jobs_stub = loom::v1::JobService::NewStub(Channel(server));
  const auto t0 = std::chrono::steady_clock::now();
  std::atomic<int> submitted{0}, submit_errors{0};
  {
    std::vector<std::thread> submitters;
    for (int t = 0; t < 8; ++t) {
      submitters.emplace_back([&, t] {
        auto stub = loom::v1::JobService::NewStub(Channel(server));
        for (int i = t; i < o.jobs; i += 8) {
          loom::v1::SubmitJobRequest r;
          r.set_name("load-" + std::to_string(i));
          auto* w = r.mutable_simulated();
          w->set_tasks(o.tasks);
          w->set_rounds(o.rounds);
          w->set_propose_seconds(o.stage_seconds);
          w->set_build_seconds(o.stage_seconds);
          w->set_measure_seconds(o.stage_seconds);
          w->set_update_seconds(o.stage_seconds);
          loom::v1::Job job;
          grpc::ClientContext ctx;
          ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(60));
          if (stub->SubmitJob(&ctx, r, &job).ok()) {
            ++submitted;
          } else {
            ++submit_errors;
          }
        }
      });
    }
    for (auto& s : submitters) s.join();
  }
  const double submit_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();

  loom::v1::ServerStats stats;
  double peak_rss = 0;
  bool finished = false;
  while (std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count() <
         o.timeout_s) {
    grpc::ClientContext ctx;
    ctx.set_deadline(std::chrono::system_clock::now() + std::chrono::seconds(30));
    if (jobs_stub->GetStats(&ctx, {}, &stats).ok() && stats.jobs_active() == 0) {
      finished = true;
      break;
    }
    peak_rss = std::max(peak_rss, StatusMiB(serve, "VmRSS"));
    std::this_thread::sleep_for(std::chrono::milliseconds(200));
  }
  const double wall_s =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
  const double cpu_s = CpuSeconds(serve) - cpu_start;
  const double hwm = StatusMiB(serve, "VmHWM");

  loom::v1::ListJobsRequest lr;
  lr.set_all_users(true);
  lr.set_include_ended(true);
  loom::v1::ListJobsResponse list;
  grpc::ClientContext lctx;
  jobs_stub->ListJobs(&lctx, lr, &list);
  int succeeded = 0, other = 0;
  int64_t records = 0;
  for (const auto& j : list.jobs()) {
    if (j.state() == loom::v1::JOB_STATE_SUCCEEDED) {
      ++succeeded;
    } else {
      ++other;
    }
    records += j.records();
  }
  stop = true;
  for (auto& t : threads) t.join();
  heartbeats.join();
  if (scraper.joinable()) scraper.join();
  kill(serve, SIGTERM);
  int status = 0;
  waitpid(serve, &status, 0);

  const int lost = submitted.load() - succeeded;
  const int64_t commits = stats.stages_dispatched() - stats.stages_requeued();
  std::printf("service_load: %d jobs x %d tasks x %d rounds (stage %.3f s), %d agents, policy %s\n",
              o.jobs, o.tasks, o.rounds, o.stage_seconds, o.agents, o.policy.c_str());
  std::printf("  submitted %d (errors %d) in %.2f s; finished: %s in %.2f s\n", submitted.load(),
              submit_errors.load(), submit_s, finished ? "yes" : "NO (timeout)", wall_s);
  std::printf("  succeeded %d, not succeeded %d, lost %d; records %lld\n", succeeded, other, lost,
              static_cast<long long>(records));
  std::printf("  stages dispatched %lld, requeued %lld\n",
              static_cast<long long>(stats.stages_dispatched()),
              static_cast<long long>(stats.stages_requeued()));
  std::printf("  throughput %.1f jobs/s, %.1f stage commits/s (state: %s)\n", succeeded / wall_s,
              static_cast<double>(commits) / wall_s,
              o.state.empty() ? "sqlite, temporary" : o.state.c_str());
  std::printf("  dispatch latency (grant -> agent) p50 %.3f ms, p99 %.3f ms\n",
              stats.dispatch_p50_ms(), stats.dispatch_p99_ms());
  std::printf("  queue wait (ready -> grant)        p50 %.3f ms, p99 %.3f ms\n",
              stats.queue_wait_p50_ms(), stats.queue_wait_p99_ms());
  std::printf("  daemon CPU %.2f s (%.0f%% of one core over the run), RSS peak %.1f MiB\n", cpu_s,
              100.0 * cpu_s / wall_s, std::max(hwm, peak_rss));
  if (o.scrape) {
    std::printf("  web view: %lld requests (%lld failed), mean %.2f ms\n",
                static_cast<long long>(scrapes.load()),
                static_cast<long long>(scrape_errors.load()),
                scrapes > 0 ? scrape_ms / static_cast<double>(scrapes.load()) : 0.0);
  }
  if (!o.json.empty()) {
    const nlohmann::json j = {{"jobs", o.jobs},
                              {"agents", o.agents},
                              {"stage_seconds", o.stage_seconds},
                              {"policy", o.policy},
                              {"submitted", submitted.load()},
                              {"succeeded", succeeded},
                              {"lost", lost},
                              {"wall_s", wall_s},
                              {"jobs_per_s", succeeded / wall_s},
                              {"stage_commits_per_s", static_cast<double>(commits) / wall_s},
                              {"submit_s", submit_s},
                              {"dispatch_p50_ms", stats.dispatch_p50_ms()},
                              {"dispatch_p99_ms", stats.dispatch_p99_ms()},
                              {"queue_wait_p50_ms", stats.queue_wait_p50_ms()},
                              {"queue_wait_p99_ms", stats.queue_wait_p99_ms()},
                              {"daemon_cpu_s", cpu_s},
                              {"daemon_rss_peak_mib", std::max(hwm, peak_rss)},
                              {"scrape", o.scrape},
                              {"scrapes", scrapes.load()},
                              {"scrape_errors", scrape_errors.load()}};
    std::ofstream(o.json) << j.dump() << "\n";
  }
  fs::remove_all(dir);
  // Detached stage threads may still hold stubs; leave without destructors.
  std::fflush(stdout);
  _exit(finished && lost == 0 && submit_errors == 0 ? 0 : 1);
}

// The figures --compare puts side by side (keys of a run's JSON), and how each reads.
struct Figure {
  const char* key;
  const char* label;
};
constexpr Figure kFigures[] = {
    {"wall_s", "wall time (s)"},
    {"submit_s", "submission (s)"},
    {"dispatch_p50_ms", "dispatch p50 (ms)"},
    {"dispatch_p99_ms", "dispatch p99 (ms)"},
    {"queue_wait_p50_ms", "queue wait p50 (ms)"},
    {"queue_wait_p99_ms", "queue wait p99 (ms)"},
    {"daemon_cpu_s", "daemon CPU (s)"},
    {"daemon_rss_peak_mib", "daemon RSS peak (MiB)"},
};

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  const size_t n = v.size();
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

// One run in a child process (Run() ends with _exit: its detached stage threads outlive it);
// its figures from the JSON it writes. Empty when the run failed.
nlohmann::json RunChild(Options o, bool scrape, const fs::path& json) {
  o.scrape = scrape;
  o.compare = false;
  o.json = json.string();
  std::fflush(stdout);
  const pid_t child = fork();
  if (child == 0) _exit(Run(o));
  int status = 0;
  waitpid(child, &status, 0);
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) return {};
  std::ifstream in(json);
  nlohmann::json j = nlohmann::json::parse(in, nullptr, /*allow_exceptions=*/false);
  return j.is_discarded() ? nlohmann::json() : j;
}

// Without and with the web view, `repeat` pairs (alternating which goes first, so a drift of the
// machine favours neither), then each figure's medians side by side and their ratio.
int Compare(const Options& o) {
  if (o.repeat < 1) {
    std::fprintf(stderr, "service_load: --repeat must be at least 1\n");
    return 2;
  }
  const fs::path dir =
      fs::temp_directory_path() / ("loom_service_load_compare_" + std::to_string(getpid()));
  fs::create_directories(dir);
  std::vector<nlohmann::json> without, with;
  for (int r = 0; r < o.repeat; ++r) {
    for (int k = 0; k < 2; ++k) {
      const bool scrape = (r + k) % 2 == 1;
      std::printf("--- pair %d of %d: %s the web view\n", r + 1, o.repeat,
                  scrape ? "with" : "without");
      nlohmann::json j =
          RunChild(o, scrape, dir / ("run-" + std::to_string(r) + "-" + std::to_string(k)));
      if (j.is_null()) {
        std::fprintf(stderr, "service_load: the run %s the web view failed (see above)\n",
                     scrape ? "with" : "without");
        fs::remove_all(dir);
        return 1;
      }
      (scrape ? with : without).push_back(std::move(j));
    }
  }
  fs::remove_all(dir);
  std::printf(
      "\nservice_load --compare: %d jobs x %d tasks x %d rounds, %d agents, %d pair(s); "
      "medians\n",
      o.jobs, o.tasks, o.rounds, o.agents, o.repeat);
  std::printf("  %-24s %12s %12s %8s\n", "figure", "without", "with", "ratio");
  nlohmann::json out = {{"jobs", o.jobs}, {"agents", o.agents}, {"pairs", o.repeat}};
  for (const Figure& f : kFigures) {
    std::vector<double> a, b;
    for (const nlohmann::json& j : without) a.push_back(j.value(f.key, 0.0));
    for (const nlohmann::json& j : with) b.push_back(j.value(f.key, 0.0));
    const double ma = Median(a), mb = Median(b);
    const double ratio = ma > 0 ? mb / ma : 0;
    std::printf("  %-24s %12.3f %12.3f %8.3f\n", f.label, ma, mb, ratio);
    out[f.key] = {{"without", ma}, {"with", mb}, {"ratio", ratio}};
  }
  int64_t scrapes = 0, errors = 0;
  for (const nlohmann::json& j : with) {
    scrapes += j.value("scrapes", int64_t{0});
    errors += j.value("scrape_errors", int64_t{0});
  }
  std::printf("  web view requests during the runs with it: %lld (%lld failed)\n",
              static_cast<long long>(scrapes), static_cast<long long>(errors));
  out["scrapes"] = scrapes;
  out["scrape_errors"] = errors;
  if (!o.json.empty()) std::ofstream(o.json) << out.dump(2) << "\n";
  return errors == 0 ? 0 : 1;
}

}  // namespace

int main(int argc, char** argv) {
  Options o;
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "service_load: %s needs a value\n", a.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (a == "--loom") {
      o.loom = next();
    } else if (a == "--jobs") {
      o.jobs = std::stoi(next());
    } else if (a == "--agents") {
      o.agents = std::stoi(next());
    } else if (a == "--stage-seconds") {
      o.stage_seconds = std::stod(next());
    } else if (a == "--rounds") {
      o.rounds = std::stoi(next());
    } else if (a == "--tasks") {
      o.tasks = std::stoi(next());
    } else if (a == "--policy") {
      o.policy = next();
    } else if (a == "--scrape") {
      o.scrape = true;
    } else if (a == "--compare") {
      o.compare = true;
    } else if (a == "--repeat") {
      o.repeat = std::stoi(next());
    } else if (a == "--json") {
      o.json = next();
    } else if (a == "--state") {
      o.state = next();
    } else if (a == "--timeout") {
      o.timeout_s = std::stod(next());
    } else {
      std::fprintf(stderr, "service_load: unknown flag '%s'\n", a.c_str());
      return 2;
    }
  }
  if (o.compare && o.scrape) {
    std::fprintf(stderr, "service_load: --compare runs with and without --scrape: give one\n");
    return 2;
  }
  if (o.compare && !o.state.empty()) {
    std::fprintf(stderr,
                 "service_load: --compare starts a daemon per run, each on a fresh state: no "
                 "--state\n");
    return 2;
  }
  return o.compare ? Compare(o) : Run(o);
}
