// Round trips of compiled models through the artifact format (CompiledModel::Export / Load): a
// fresh object loaded from disk must compute what the in-memory model and the reference executor
// compute, and every damaged or foreign artifact must be refused with a specific error.
#include "loom/runtime/artifact.h"

#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/rsa.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <functional>
#include <map>
#include <sstream>
#include <string>
#include <thread>

#include "absl/strings/str_cat.h"
#include "absl/strings/str_format.h"
#include "gmock/gmock.h"
#include "gtest/gtest.h"
#include "loom/frontend/model_loader.h"
#include "loom/graph/shape_inference.h"
#include "loom/runtime/compiled_model.h"
#include "loom/runtime/reference_executor.h"
#include "nlohmann/json.hpp"

namespace loom::runtime {
namespace {

using ::testing::HasSubstr;

std::string BuildDir() {
  const char* b = std::getenv("LOOM_BUILD_DIR");
  return b != nullptr ? std::string(b) : std::filesystem::temp_directory_path().string();
}

CompileOptions Options(int32_t threads) {
  CompileOptions o;
  o.num_threads = threads;
  o.build.num_threads = 2;
  o.build.cache_dir = BuildDir() + "/artifact_test_kernels";
  return o;
}

ExportOptions Export() {
  ExportOptions e;
  e.build.num_threads = 2;
  e.build.cache_dir = BuildDir() + "/artifact_test_kernels";
  return e;
}

// This process's scratch folder: CTest runs the tests of this binary as parallel processes, and
// two of them once shared "artifact_test/resnet18" (the zoo's and the shared models' ResNet-18)
// and loaded each other's weights.
std::string ScratchRoot() { return absl::StrCat(BuildDir(), "/artifact_test/", getpid()); }

std::string FreshDir(const std::string& name) {
  const std::string dir = absl::StrCat(ScratchRoot(), "/", name);
  std::filesystem::remove_all(dir);
  return dir;
}

class RemoveScratch : public ::testing::Environment {
 public:
  void TearDown() override {
    std::error_code ec;
    std::filesystem::remove_all(ScratchRoot(), ec);
  }
};
const auto* const kRemoveScratch = ::testing::AddGlobalTestEnvironment(new RemoveScratch);

graph::Tensor RandomInput(const graph::Shape& shape, uint64_t seed) {
  graph::Tensor t(graph::DType::kFloat32, shape);
  uint64_t s = seed * 0x9E3779B97F4A7C15ull + 1;
  for (float& v : t.values<float>()) {
    s ^= s << 13;
    s ^= s >> 7;
    s ^= s << 17;
    v = static_cast<float>(static_cast<double>(s >> 11) / 9007199254740992.0 * 2.0 - 1.0);
  }
  return t;
}

// max|a-b| <= tol * max|ref| over every output.
void ExpectClose(const std::vector<graph::Tensor>& got, const std::vector<graph::Tensor>& want,
                 double tol, const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  for (size_t i = 0; i < got.size(); ++i) {
    ASSERT_EQ(got[i].shape(), want[i].shape()) << what;
    double err = 0, ref = 0;
    const float* a = got[i].data<float>();
    const float* b = want[i].data<float>();
    for (int64_t k = 0; k < got[i].num_elements(); ++k) {
      err = std::max(err, static_cast<double>(std::fabs(a[k] - b[k])));
      ref = std::max(ref, static_cast<double>(std::fabs(b[k])));
    }
    EXPECT_GT(ref, 0) << what;
    EXPECT_LE(err, tol * ref) << what << " output " << i << ": max|a-b| " << err << " max|ref| "
                              << ref;
  }
}

// Compiles `g`, exports it to `dir`, loads it into a fresh object with 1 and 2 threads and checks
// both against the in-memory model (same kernels: equal up to float noise) and the reference.
void RoundTrip(const graph::Graph& g, const std::map<std::string, graph::Tensor>& inputs,
               const std::string& dir, const std::string& what, CompileStats* stats = nullptr) {
  auto ex = ReferenceExecutor::Create(g);
  ASSERT_TRUE(ex.ok()) << ex.status();
  auto expected = ex->Run(inputs);
  ASSERT_TRUE(expected.ok()) << expected.status();
  std::vector<graph::Tensor> in_memory;
  {
    auto cm = CompiledModel::Compile(g, Options(2));
    ASSERT_TRUE(cm.ok()) << what << ": " << cm.status();
    auto out = (*cm)->Run(inputs);
    ASSERT_TRUE(out.ok()) << out.status();
    in_memory = *out;
    ASSERT_TRUE((*cm)->Export(dir, Export()).ok()) << what;
    if (stats != nullptr) *stats = (*cm)->stats();
  }  // the compiled model (and its dlopen'ed kernels) is gone before loading
  EXPECT_TRUE(IsArtifactDir(dir));
  for (int32_t threads : {1, 2}) {
    auto loaded = CompiledModel::Load(dir, {.num_threads = threads});
    ASSERT_TRUE(loaded.ok()) << what << ": " << loaded.status();
    EXPECT_EQ((*loaded)->num_threads(), threads);
    ASSERT_EQ((*loaded)->inputs().size(), g.inputs.size());
    EXPECT_EQ((*loaded)->inputs()[0].name, g.inputs[0].name);
    ASSERT_EQ((*loaded)->outputs().size(), g.outputs.size());
    EXPECT_EQ((*loaded)->outputs()[0].type.shape, (*expected)[0].shape());
    for (int run = 0; run < 2; ++run) {  // the second run reuses the arena
      auto out = (*loaded)->Run(inputs);
      ASSERT_TRUE(out.ok()) << out.status();
      ExpectClose(*out, in_memory, 1e-6,
                  absl::StrCat(what, " loaded vs in-memory, ", threads, " threads"));
      ExpectClose(*out, *expected, 1e-3, absl::StrCat(what, " loaded vs reference"));
    }
  }
}

std::map<std::string, graph::Tensor> ZooInputs(const graph::Graph& g) {
  std::map<std::string, graph::Tensor> in;
  for (const graph::ValueInfo& v : g.inputs) in[v.name] = RandomInput(v.type.shape, 7);
  return in;
}

TEST(ArtifactTest, ZooModelsRoundTrip) {
  for (const std::string name : {"tiny_cnn", "resnet18"}) {
    SCOPED_TRACE(name);
    auto m = frontend::LoadModel(absl::StrCat("zoo:", name));
    ASSERT_TRUE(m.ok()) << m.status();
    CompileStats stats;
    RoundTrip(m->graph, ZooInputs(m->graph), FreshDir(name), name, &stats);
    EXPECT_GT(stats.kernel_steps, 0);
  }
}

// Reference-kernel steps (what no generated kernel covers: here an integer division by a value
// known only at run time) survive export, next to generated kernels, with int64 inputs and
// several outputs.
TEST(ArtifactTest, ReferenceStepsRoundTrip) {
  graph::Graph g;
  g.inputs = {{"x", {graph::DType::kFloat32, {3, 8}}},
              {"a", {graph::DType::kInt64, {5}}},
              {"b", {graph::DType::kInt64, {5}}}};
  g.initializers["w"] = RandomInput({4, 8}, 3);
  g.initializers["bias"] = RandomInput({4}, 4);
  graph::Node gemm;
  gemm.name = "fc";
  gemm.op_type = "Gemm";
  gemm.inputs = {"x", "w", "bias"};
  gemm.outputs = {"y"};
  gemm.attrs["transB"] = int64_t{1};
  graph::Node div;
  div.name = "div";
  div.op_type = "Div";
  div.inputs = {"a", "b"};
  div.outputs = {"q"};
  g.nodes = {gemm, div};
  g.outputs = {{"y", {}}, {"q", {}}};
  ASSERT_TRUE(graph::InferShapes(g).ok());
  for (graph::ValueInfo& o : g.outputs) o.type = g.value_types[o.name];
  auto cm = CompiledModel::Compile(g, Options(1));
  ASSERT_TRUE(cm.ok()) << cm.status();
  ASSERT_EQ((*cm)->stats().reference_steps, 1) << (*cm)->DescribePlan();
  EXPECT_EQ((*cm)->stats().kernel_steps, 1) << (*cm)->DescribePlan();
  std::map<std::string, graph::Tensor> inputs = {
      {"x", RandomInput({3, 8}, 5)},
      {"a", graph::Tensor::FromInt64s({5}, std::vector<int64_t>{7, -7, 100, 3, -9})},
      {"b", graph::Tensor::FromInt64s({5}, std::vector<int64_t>{2, 2, -7, 5, 4})}};
  auto want = (*cm)->Run(inputs);
  ASSERT_TRUE(want.ok()) << want.status();
  const std::string dir = FreshDir("reference_steps");
  ASSERT_TRUE((*cm)->Export(dir, Export()).ok());
  auto loaded = CompiledModel::Load(dir, {});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_EQ((*loaded)->stats().reference_steps, 1);
  auto got = (*loaded)->Run(inputs);
  ASSERT_TRUE(got.ok()) << got.status();
  ASSERT_EQ(got->size(), 2u);
  ExpectClose({(*got)[0]}, {(*want)[0]}, 1e-6, "the dense output");
  ASSERT_EQ((*got)[1].dtype(), graph::DType::kInt64);
  for (int64_t i = 0; i < 5; ++i) {
    EXPECT_EQ((*got)[1].data<int64_t>()[i], (*want)[1].data<int64_t>()[i]) << i;
  }
}

std::string Slurp(const std::string& path) {
  std::ifstream f(path, std::ios::binary);
  std::ostringstream ss;
  ss << f.rdbuf();
  return ss.str();
}
void Spit(const std::string& path, const std::string& data) {
  std::ofstream f(path, std::ios::binary | std::ios::trunc);
  f << data;
}

// One good artifact of tiny_cnn, copied and damaged per case.
class DamagedArtifactTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    auto m = frontend::LoadModel("zoo:tiny_cnn");
    ASSERT_TRUE(m.ok());
    auto cm = CompiledModel::Compile(m->graph, Options(1));
    ASSERT_TRUE(cm.ok()) << cm.status();
    good_ = new std::string(FreshDir("good"));
    ASSERT_TRUE((*cm)->Export(*good_, Export()).ok());
  }
  static void TearDownTestSuite() { delete good_; }

  std::string Copy(const std::string& name) {
    const std::string dir = FreshDir(name);
    std::filesystem::copy(*good_, dir, std::filesystem::copy_options::recursive);
    return dir;
  }
  void EditPlan(const std::string& dir, const std::function<void(nlohmann::json&)>& edit) {
    nlohmann::json j = nlohmann::json::parse(Slurp(dir + "/plan.json"));
    edit(j);
    Spit(dir + "/plan.json", j.dump());
  }

  static std::string* good_;
};
std::string* DamagedArtifactTest::good_ = nullptr;

TEST_F(DamagedArtifactTest, GoodCopyLoads) {
  auto loaded = CompiledModel::Load(Copy("copy"), {});
  EXPECT_TRUE(loaded.ok()) << loaded.status();
}

TEST_F(DamagedArtifactTest, CorruptWeightsAreDataLoss) {
  const std::string dir = Copy("corrupt_weights");
  std::string w = Slurp(dir + "/weights.bin");
  w[w.size() / 2] ^= 0x40;
  Spit(dir + "/weights.bin", w);
  auto loaded = CompiledModel::Load(dir, {});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(loaded.status().message(), HasSubstr("weights.bin is corrupt"));
}

TEST_F(DamagedArtifactTest, TruncatedLibraryIsDataLoss) {
  const std::string dir = Copy("truncated_library");
  std::string so = Slurp(dir + "/model.so");
  Spit(dir + "/model.so", so.substr(0, so.size() / 2));
  auto loaded = CompiledModel::Load(dir, {});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(loaded.status().message(), HasSubstr("model.so is corrupt"));
}

TEST_F(DamagedArtifactTest, MissingFilesAreNotFound) {
  const std::string dir = Copy("missing_weights");
  std::filesystem::remove(dir + "/weights.bin");
  auto loaded = CompiledModel::Load(dir, {});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(loaded.status().message(), HasSubstr("weights.bin"));

  const std::string empty = FreshDir("empty");
  std::filesystem::create_directories(empty);
  EXPECT_FALSE(IsArtifactDir(empty));
  auto none = CompiledModel::Load(empty, {});
  EXPECT_EQ(none.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(none.status().message(), HasSubstr("not a Loom artifact"));
  EXPECT_EQ(CompiledModel::Load(FreshDir("absent"), {}).status().code(),
            absl::StatusCode::kNotFound);
}

TEST_F(DamagedArtifactTest, OtherFormatVersionIsRefused) {
  const std::string dir = Copy("version");
  EditPlan(dir, [](nlohmann::json& j) { j["format_version"] = kArtifactFormatVersion + 1; });
  auto loaded = CompiledModel::Load(dir, {});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(loaded.status().message(),
              HasSubstr(absl::StrCat("format version ", kArtifactFormatVersion + 1)));
}

TEST_F(DamagedArtifactTest, WiderIsaThanTheHostIsRefused) {
  const std::string dir = Copy("isa");
  EditPlan(dir, [](nlohmann::json& j) { j["target"]["isa"] = "avx512"; });
  auto loaded = CompiledModel::Load(dir, {.host_isa = ops::Isa::kAvx2});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(loaded.status().message(), HasSubstr("compiled for avx512"));
  EXPECT_THAT(loaded.status().message(), HasSubstr("supports only avx2"));
  // A narrower artifact runs on a wider CPU.
  const std::string generic = Copy("isa_generic");
  EditPlan(generic, [](nlohmann::json& j) { j["target"]["isa"] = "generic"; });
  EXPECT_TRUE(CompiledModel::Load(generic, {.host_isa = ops::Isa::kAvx512}).ok());
}

TEST_F(DamagedArtifactTest, MalformedOrInconsistentPlanIsDataLoss) {
  const std::string dir = Copy("malformed");
  Spit(dir + "/plan.json", "{\"format\": \"loom-artifact\", \"format_version\": 1,");
  auto loaded = CompiledModel::Load(dir, {});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(loaded.status().message(), HasSubstr("malformed"));

  const std::string bad_kernel = Copy("bad_kernel_index");
  EditPlan(bad_kernel, [](nlohmann::json& j) {
    for (auto& s : j["steps"]) {
      if (s["op"] == "kernel") s["kernel"] = 999;
    }
  });
  loaded = CompiledModel::Load(bad_kernel, {});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(loaded.status().message(), HasSubstr("out of range"));
}

// Issue 18's tampered artifacts: each was a crash (or an abort) and is now one error line.
TEST_F(DamagedArtifactTest, TamperedPlansAreRefusedNotRun) {
  const std::string offset = Copy("offset_near_2_63");
  EditPlan(offset,
           [](nlohmann::json& j) { j["constants"][0]["offset"] = int64_t{9223372036854775000}; });
  auto loaded = CompiledModel::Load(offset, {});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(loaded.status().message(), HasSubstr("offset out of range"));

  // A kernel's data argument pointed at a small buffer.
  const std::string small = Copy("small_argument");
  EditPlan(small, [](nlohmann::json& j) {
    j["buffers"].push_back({{"offset", 0}, {"bytes", 64}, {"what", "tiny"}});
    for (auto& s : j["steps"]) {
      if (s["op"] == "kernel") {
        s["args"][0] = {"arena", j["buffers"].size() - 1};
        break;
      }
    }
  });
  loaded = CompiledModel::Load(small, {});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(loaded.status().message(),
              HasSubstr("argument 0 with 64 bytes where the kernel reads"));

  // plan.json's argument table differs from the one in model.so.
  const std::string table = Copy("argument_table");
  EditPlan(table, [](nlohmann::json& j) { j["kernels"][0]["bytes"][0] = 64; });
  loaded = CompiledModel::Load(table, {});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kDataLoss);
  EXPECT_THAT(loaded.status().message(), HasSubstr("differ from what"));

  // Thread counts are capped at the host's cores.
  const std::string threads = Copy("threads");
  EditPlan(threads, [](nlohmann::json& j) { j["num_threads"] = 100000; });
  loaded = CompiledModel::Load(threads, {});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_LE((*loaded)->num_threads(), static_cast<int32_t>(std::thread::hardware_concurrency()));
  EXPECT_TRUE((*loaded)->Run(ZooInputs(frontend::LoadModel("zoo:tiny_cnn")->graph)).ok());
}

// Ed25519 keys written as PEM files for the signing tests.
struct KeyFiles {
  std::string private_pem, public_pem;
};
KeyFiles MakeKeys(const std::string& dir, const std::string& name, int type = EVP_PKEY_ED25519) {
  std::filesystem::create_directories(dir);
  EVP_PKEY* key = nullptr;
  EVP_PKEY_CTX* ctx = EVP_PKEY_CTX_new_id(type, nullptr);
  EXPECT_NE(ctx, nullptr);
  EXPECT_EQ(EVP_PKEY_keygen_init(ctx), 1);
  if (type == EVP_PKEY_RSA) EVP_PKEY_CTX_set_rsa_keygen_bits(ctx, 1024);
  EXPECT_EQ(EVP_PKEY_keygen(ctx, &key), 1);
  EVP_PKEY_CTX_free(ctx);
  KeyFiles k{absl::StrCat(dir, "/", name, ".pem"), absl::StrCat(dir, "/", name, ".pub.pem")};
  FILE* f = std::fopen(k.private_pem.c_str(), "w");
  PEM_write_PrivateKey(f, key, nullptr, nullptr, 0, nullptr, nullptr);
  std::fclose(f);
  f = std::fopen(k.public_pem.c_str(), "w");
  PEM_write_PUBKEY(f, key);
  std::fclose(f);
  EVP_PKEY_free(key);
  return k;
}

TEST_F(DamagedArtifactTest, SignedArtifactsVerify) {
  const std::string keys = FreshDir("keys");
  const KeyFiles mine = MakeKeys(keys, "mine"), other = MakeKeys(keys, "other");
  const std::string dir = Copy("signed");
  // Unsigned: --verify refuses it.
  auto loaded = CompiledModel::Load(dir, {.verify_key = mine.public_pem});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(loaded.status().message(), HasSubstr("is not signed"));
  ASSERT_TRUE(SignArtifact(dir, mine.private_pem).ok());
  EXPECT_TRUE(std::filesystem::exists(std::filesystem::path(dir) / kArtifactSignatureFile));
  loaded = CompiledModel::Load(dir, {.verify_key = mine.public_pem});
  ASSERT_TRUE(loaded.ok()) << loaded.status();
  EXPECT_TRUE((*loaded)->Run(ZooInputs(frontend::LoadModel("zoo:tiny_cnn")->graph)).ok());
  // The private key file serves as the public one too.
  EXPECT_TRUE(CompiledModel::Load(dir, {.verify_key = mine.private_pem}).ok());
  // Another key.
  loaded = CompiledModel::Load(dir, {.verify_key = other.public_pem});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(loaded.status().message(), HasSubstr("does not verify"));
  // A changed file (a weight byte, with plan.json's checksum fixed up so only the signature
  // catches it).
  const std::string changed = Copy("signed_changed");
  ASSERT_TRUE(SignArtifact(changed, mine.private_pem).ok());
  std::string w = Slurp(changed + "/weights.bin");
  w[w.size() - 1] ^= 1;
  Spit(changed + "/weights.bin", w);
  EditPlan(changed, [&](nlohmann::json& j) {
    j["weights"]["fnv1a64"] = absl::StrFormat("%016x", Fnv1a64(w));
  });
  loaded = CompiledModel::Load(changed, {.verify_key = mine.public_pem});
  EXPECT_EQ(loaded.status().code(), absl::StatusCode::kPermissionDenied);
  EXPECT_THAT(loaded.status().message(), HasSubstr("does not match the signed manifest"));
  EXPECT_TRUE(CompiledModel::Load(changed, {}).ok());  // without --verify: the checksums pass
  // A tampered signature file.
  const std::string sig = Copy("signed_bad_sig");
  ASSERT_TRUE(SignArtifact(sig, mine.private_pem).ok());
  std::string raw = Slurp(sig + "/" + kArtifactSignatureFile);
  raw[0] ^= 1;
  Spit(sig + "/" + kArtifactSignatureFile, raw);
  EXPECT_EQ(CompiledModel::Load(sig, {.verify_key = mine.public_pem}).status().code(),
            absl::StatusCode::kPermissionDenied);
  // Keys that are missing or not Ed25519.
  EXPECT_EQ(SignArtifact(dir, keys + "/absent.pem").code(), absl::StatusCode::kNotFound);
  const KeyFiles rsa = MakeKeys(keys, "rsa", EVP_PKEY_RSA);
  absl::Status st = SignArtifact(dir, rsa.private_pem);
  EXPECT_EQ(st.code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(st.message(), HasSubstr("not an Ed25519 private key"));
  // Export again removes the old signature (it would not cover the new files).
  auto m = frontend::LoadModel("zoo:tiny_cnn");
  auto cm = CompiledModel::Compile(m->graph, Options(1));
  ASSERT_TRUE(cm.ok());
  ASSERT_TRUE((*cm)->Export(dir, Export()).ok());
  EXPECT_FALSE(std::filesystem::exists(std::filesystem::path(dir) / kArtifactSignatureFile));
}

TEST_F(DamagedArtifactTest, LoadedModelCannotBeExportedAgain) {
  auto loaded = CompiledModel::Load(Copy("reexport"), {});
  ASSERT_TRUE(loaded.ok());
  absl::Status st = (*loaded)->Export(FreshDir("reexport_out"), Export());
  EXPECT_EQ(st.code(), absl::StatusCode::kFailedPrecondition);
  EXPECT_THAT(st.message(), HasSubstr("loaded from an artifact"));
}

}  // namespace
}  // namespace loom::runtime
