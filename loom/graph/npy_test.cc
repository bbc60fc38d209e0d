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
  for (DType d : AllDTypes()) {
    Tensor t(d, {2, 3});
    auto* bytes = static_cast<uint8_t*>(t.raw_data());
    // Distinct bytes per element (bool: 0/1), so a transposed or shifted read is caught.
    for (size_t i = 0; i < t.num_bytes(); ++i) {
      bytes[i] = d == DType::kBool ? static_cast<uint8_t>(i % 2) : static_cast<uint8_t>(i * 7 + 1);
    }
    tensors.push_back(t);
  }
  tensors.push_back(Tensor(DType::kFloat32, {0, 4}));
  for (const Tensor& t : tensors) {
    auto encoded = EncodeNpy(t);
    ASSERT_TRUE(encoded.ok()) << encoded.status();
    // Data starts on a 64-byte boundary, as NumPy writes it.
    EXPECT_EQ((encoded->size() - t.num_bytes()) % 64, 0u);
    auto decoded = DecodeNpy(*encoded, "npy data", {.dtype_hint = t.dtype()});
    ASSERT_TRUE(decoded.ok()) << decoded.status();
    EXPECT_EQ(decoded->type(), t.type()) << t.type().ToString();
    EXPECT_EQ(std::memcmp(decoded->raw_data(), t.raw_data(), t.num_bytes()), 0);
  }
}

TEST(NpyTest, DescrOfEveryDtype) {
  const std::vector<std::pair<DType, std::string>> descrs = {
      {DType::kFloat16, "<f2"}, {DType::kBFloat16, "<V2"}, {DType::kFloat64, "<f8"},
      {DType::kInt8, "|i1"},    {DType::kInt16, "<i2"},    {DType::kUint16, "<u2"},
      {DType::kUint32, "<u4"},  {DType::kUint64, "<u8"},   {DType::kBool, "|b1"},
  };
  for (const auto& [dtype, descr] : descrs) {
    auto encoded = EncodeNpy(Tensor(dtype, {1}));
    ASSERT_TRUE(encoded.ok());
    EXPECT_THAT(*encoded, HasSubstr("'descr': '" + descr + "'")) << DTypeName(dtype);
  }
}

TEST(NpyTest, VoidTwoBytesIsBFloat16OnlyWithTheHint) {
  // ml_dtypes' bfloat16 [1.0, -2.0] as NumPy saves it.
  const std::string bytes = NpyV1("{'descr': '<V2', 'fortran_order': False, 'shape': (2,), }",
                                  std::string("\x80\x3f\x00\xc0", 4));
  auto t = DecodeNpy(bytes, "b.npy", {.dtype_hint = DType::kBFloat16});
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->type(), (TensorType{DType::kBFloat16, {2}}));
  EXPECT_EQ(t->DoubleAt(0), 1.0);
  EXPECT_EQ(t->DoubleAt(1), -2.0);

  auto no_hint = DecodeNpy(bytes, "b.npy");
  EXPECT_EQ(no_hint.status().code(), absl::StatusCode::kInvalidArgument);
  EXPECT_THAT(no_hint.status().message(),
              HasSubstr("b.npy has dtype '<V2' (raw 2-byte values, as ml_dtypes writes bfloat16)"));
  auto wrong_hint = DecodeNpy(bytes, "b.npy", {.dtype_hint = DType::kFloat16});
  EXPECT_THAT(wrong_hint.status().message(), HasSubstr("float16 is expected here"));
}

TEST(NpyTest, ReadsFortranOrderIntoCOrder) {
  // A 2x3 float32 array [[0,1,2],[3,4,5]] stored column-major: 0 3 1 4 2 5.
  std::vector<float> column_major = {0, 3, 1, 4, 2, 5};
  auto t = DecodeNpy(NpyV1("{'descr': '<f4', 'fortran_order': True, 'shape': (2, 3), }",
                           std::string(reinterpret_cast<const char*>(column_major.data()), 24)),
                     "f.npy");
  ASSERT_TRUE(t.ok()) << t.status();
  EXPECT_EQ(t->type(), (TensorType{DType::kFloat32, {2, 3}}));
  EXPECT_THAT(t->values<float>(), ElementsAre(0, 1, 2, 3, 4, 5));

  // Rank 3, int16: element (i, j, k) holds 100 i + 10 j + k, stored with i fastest.
  const int64_t d0 = 2, d1 = 3, d2 = 4;
  std::vector<int16_t> f(static_cast<size_t>(d0 * d1 * d2));
  for (int64_t i = 0; i < d0; ++i) {
    for (int64_t j = 0; j < d1; ++j) {
      for (int64_t k = 0; k < d2; ++k) {
        f[static_cast<size_t>(i + d0 * (j + d1 * k))] = static_cast<int16_t>(100 * i + 10 * j + k);
      }
    }
  }
  auto t3 = DecodeNpy(NpyV1("{'descr': '<i2', 'fortran_order': True, 'shape': (2, 3, 4), }",
                            std::string(reinterpret_cast<const char*>(f.data()), f.size() * 2)));
  ASSERT_TRUE(t3.ok()) << t3.status();
  for (int64_t i = 0; i < d0 * d1 * d2; ++i) {
    const int64_t want = 100 * (i / (d1 * d2)) + 10 * (i / d2 % d1) + i % d2;
    ASSERT_EQ(t3->Int64At(i), want) << i;
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
  EXPECT_THAT(be.status().message(), HasSubstr("is big-endian (dtype '>f4')"));
  auto c8 = DecodeNpy(
      NpyV1("{'descr': '<c8', 'fortran_order': False, 'shape': (1,), }", std::string(8, '\0')));
  EXPECT_THAT(c8.status().message(), HasSubstr("has dtype '<c8', which Loom does not read"));

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
