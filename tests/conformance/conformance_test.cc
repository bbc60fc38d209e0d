// ONNX node conformance (issue 17, item 2): runs every case of ../shared/onnx-node-tests (ONNX's
// own backend node tests, `onnx` 1.23.2) through `loom run` (the reference executor) and through
// the compiled path (`loom compile` + `loom run DIR`), compares the outputs with the README's
// tolerances, and prints a per-operator table of pass / wrong result / refused (a clean one-line
// error and a non-zero exit) / crash (a signal, a timeout, or an exit without the one-line error).
//
// It fails when a case listed in tests/conformance/must_pass.txt does not pass through both
// paths. It also reports the cases whose operators are all in the issue's set (ops.txt) that
// neither pass nor match a pattern of exceptions.txt (those are the issue's open work).
//
//   loom_onnx_conformance [--filter REGEX] [--jobs N] [--write-must-pass FILE] [--keep]
//
// CTest runs it without arguments (2 workers; all cases share one kernel cache, so identical
// generated kernels are compiled once). --write-must-pass writes the cases that passed both
// paths, sorted, to regenerate the checked-in list. Exit 77 (CTest's skip) when ../shared is
// absent.
#include <fcntl.h>
#include <spawn.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <mutex>
#include <nlohmann/json.hpp>
#include <optional>
#include <regex>
#include <set>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "loom/graph/npy.h"
#include "loom/graph/tensor.h"
#include "loom/graph/testing/shared_models.h"

extern char** environ;

namespace loom::conformance {
namespace {

namespace fs = std::filesystem;
using graph::DType;
using graph::Tensor;

constexpr int kSkipExitCode = 77;  // CTest's SKIP_RETURN_CODE
constexpr int kCompileTimeoutSeconds = 300;
constexpr int kRunTimeoutSeconds = 120;

enum class Outcome { kPass, kWrong, kRefused, kCrash };
constexpr const char* kOutcomeNames[] = {"pass", "wrong", "refused", "crash"};

struct Value {
  std::string name;
  std::string file;   // relative to node/
  std::string dtype;  // NumPy's name ("float32", "bfloat16", "float8_e4m3fn", ...)
};

struct Case {
  std::string name;
  std::vector<std::string> ops;
  int opset = 0;
  std::vector<Value> inputs;
  std::vector<Value> outputs;
  double rtol = 1e-3;
  double atol = 1e-7;
};

struct PathResult {
  Outcome outcome = Outcome::kCrash;
  std::string detail;  // the error line, the mismatch, or how it crashed
};

struct CaseResult {
  PathResult reference;
  PathResult compiled;
  bool Passed() const {
    return reference.outcome == Outcome::kPass && compiled.outcome == Outcome::kPass;
  }
};

struct Options {
  std::string filter;
  int jobs = 2;
  std::string write_must_pass;
  bool keep = false;
};

std::string ReadFile(const fs::path& p) {
  std::ifstream f(p, std::ios::binary);
  std::stringstream ss;
  ss << f.rdbuf();
  return ss.str();
}

// Lines of a list file, without comments ('#' to the end of line) and surrounding blanks.
std::vector<std::string> ReadList(const fs::path& p) {
  std::vector<std::string> lines;
  std::istringstream in(ReadFile(p));
  for (std::string line; std::getline(in, line);) {
    line = line.substr(0, line.find('#'));
    const size_t b = line.find_first_not_of(" \t\r");
    if (b == std::string::npos) continue;
    lines.push_back(line.substr(b, line.find_last_not_of(" \t\r") - b + 1));
  }
  return lines;
}

// exceptions.txt: "PATTERN  reason..." per line; PATTERN is a regular expression over case names.
struct Exception {
  std::regex pattern;
  std::string text;
  std::string reason;
};
std::vector<Exception> ReadExceptions(const fs::path& p) {
  std::vector<Exception> out;
  std::istringstream in(ReadFile(p));
  for (std::string line; std::getline(in, line);) {
    if (line.empty() || line[0] == '#') continue;
    const size_t split = line.find_first_of(" \t");
    const std::string pattern = line.substr(0, split);
    std::string reason = split == std::string::npos ? "" : line.substr(split);
    reason.erase(0, reason.find_first_not_of(" \t"));
    out.push_back({std::regex(pattern), pattern, reason});
  }
  return out;
}

// Runs argv[0] with `argv`, stdout and stderr to files, killed after `timeout_s`. Returns the
// wait status, or nullopt when it had to be killed.
std::optional<int> Spawn(const std::vector<std::string>& argv, const fs::path& out,
                         const fs::path& err, int timeout_s) {
  posix_spawn_file_actions_t actions;
  posix_spawn_file_actions_init(&actions);
  posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0);
  posix_spawn_file_actions_addopen(&actions, 1, out.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  posix_spawn_file_actions_addopen(&actions, 2, err.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  std::vector<char*> args;
  for (const std::string& a : argv) args.push_back(const_cast<char*>(a.c_str()));
  args.push_back(nullptr);
  pid_t pid = 0;
  const int rc = posix_spawn(&pid, args[0], &actions, nullptr, args.data(), environ);
  posix_spawn_file_actions_destroy(&actions);
  if (rc != 0) return std::nullopt;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(timeout_s);
  int status = 0;
  while (true) {
    const pid_t done = waitpid(pid, &status, WNOHANG);
    if (done == pid) return status;
    if (std::chrono::steady_clock::now() > deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &status, 0);
      return std::nullopt;
    }
    std::this_thread::sleep_for(std::chrono::milliseconds(5));
  }
}

// Classifies a finished `loom` command that failed: a clean refusal is exit 1 or 2 with exactly
// one line on stderr, "loom: error: ...".
PathResult Failure(const std::optional<int>& status, const fs::path& err, const char* step) {
  const std::string text = ReadFile(err);
  if (!status.has_value()) {
    return {Outcome::kCrash, std::string(step) + " timed out"};
  }
  if (WIFSIGNALED(*status)) {
    return {Outcome::kCrash,
            std::string(step) + " killed by signal " + std::to_string(WTERMSIG(*status))};
  }
  const int code = WEXITSTATUS(*status);
  const bool one_line =
      std::count(text.begin(), text.end(), '\n') == 1 && text.rfind("loom: error: ", 0) == 0;
  if ((code == 1 || code == 2) && one_line) {
    return {Outcome::kRefused, text.substr(0, text.size() - 1)};
  }
  std::string first = text.substr(0, text.find('\n'));
  return {Outcome::kCrash, std::string(step) + " exited " + std::to_string(code) +
                               " without a one-line error: " + first.substr(0, 200)};
}

// Compares with the README's rule: integers and bools exactly; floats with
// allclose(rtol = max(rtol, 1e-4), atol = max(atol, 1e-5)), NaNs equal.
PathResult Compare(const Case& c, const fs::path& node_dir, const fs::path& out_dir) {
  const double rtol = std::max(c.rtol, 1e-4), atol = std::max(c.atol, 1e-5);
  for (size_t i = 0; i < c.outputs.size(); ++i) {
    const Value& v = c.outputs[i];
    const DType dtype = graph::DTypeFromName(v.dtype);
    auto want = graph::ReadNpy((node_dir / v.file).string(), {.dtype_hint = dtype});
    if (!want.ok())
      return {Outcome::kWrong,
              "expected output unreadable: " + std::string(want.status().message())};
    auto got = graph::ReadNpy((out_dir / ("out" + std::to_string(i) + ".npy")).string(),
                              {.dtype_hint = dtype});
    if (!got.ok()) return {Outcome::kWrong, std::string(got.status().message())};
    if (got->type() != want->type()) {
      return {Outcome::kWrong, "output '" + v.name + "' is " + got->type().ToString() +
                                   ", expected " + want->type().ToString()};
    }
    for (int64_t k = 0; k < want->num_elements(); ++k) {
      bool ok;
      if (graph::IsFloatingDType(dtype)) {
        const double a = got->DoubleAt(k), b = want->DoubleAt(k);
        ok = (std::isnan(a) && std::isnan(b)) || a == b ||
             std::fabs(a - b) <= atol + rtol * std::fabs(b);
      } else {
        ok = got->Int64At(k) == want->Int64At(k) &&
             (dtype != DType::kUint64 || got->data<uint64_t>()[k] == want->data<uint64_t>()[k]);
      }
      if (!ok) {
        std::ostringstream msg;
        msg << "output '" << v.name << "' element " << k << ": got " << got->DoubleAt(k)
            << ", expected " << want->DoubleAt(k);
        return {Outcome::kWrong, msg.str()};
      }
    }
  }
  return {Outcome::kPass, ""};
}

// `loom run TARGET --input ... --output ...` into out_dir, then the comparison. `inputs`: the
// graph inputs to give (a compiled artifact has none for the inputs it was specialized to).
PathResult RunAndCompare(const Case& c, const fs::path& node_dir, const std::string& target,
                         const std::vector<Value>& inputs, const fs::path& out_dir,
                         const char* step) {
  fs::create_directories(out_dir);
  std::vector<std::string> argv = {LOOM_BINARY, "run", target};
  for (const Value& in : inputs) {
    argv.push_back("--input");
    argv.push_back(in.name + "=" + (node_dir / in.file).string());
  }
  for (size_t i = 0; i < c.outputs.size(); ++i) {
    argv.push_back("--output");
    argv.push_back(c.outputs[i].name + "=" +
                   (out_dir / ("out" + std::to_string(i) + ".npy")).string());
  }
  const auto status =
      Spawn(argv, out_dir / "stdout.txt", out_dir / "stderr.txt", kRunTimeoutSeconds);
  if (!status.has_value() || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    return Failure(status, out_dir / "stderr.txt", step);
  }
  return Compare(c, node_dir, out_dir);
}

CaseResult RunCase(const Case& c, const fs::path& node_dir, const fs::path& scratch,
                   const fs::path& cache) {
  CaseResult r;
  const fs::path dir = scratch / c.name;
  fs::remove_all(dir);
  const std::string model = (node_dir / c.name / "model.onnx").string();
  // `loom run` offers every --input value for binding; the model is specialized only to those
  // that define shapes (a Reshape target given as a graph input, Resize scales, axes).
  r.reference = RunAndCompare(c, node_dir, model, c.inputs, dir / "reference", "loom run");
  const fs::path art = dir / "artifact";
  fs::create_directories(dir);
  std::vector<std::string> compile = {LOOM_BINARY,  "compile",     model,         "-o",
                                      art.string(), "--threads",   "1",           "--build-threads",
                                      "1",          "--cache-dir", cache.string()};
  for (const Value& in : c.inputs) {
    compile.push_back("--bind");
    compile.push_back(in.name + "=" + (node_dir / in.file).string());
  }
  const auto status =
      Spawn(compile, dir / "compile.out", dir / "compile.err", kCompileTimeoutSeconds);
  if (!status.has_value() || !WIFEXITED(*status) || WEXITSTATUS(*status) != 0) {
    r.compiled = Failure(status, dir / "compile.err", "loom compile");
    return r;
  }
  // The artifact's inputs: those compile did not bind (plan.json lists them).
  std::set<std::string> remaining;
  const nlohmann::json plan =
      nlohmann::json::parse(ReadFile(art / "plan.json"), nullptr, /*allow_exceptions=*/false);
  if (plan.is_object() && plan.contains("inputs") && plan["inputs"].is_array()) {
    for (const auto& in : plan["inputs"]) remaining.insert(in.value("name", ""));
  }
  std::vector<Value> inputs;
  for (const Value& in : c.inputs) {
    if (remaining.count(in.name)) inputs.push_back(in);
  }
  r.compiled = RunAndCompare(c, node_dir, art.string(), inputs, dir / "compiled", "loom run DIR");
  return r;
}

std::vector<Case> ReadIndex(const fs::path& node_dir) {
  std::vector<Case> cases;
  const nlohmann::json index = nlohmann::json::parse(ReadFile(node_dir / "index.json"));
  for (const auto& e : index) {
    if (!e.value("ok", false)) continue;  // sequences, maps, optionals: no .npy files
    Case c;
    c.name = e.at("name").get<std::string>();
    c.ops = e.at("ops").get<std::vector<std::string>>();
    c.opset = e.value("opset", 0);
    for (const auto& [key, list] : {std::pair{"inputs", &c.inputs}, {"outputs", &c.outputs}}) {
      for (const auto& v : e.at(key)) {
        list->push_back(
            {v.at(0).get<std::string>(), v.at(1).get<std::string>(), v.at(2).get<std::string>()});
      }
    }
    c.rtol = e.value("rtol", 1e-3);
    c.atol = e.value("atol", 1e-7);
    cases.push_back(std::move(c));
  }
  return cases;
}

void PrintTable(const std::vector<Case>& cases, const std::vector<CaseResult>& results) {
  // Per operator (a case counts for each operator it uses), per path.
  std::map<std::string, std::array<std::array<int, 4>, 2>> table;
  std::array<std::array<int, 4>, 2> total{};
  for (size_t i = 0; i < cases.size(); ++i) {
    const std::set<std::string> ops(cases[i].ops.begin(), cases[i].ops.end());
    for (const std::string& op : ops) {
      table[op][0][static_cast<int>(results[i].reference.outcome)]++;
      table[op][1][static_cast<int>(results[i].compiled.outcome)]++;
    }
    total[0][static_cast<int>(results[i].reference.outcome)]++;
    total[1][static_cast<int>(results[i].compiled.outcome)]++;
  }
  std::printf("%-28s | %-27s | %-27s\n", "operator", "loom run: pass/wrong/ref/crash",
              "compiled: pass/wrong/ref/crash");
  auto row = [](const char* name, const std::array<std::array<int, 4>, 2>& c) {
    std::printf("%-28s | %6d %6d %6d %6d | %6d %6d %6d %6d\n", name, c[0][0], c[0][1], c[0][2],
                c[0][3], c[1][0], c[1][1], c[1][2], c[1][3]);
  };
  for (const auto& [op, counts] : table) row(op.c_str(), counts);
  row("all cases", total);
}

int Main(const Options& opts) {
  const char* shared = std::getenv("LOOM_SHARED_DIR");
  const std::string root =
      shared == nullptr ? ""
                        : graph::UnpackSharedArchive("onnx-node-tests", "node", "node/index.json");
  if (root.empty()) {
    std::printf(
        "SKIPPED: no ../shared/onnx-node-tests/node.tar.xz (LOOM_SHARED_DIR unset or "
        "without it)\n");
    return kSkipExitCode;
  }
  const fs::path node_dir = fs::path(root) / "node";
  const fs::path here = LOOM_CONFORMANCE_DIR;
  const std::vector<std::string> must_pass_list = ReadList(here / "must_pass.txt");
  const std::set<std::string> must_pass(must_pass_list.begin(), must_pass_list.end());
  const std::vector<std::string> op_list = ReadList(here / "ops.txt");
  const std::set<std::string> issue_ops(op_list.begin(), op_list.end());
  const std::vector<Exception> exceptions = ReadExceptions(here / "exceptions.txt");

  std::vector<Case> cases = ReadIndex(node_dir);
  if (!opts.filter.empty()) {
    const std::regex filter(opts.filter);
    std::erase_if(cases, [&](const Case& c) { return !std::regex_search(c.name, filter); });
  }
  const fs::path build = std::getenv("LOOM_BUILD_DIR") ? std::getenv("LOOM_BUILD_DIR")
                                                       : fs::path(root).parent_path().parent_path();
  const fs::path scratch = build / "onnx_conformance";
  const fs::path cache = build / "onnx_conformance_kernel_cache";
  fs::create_directories(scratch);
  fs::create_directories(cache);

  const auto start = std::chrono::steady_clock::now();
  std::vector<CaseResult> results(cases.size());
  std::atomic<size_t> next{0};
  std::mutex print_mu;
  auto worker = [&] {
    for (size_t i = next++; i < cases.size(); i = next++) {
      results[i] = RunCase(cases[i], node_dir, scratch, cache);
      if (!opts.keep) fs::remove_all(scratch / cases[i].name);
      if (must_pass.count(cases[i].name) && !results[i].Passed()) {
        std::lock_guard<std::mutex> lock(print_mu);
        std::printf("MUST-PASS FAILED %s: loom run %s (%s); compiled %s (%s)\n",
                    cases[i].name.c_str(),
                    kOutcomeNames[static_cast<int>(results[i].reference.outcome)],
                    results[i].reference.detail.c_str(),
                    kOutcomeNames[static_cast<int>(results[i].compiled.outcome)],
                    results[i].compiled.detail.c_str());
      }
    }
  };
  std::vector<std::thread> threads;
  for (int j = 0; j < std::max(opts.jobs, 1); ++j) threads.emplace_back(worker);
  for (std::thread& t : threads) t.join();
  const double seconds =
      std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();

  PrintTable(cases, results);
  int passed = 0, in_set = 0, in_set_passed = 0, excepted = 0, must_failed = 0;
  std::vector<std::string> open_cases, crashes;
  std::ofstream details(scratch / "details.txt");
  for (size_t i = 0; i < cases.size(); ++i) {
    const Case& c = cases[i];
    const CaseResult& r = results[i];
    details << c.name << "\tref=" << kOutcomeNames[static_cast<int>(r.reference.outcome)] << " "
            << r.reference.detail
            << "\tcompiled=" << kOutcomeNames[static_cast<int>(r.compiled.outcome)] << " "
            << r.compiled.detail << "\n";
    passed += r.Passed();
    if (r.reference.outcome == Outcome::kCrash || r.compiled.outcome == Outcome::kCrash) {
      crashes.push_back(
          c.name + ": " +
          (r.reference.outcome == Outcome::kCrash ? r.reference.detail : r.compiled.detail));
    }
    if (must_pass.count(c.name) && !r.Passed()) ++must_failed;
    const bool all_in_set = std::all_of(c.ops.begin(), c.ops.end(),
                                        [&](const std::string& op) { return issue_ops.count(op); });
    if (!all_in_set) continue;
    ++in_set;
    if (r.Passed()) {
      ++in_set_passed;
      continue;
    }
    const bool is_exception =
        std::any_of(exceptions.begin(), exceptions.end(),
                    [&](const Exception& e) { return std::regex_search(c.name, e.pattern); });
    if (is_exception) {
      ++excepted;
    } else {
      open_cases.push_back(c.name);
    }
  }
  std::printf("\n%zu cases in %.0f s (%d workers): %d pass through both paths\n", cases.size(),
              seconds, opts.jobs, passed);
  std::printf(
      "issue 17's operator set: %d cases, %d pass both paths, %d are listed exceptions, "
      "%zu open\n",
      in_set, in_set_passed, excepted, open_cases.size());
  for (const std::string& c : crashes) std::printf("crash: %s\n", c.c_str());
  std::printf("per-case details: %s\n", (scratch / "details.txt").c_str());
  if (!opts.write_must_pass.empty()) {
    std::ofstream out(opts.write_must_pass);
    out << "# Conformance cases that must pass through `loom run` and the compiled path.\n"
           "# Regenerate: loom_onnx_conformance --write-must-pass "
           "tests/conformance/must_pass.txt\n";
    std::vector<std::string> names;
    for (size_t i = 0; i < cases.size(); ++i) {
      if (results[i].Passed()) names.push_back(cases[i].name);
    }
    std::sort(names.begin(), names.end());
    for (const std::string& n : names) out << n << "\n";
    std::printf("wrote %zu must-pass cases to %s\n", names.size(), opts.write_must_pass.c_str());
  }
  int missing = 0;
  const std::set<std::string> run_names = [&] {
    std::set<std::string> s;
    for (const Case& c : cases) s.insert(c.name);
    return s;
  }();
  if (opts.filter.empty()) {
    for (const std::string& m : must_pass) {
      if (!run_names.count(m)) {
        std::printf("MUST-PASS MISSING %s: not a case of index.json\n", m.c_str());
        ++missing;
      }
    }
  }
  if (must_failed > 0 || missing > 0) {
    std::printf("FAILED: %d must-pass cases do not pass, %d are missing\n", must_failed, missing);
    return 1;
  }
  const size_t ran = static_cast<size_t>(std::count_if(
      cases.begin(), cases.end(), [&](const Case& c) { return must_pass.count(c.name) > 0; }));
  std::printf("OK: the %zu must-pass cases that ran (of %zu) pass through both paths\n", ran,
              must_pass.size());
  return 0;
}

}  // namespace
}  // namespace loom::conformance

int main(int argc, char** argv) {
  loom::conformance::Options opts;
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) {
        std::fprintf(stderr, "%s needs a value\n", arg.c_str());
        std::exit(2);
      }
      return argv[++i];
    };
    if (arg == "--filter") {
      opts.filter = value();
    } else if (arg == "--jobs") {
      opts.jobs = std::atoi(value().c_str());
    } else if (arg == "--write-must-pass") {
      opts.write_must_pass = value();
    } else if (arg == "--keep") {
      opts.keep = true;
    } else {
      std::fprintf(stderr,
                   "unknown argument %s\nusage: loom_onnx_conformance [--filter REGEX] [--jobs N] "
                   "[--write-must-pass FILE] [--keep]\n",
                   arg.c_str());
      return 2;
    }
  }
  return loom::conformance::Main(opts);
}
