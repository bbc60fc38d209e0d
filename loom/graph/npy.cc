#include "loom/graph/npy.h"

#include <cstring>
#include <filesystem>
#include <fstream>
#include <optional>
#include <system_error>
#include <utility>
#include <vector>

#include "absl/strings/numbers.h"
#include "absl/strings/str_cat.h"
#include "absl/strings/str_join.h"
#include "loom/base/status_macros.h"

namespace loom::graph {
namespace {

constexpr char kMagic[] = "\x93NUMPY";
constexpr size_t kMagicLen = 6;
// Largest header we accept; NumPy's own limit for reading is 10,000 bytes.
constexpr size_t kMaxHeaderLen = size_t{1} << 20;

const char* DescrOf(DType dtype) {
  switch (dtype) {
    case DType::kFloat32:
      return "<f4";
    case DType::kInt64:
      return "<i8";
    case DType::kInt32:
      return "<i4";
    case DType::kBool:
      return "|b1";
    case DType::kUint8:
      return "|u1";
    case DType::kInt8:
      return "|i1";
    case DType::kFloat16:
      return "<f2";
    case DType::kFloat64:
      return "<f8";
    case DType::kInt16:
      return "<i2";
    case DType::kUint16:
      return "<u2";
    case DType::kUint32:
      return "<u4";
    case DType::kUint64:
      return "<u8";
    case DType::kBFloat16:  // NumPy has no bfloat16: ml_dtypes writes it as 2-byte void
      return "<V2";
    case DType::kUndefined:
      break;
  }
  return "";
}

// The dtype of a descr; a raw 2-byte void ('<V2', '|V2') is bfloat16 only under that hint.
std::optional<DType> DTypeOfDescr(std::string_view descr, DType hint) {
  if ((descr == "<V2" || descr == "|V2") && hint == DType::kBFloat16) return DType::kBFloat16;
  if (descr == "<f4") return DType::kFloat32;
  if (descr == "<i8") return DType::kInt64;
  if (descr == "<i4") return DType::kInt32;
  if (descr == "<f2") return DType::kFloat16;
  if (descr == "<f8") return DType::kFloat64;
  if (descr == "<i2") return DType::kInt16;
  if (descr == "<u2") return DType::kUint16;
  if (descr == "<u4") return DType::kUint32;
  if (descr == "<u8") return DType::kUint64;
  // One-byte types have no byte order; NumPy writes '|', accept the other spellings too.
  if (descr == "|b1" || descr == "<b1" || descr == "=b1") return DType::kBool;
  if (descr == "|u1" || descr == "<u1" || descr == "=u1") return DType::kUint8;
  if (descr == "|i1" || descr == "<i1" || descr == "=i1") return DType::kInt8;
  return std::nullopt;
}

// Parser for the header, a Python dict literal such as
// {'descr': '<f4', 'fortran_order': False, 'shape': (1, 3, 224, 224), }
class HeaderParser {
 public:
  HeaderParser(std::string_view text, std::string what) : text_(text), what_(std::move(what)) {}

  absl::Status Parse() {
    SkipSpace();
    if (!Consume('{')) return Error("expected '{'");
    while (true) {
      SkipSpace();
      if (Consume('}')) break;
      LOOM_ASSIGN_OR_RETURN(std::string key, ParseString());
      SkipSpace();
      if (!Consume(':')) return Error("expected ':' after a key");
      SkipSpace();
      if (key == "descr") {
        LOOM_ASSIGN_OR_RETURN(descr, ParseString());
      } else if (key == "fortran_order") {
        LOOM_ASSIGN_OR_RETURN(fortran_order, ParseBool());
      } else if (key == "shape") {
        LOOM_ASSIGN_OR_RETURN(shape, ParseTuple());
      } else {
        return Error("unknown key '" + key + "'");
      }
      SkipSpace();
      if (Consume(',')) continue;
      SkipSpace();
      if (!Consume('}')) return Error("expected ',' or '}'");
      break;
    }
    SkipSpace();
    if (pos_ != text_.size()) return Error("unexpected text after the dict");
    if (!descr.has_value() || !fortran_order.has_value() || !shape.has_value()) {
      return Error("'descr', 'fortran_order' and 'shape' are all required");
    }
    return absl::OkStatus();
  }

  std::optional<std::string> descr;
  std::optional<bool> fortran_order;
  std::optional<Shape> shape;

 private:
  absl::Status Error(const std::string& msg) const {
    return absl::InvalidArgumentError(
        absl::StrCat(what_, " has a malformed .npy header (", msg, " at offset ", pos_, ")"));
  }
  void SkipSpace() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t' ||
                                   text_[pos_] == '\n' || text_[pos_] == '\r')) {
      ++pos_;
    }
  }
  bool Consume(char c) {
    if (pos_ < text_.size() && text_[pos_] == c) {
      ++pos_;
      return true;
    }
    return false;
  }
  absl::StatusOr<std::string> ParseString() {
    if (pos_ >= text_.size() || (text_[pos_] != '\'' && text_[pos_] != '"')) {
      return Error("expected a quoted string");
    }
    const char quote = text_[pos_++];
    const size_t end = text_.find(quote, pos_);
    if (end == std::string_view::npos) return Error("unterminated string");
    std::string s(text_.substr(pos_, end - pos_));
    pos_ = end + 1;
    return s;
  }
  absl::StatusOr<bool> ParseBool() {
    if (text_.substr(pos_, 4) == "True") {
      pos_ += 4;
      return true;
    }
    if (text_.substr(pos_, 5) == "False") {
      pos_ += 5;
      return false;
    }
    return Error("expected True or False");
  }
  absl::StatusOr<Shape> ParseTuple() {
    if (!Consume('(')) return Error("expected '(' for the shape");
    Shape dims;
    while (true) {
      SkipSpace();
      if (Consume(')')) break;
      const size_t start = pos_;
      while (pos_ < text_.size() && text_[pos_] >= '0' && text_[pos_] <= '9') ++pos_;
      int64_t d = 0;
      if (pos_ == start ||
          !absl::SimpleAtoi(absl::string_view(text_.data() + start, pos_ - start), &d)) {
        return Error("expected a non-negative integer dimension");
      }
      dims.push_back(d);
      SkipSpace();
      if (Consume(',')) continue;
      if (!Consume(')')) return Error("expected ',' or ')' in the shape");
      break;
    }
    return dims;
  }

  std::string_view text_;
  std::string what_;
  size_t pos_ = 0;
};

}  // namespace

absl::StatusOr<Tensor> DecodeNpy(std::string_view bytes, std::string_view what_view,
                                 const NpyReadOptions& options) {
  const std::string what(what_view);
  if (bytes.size() < kMagicLen + 2 || bytes.substr(0, kMagicLen) != kMagic) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is not a .npy file (missing the \\x93NUMPY magic)"));
  }
  const auto major = static_cast<uint8_t>(bytes[kMagicLen]);
  size_t header_len = 0;
  size_t prefix = 0;
  if (major == 1) {
    prefix = kMagicLen + 2 + 2;
    if (bytes.size() < prefix) {
      return absl::InvalidArgumentError(absl::StrCat(what, " is truncated in its .npy header"));
    }
    header_len = static_cast<uint8_t>(bytes[8]) | (size_t{static_cast<uint8_t>(bytes[9])} << 8);
  } else if (major == 2 || major == 3) {
    prefix = kMagicLen + 2 + 4;
    if (bytes.size() < prefix) {
      return absl::InvalidArgumentError(absl::StrCat(what, " is truncated in its .npy header"));
    }
    for (int i = 3; i >= 0; --i) {
      header_len = (header_len << 8) | static_cast<uint8_t>(bytes[8 + i]);
    }
  } else {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " has .npy format version ", static_cast<int>(major), ".",
                     static_cast<int>(static_cast<uint8_t>(bytes[kMagicLen + 1])),
                     "; Loom reads versions 1.0, 2.0 and 3.0"));
  }
  if (header_len > kMaxHeaderLen || bytes.size() - prefix < header_len) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " is truncated in its .npy header (declares ", header_len,
                     " header bytes, file has ", bytes.size() - prefix, " after the prefix)"));
  }
  HeaderParser parser(bytes.substr(prefix, header_len), what);
  LOOM_RETURN_IF_ERROR(parser.Parse());
  const std::string& descr = *parser.descr;
  std::optional<DType> dtype = DTypeOfDescr(descr, options.dtype_hint);
  if (!dtype.has_value()) {
    if (descr == "<V2" || descr == "|V2") {
      return absl::InvalidArgumentError(absl::StrCat(
          what, " has dtype '", descr,
          "' (raw 2-byte values, as ml_dtypes writes bfloat16); it is read as bfloat16 only where "
          "bfloat16 is expected",
          options.dtype_hint == DType::kUndefined
              ? ""
              : absl::StrCat(", and ", DTypeName(options.dtype_hint), " is expected here")));
    }
    if (!descr.empty() && descr[0] == '>') {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " is big-endian (dtype '", descr,
                       "'); Loom reads little-endian data (save it with arr.astype(arr.dtype."
                       "newbyteorder('<')))"));
    }
    return absl::InvalidArgumentError(absl::StrCat(
        what, " has dtype '", descr,
        "', which Loom does not read (little-endian f2, f4, f8, i1..i8, u1..u8, b1; V2 as "
        "bfloat16)"));
  }
  const Shape& shape = *parser.shape;
  // Check the data size against the (untrusted) shape before allocating.
  size_t elems = 1;
  for (int64_t d : shape) {
    if (d != 0 && elems > Tensor::kMaxBytes / static_cast<size_t>(d)) {
      return absl::InvalidArgumentError(
          absl::StrCat(what, " has shape ", ShapeToString(shape), ", which is too large"));
    }
    elems *= static_cast<size_t>(d);
  }
  const size_t data_bytes = bytes.size() - prefix - header_len;
  if (elems > Tensor::kMaxBytes / DTypeSize(*dtype) || elems * DTypeSize(*dtype) != data_bytes) {
    return absl::InvalidArgumentError(
        absl::StrCat(what, " declares ", DTypeName(*dtype), ShapeToString(shape), " (", elems,
                     " elements) but holds ", data_bytes, " data bytes"));
  }
  auto created = Tensor::Create(*dtype, shape);
  if (!created.ok()) {
    return absl::InvalidArgumentError(absl::StrCat(what, ": ", created.status().message()));
  }
  Tensor t = *std::move(created);
  const char* data = bytes.data() + prefix + header_len;
  if (data_bytes == 0) return t;
  if (!*parser.fortran_order || shape.size() < 2) {
    std::memcpy(t.raw_data(), data, data_bytes);
    return t;
  }
  // Fortran order: dim 0 varies fastest. Walk the C-order output, tracking the source offset.
  const size_t esize = DTypeSize(*dtype);
  const size_t rank = shape.size();
  std::vector<size_t> f_strides(rank, 1);
  for (size_t d = 1; d < rank; ++d) {
    f_strides[d] = f_strides[d - 1] * static_cast<size_t>(shape[d - 1]);
  }
  std::vector<int64_t> index(rank, 0);
  size_t src = 0;
  auto* dst = static_cast<char*>(t.raw_data());
  for (size_t i = 0; i < elems; ++i) {
    std::memcpy(dst + i * esize, data + src * esize, esize);
    for (size_t d = rank; d-- > 0;) {
      src += f_strides[d];
      if (++index[d] < shape[d]) break;
      src -= f_strides[d] * static_cast<size_t>(shape[d]);
      index[d] = 0;
    }
  }
  return t;
}

absl::StatusOr<std::string> EncodeNpy(const Tensor& tensor) {
  if (!tensor.defined()) return absl::InvalidArgumentError("cannot write an undefined tensor");
  std::string shape = absl::StrJoin(tensor.shape(), ", ");
  if (tensor.rank() == 1) shape += ",";
  std::string header = absl::StrCat("{'descr': '", DescrOf(tensor.dtype()),
                                    "', 'fortran_order': False, 'shape': (", shape, "), }");
  // Pad with spaces so the data starts on a 64-byte boundary; the header ends with '\n'.
  size_t prefix = kMagicLen + 2 + 2;
  int major = 1;
  if (header.size() + 1 + prefix > 0xffff) {
    prefix = kMagicLen + 2 + 4;
    major = 2;
  }
  const size_t total = (prefix + header.size() + 1 + 63) / 64 * 64;
  header.append(total - prefix - header.size() - 1, ' ');
  header.push_back('\n');

  std::string out(kMagic, kMagicLen);
  out.push_back(static_cast<char>(major));
  out.push_back('\0');
  const size_t len = header.size();
  out.push_back(static_cast<char>(len & 0xff));
  out.push_back(static_cast<char>((len >> 8) & 0xff));
  if (major == 2) {
    out.push_back(static_cast<char>((len >> 16) & 0xff));
    out.push_back(static_cast<char>((len >> 24) & 0xff));
  }
  out += header;
  out.append(static_cast<const char*>(tensor.raw_data()), tensor.num_bytes());
  return out;
}

absl::StatusOr<Tensor> ReadNpy(const std::string& path, const NpyReadOptions& options) {
  std::error_code ec;
  if (!std::filesystem::is_regular_file(path, ec)) {
    return absl::NotFoundError(
        absl::StrCat(".npy file '", path, "' does not exist or is not a regular file"));
  }
  const uint64_t size = std::filesystem::file_size(path, ec);
  if (ec) return absl::NotFoundError(absl::StrCat("cannot read '", path, "': ", ec.message()));
  if (size > Tensor::kMaxBytes + kMaxHeaderLen) {
    return absl::InvalidArgumentError(absl::StrCat("'", path, "' is too large (", size, " bytes)"));
  }
  std::ifstream in(path, std::ios::binary);
  if (!in) return absl::NotFoundError(absl::StrCat("cannot open '", path, "'"));
  std::string bytes(size, '\0');
  in.read(bytes.data(), static_cast<std::streamsize>(size));
  if (static_cast<uint64_t>(in.gcount()) != size) {
    return absl::DataLossError(absl::StrCat("short read from '", path, "'"));
  }
  return DecodeNpy(bytes, absl::StrCat("'", path, "'"), options);
}

absl::Status WriteNpy(const Tensor& tensor, const std::string& path) {
  LOOM_ASSIGN_OR_RETURN(std::string bytes, EncodeNpy(tensor));
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) return absl::PermissionDeniedError(absl::StrCat("cannot write '", path, "'"));
  out.write(bytes.data(), static_cast<std::streamsize>(bytes.size()));
  out.close();
  if (!out) return absl::DataLossError(absl::StrCat("writing '", path, "' failed"));
  return absl::OkStatus();
}

}  // namespace loom::graph
