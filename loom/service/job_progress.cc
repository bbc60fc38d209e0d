#include "loom/service/job_progress.h"

#include <algorithm>
#include <limits>
#include <tuple>

namespace loom::service {
namespace {

constexpr double kInf = std::numeric_limits<double>::infinity();

struct Measured {
  absl::Time time;
  int task = 0;
  int64_t id = 0;
  bool ok = false;
  double cost = kInf;
};

// Keeps `max` points of `points` (max >= 2): the first, the last, and evenly spaced ones between.
std::vector<BestPoint> Thin(std::vector<BestPoint> points, int max) {
  if (max < 2 || static_cast<int>(points.size()) <= max) return points;
  std::vector<BestPoint> out;
  out.reserve(static_cast<size_t>(max));
  const double step = static_cast<double>(points.size() - 1) / static_cast<double>(max - 1);
  for (int i = 0; i < max; ++i) {
    out.push_back(points[static_cast<size_t>(static_cast<double>(i) * step + 0.5)]);
  }
  return out;
}

}  // namespace

JobProgress ComputeJobProgress(const ProgressInput& input, const ProgressOptions& options) {
  JobProgress p;
  std::vector<Measured> all;
  for (int t = 0; t < static_cast<int>(input.tasks.size()); ++t) {
    const ProgressTask& task = input.tasks[t];
    // A measure stage's records are stored when it reports, its task row counts them at the
    // round's update: in between, the records are the count (so the rate, from the records,
    // and the trials done agree).
    const int done = std::max(task.trials_done, static_cast<int>(task.records.size()));
    p.trials_done += done;
    p.trials_total += task.ended ? done : std::max(task.trials, done);
    for (const tune::Record& r : task.records) {
      all.push_back(Measured{r.timestamp, t, r.id, r.ok() && r.median_cost > 0, r.median_cost});
    }
  }
  // Measurement order; ties (one stage's results share a timestamp at micro resolution) by task
  // and the store's insertion order, so the history is deterministic.
  std::sort(all.begin(), all.end(), [](const Measured& a, const Measured& b) {
    return std::tie(a.time, a.task, a.id) < std::tie(b.time, b.task, b.id);
  });

  // Best-so-far: replay the measurements in order.
  std::vector<double> best(input.tasks.size(), kInf);
  int tuned = 0;
  for (const ProgressTask& t : input.tasks) tuned += t.skipped ? 0 : 1;
  int with_best = 0;
  auto latency = [&]() -> std::optional<double> {
    if (tuned == 0 || with_best < tuned) return std::nullopt;
    double ms = 0;
    for (size_t t = 0; t < best.size(); ++t) {
      if (!input.tasks[t].skipped) ms += best[t] * static_cast<double>(input.tasks[t].count) * 1e3;
    }
    return ms;
  };
  std::vector<BestPoint> history;
  int64_t trials = 0;
  for (const Measured& m : all) {
    ++trials;
    if (!m.ok || !(m.cost < best[m.task])) continue;
    const ProgressTask& task = input.tasks[m.task];
    if (best[m.task] == kInf && !task.skipped) ++with_best;
    best[m.task] = m.cost;
    history.push_back(BestPoint{.time = m.time,
                                .trials = trials,
                                .task = m.task,
                                .task_gflops = task.flops / m.cost / 1e9,
                                .latency_ms = latency()});
  }
  p.history = Thin(std::move(history), options.max_history_points);
  p.best_latency_ms = latency();
  double flops = 0, seconds = 0;
  for (size_t t = 0; t < best.size(); ++t) {
    if (best[t] == kInf) continue;
    flops += input.tasks[t].flops * static_cast<double>(input.tasks[t].count);
    seconds += best[t] * static_cast<double>(input.tasks[t].count);
  }
  if (seconds > 0 && flops > 0) p.best_gflops = flops / seconds / 1e9;

  // Rate and ETA. The rate is the job's own throughput, trials measured per second of wall time
  // over its recent window, the window ending now: its stages' whole cycle (propose, build,
  // measure, update, and waits for resources shared with other jobs) is in it, and a job that
  // stalls (its stage waits, its agent is gone) sees its rate fall and its ETA grow. The window
  // starts when the job started if that is later (then every record of the job counts, so an
  // agent clock slightly behind the daemon's loses none). Nothing measured in the window, a job
  // that never ran or has ended: unknown.
  if (input.ended || input.started == absl::InfinitePast() || input.started >= input.now) {
    return p;
  }
  const absl::Time window_start = std::max(input.started, input.now - options.rate_window);
  int64_t recent = 0;
  for (const Measured& m : all) {
    if (window_start == input.started || m.time >= window_start) ++recent;
  }
  const double span = absl::ToDoubleSeconds(input.now - window_start);
  if (recent == 0 || span <= 0) return p;
  p.trials_per_second = static_cast<double>(recent) / span;
  p.eta_seconds = static_cast<double>(std::max<int64_t>(0, p.trials_total - p.trials_done)) /
                  *p.trials_per_second;
  return p;
}

void FillJobProgress(const JobProgress& progress, v1::Job* job) {
  job->set_trials_done(progress.trials_done);
  job->set_trials_total(progress.trials_total);
  if (progress.trials_per_second) job->set_trials_per_second(*progress.trials_per_second);
  if (progress.eta_seconds) job->set_eta_seconds(*progress.eta_seconds);
  if (progress.best_latency_ms) job->set_best_latency_ms(*progress.best_latency_ms);
  if (progress.best_gflops) job->set_best_gflops(*progress.best_gflops);
  job->clear_best_history();
  for (const BestPoint& b : progress.history) {
    v1::BestPoint* out = job->add_best_history();
    out->set_time_unix_micros(absl::ToUnixMicros(b.time));
    out->set_trials(b.trials);
    out->set_task(b.task);
    out->set_task_gflops(b.task_gflops);
    if (b.latency_ms) out->set_latency_ms(*b.latency_ms);
  }
}

}  // namespace loom::service
