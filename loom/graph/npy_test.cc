#include "loom/graph/npy.h"

#include <unistd.h>

#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <string>
#include <vector>

#include "gmock/gmock.h"
#include "gtest/gtest.h"

namespace loom::graph {
namespace {

namespace fs = std::filesystem;
using ::testing::ElementsAre;
using ::testing::HasSubstr;

fs::path TempPath(const std::string& name) {
  return fs::path(::testing::TempDir()) / ("loom_npy_" + std::to_string(::getpid()) + "_" + name);
}

// A version 1.0 file with the given header dict and data bytes (header padded like NumPy's).
std::string NpyV1(const std::string& dict, const std::string& data) {
  std::string header = dict;
  while ((10 + header.size() + 1) % 64 != 0) header.push_back(' ');
  header.push_back('\n');
  std::string out("\x93NUMPY\x01\x00", 8);
  out.push_back(static_cast<char>(header.size() & 0xff));
  out.push_back(static_cast<char>(header.size() >> 8));
  return out + header + data;
}

TEST(NpyTest, RoundTripsEveryDtype) {
  std::vector<Tensor> tensors;
  tensors.push_back(Tensor::FromFloats({2, 3}, std::vector<float>{1, 2, 3, 4, 5, -6.5f}));
  tensors.push_back(Tensor::FromInt64s({3}, std::vector<int64_t>{-1, 0, 1LL << 50}));
  tensors.push_back(Tensor::ScalarFloat(3.25f));
  for (DType d : {DType::kInt32, DType::kBool, DType::kUint8, DType::kInt8}) {
    Tensor t(d, {2, 2});
    auto* bytes = static_cast<uint8_t*>(t.raw_data());
    for (size_t i = 0; i < t.num_bytes(); ++i) bytes[i] = static_cast<uint8_t>(i % 2 ? 1 : 0);
    tensors.push_back(t);
  }
  tensors.push_back(Tensor(DType::kFloat32, {0, 4}));
  for (const Tensor& t : tensors) {
    auto encoded = EncodeNpy(t);
    ASSERT_TRUE(encoded.ok()) << encoded.status();
    // Data starts on a 64-byte boundary, as NumPy writes it.
    EXPECT_EQ((encoded->size() - t.num_bytes()) % 64, 0u);
    auto decoded = DecodeNpy(*encoded);
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->type(), t.type()) << t.type().ToString();
    EXPECT_EQ(std::memcmp(decoded->raw_data(), t.raw_data(), t.num_bytes()), 0);
  }
}

TEST(NpyTest, WritesNumpyCompatibleHeader) {
  auto encoded = EncodeNpy(Tensor::FromInt64s({5}, std::vector<int64_t>{1, 2, 3, 4, 5}));
  ASSERT_TRUE(encoded.ok());
  EXPECT_EQ(encoded->substr(0, 8), std::string("\x93NUMPY\x01\x00", 8));
  EXPECT_THAT(*encoded, HasSubstr("{'descr': '<i8', 'fortran_order': False, 'shape': (5,), }"));
  auto scalar = EncodeNpy(Tensor::ScalarFloat(1));
  EXPECT_THAT(*scalar, HasSubstr("'shape': (), }"));
}

TEST(NpyTest, FileRoundTrip) {
  fs::path path = TempPath("file.npy");
  Tensor t = Tensor::FromFloats({1, 2}, std::vector<float>{7, 8});
  ASSERT_TRUE(WriteNpy(t, path.string()).ok());
  auto back = ReadNpy(path.string());
  ASSERT_TRUE(back.ok()) << back.status();
  EXPECT_THAT(back->values<float>(), ElementsAre(7, 8));
  fs::remove(path);
}

TEST(NpyTest, ReadsVersion2AndDoubleQuotedKeys) {
  std::string dict = "{\"descr\": \"|u1\", \"shape\": (2, 1), \"fortran_order\": False}";
  std::string header = dict + "\n";
  std::string bytes("\x93NUMPY\x02\x00", 8);
  uint32_t len = static_cast<uint32_t>(header.size());
  for (int i = 0; i < 4; ++i) bytes.push_back(static_cast<char>((len >> (8 * i)) & 0xff));
  bytes += header;
  bytes += std::string("\x05\x06", 2);
  auto t = DecodeNpy(bytes);
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->type(), (TensorType{DType::kUint8, {2, 1}}));
  EXPECT_THAT(t->values<uint8_t>(), ElementsAre(5, 6));
}

TEST(NpyTest, RejectsFortranOrder) {
  auto t = DecodeNpy(
      NpyV1("{'descr': '<f4', 'fortran_order': True, 'shape': (1,), }", std::string(4, '\0')),
      "f.npy");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(t.status().message(), HasSubstr("f.npy is in Fortran order"));
}

TEST(NpyTest, RejectsMalformedHeaders) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"{'descr': '<f4', 'shape': (1,), }", "are all required"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,-2), }", "dimension"},
      {"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (1,), }", "True or False"},
      {"{'descr': '<f4', 'fortran_order': False, 'shape': (1,), 'extra': 1}", "unknown key"},
      {"['descr', '<f4']", "expected '{'"},
      {"{'descr: '<f4'", "expected ':'"},
  };
  for (const auto& [dict, expected] : cases) {
    auto t = DecodeNpy(NpyV1(dict, std::string(4, '\0')), "bad.npy");
    EXPECT_EQ(t.status().code(), absl::StatusCode::kInvalidArgument) << dict;
    EXPECT_THAT(t.status().message(), HasSubstr("malformed .npy header")) << dict;
    EXPECT_THAT(t.status().message(), HasSubstr(expected)) << dict;
  }
}

TEST(NpyTest, RejectsUnsupportedDtypeMagicVersionAndSize) {
  auto be = DecodeNpy(
      NpyV1("{'descr': '>f4', 'fortran_order': False, 'shape': (1,), }", std::string(4, '\0')));
  EXPECT_EQ(be.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(be.status().message(), HasSubstr("dtype '>f4'"));
  auto f8 = DecodeNpy(
      NpyV1("{'descr': '<f8', 'fortran_order': False, 'shape': (1,), }", std::string(8, '\0')));
  EXPECT_THAT(f8.status().message(), HasSubstr("dtype '<f8'"));

  auto magic = DecodeNpy("PK\x03\x04 not npy", "x.npz");
  EXPECT_EQ(magic.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(magic.status().message(), HasSubstr("x.npz is not a .npy file"));

  std::string v9 =
      NpyV1("{'descr': '<f4', 'fortran_order': False, 'shape': (), }", std::string(4, '\0'));
  v9[6] = 9;
  EXPECT_THAT(DecodeNpy(v9).status().message(), HasSubstr("format version 9.0"));

  auto short_data = DecodeNpy(
      NpyV1("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", std::string(12, '\0')));
  EXPECT_EQ(short_data.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(short_data.status().message(), HasSubstr("holds 12 data bytes"));

  auto huge = DecodeNpy(NpyV1(
      "{'descr': '<f4', 'fortran_order': False, 'shape': (1000000000000, 1000000000000), }", ""));
  EXPECT_EQ(huge.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(huge.status().message(), HasSubstr("too large"));

  std::string cut = NpyV1("{'descr': '<f4', 'fortran_order': False, 'shape': (1,), }", "");
  EXPECT_THAT(DecodeNpy(cut.substr(0, 20)).status().message(), HasSubstr("truncated"));
}

TEST(NpyTest, MissingFileIsNotFound) {
  auto t = ReadNpy("/nonexistent/x.npy");
  EXPECT_EQ(t.status().code(), absl::StatusCode::kNotFound);
  EXPECT_THAT(t.status().message(), HasSubstr("/nonexistent/x.npy"));
}

// Interop with real NumPy, when the system Python has it (the other tests do not need Python).
TEST(NpyTest, InteropWithNumpy) {
  if (std::system("/usr/bin/python3 -c 'import numpy' >/dev/null 2>&1") != 0) {
    GTEST_SKIP() << "/usr/bin/python3 with numpy not available";
  }
  fs::path from_numpy = TempPath("from_numpy.npy");
  fs::path from_loom = TempPath("from_loom.npy");
  std::string cmd = "/usr/bin/python3 -c \"import numpy as np; np.save('" + from_numpy.string() +
                    "', np.arange(6, dtype=np.float32).reshape(2, 3) * 1.5)\"";
  ASSERT_EQ(std::system(cmd.c_str()), 0);
  auto t = ReadNpy(from_numpy.string());
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->type(), (TensorType{DType::kFloat32, {2, 3}}));
  EXPECT_THAT(t->values<float>(), ElementsAre(0, 1.5f, 3, 4.5f, 6, 7.5f));

  ASSERT_TRUE(WriteNpy(Tensor::FromInt64s({2, 2}, std::vector<int64_t>{1, -2, 3, 1LL << 40}),
                       from_loom.string())
                  .ok());
  cmd = "/usr/bin/python3 -c \"import numpy as np, sys; a = np.load('" + from_loom.string() +
        "'); sys.exit(0 if a.dtype == np.int64 and a.shape == (2, 2) and "
        "a.tolist() == [[1, -2], [3, 1 << 40]] else 1)\"";
  EXPECT_EQ(std::system(cmd.c_str()), 0);
  fs::remove(from_numpy);
  fs::remove(from_loom);
}

}  // namespace
}  // namespace loom::graph
