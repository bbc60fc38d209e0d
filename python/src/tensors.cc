// NumPy <-> Tensor conversions (tensors.h).
#include "tensors.h"

#include <cstring>
#include <utility>
#include <vector>

#include "absl/strings/str_cat.h"
#include "status.h"

namespace py = pybind11;

namespace loom::python {

py::dtype NumpyDType(graph::DType dtype) {
  switch (dtype) {
    case graph::DType::kFloat32:
      return py::dtype("float32");
    case graph::DType::kFloat64:
      return py::dtype("float64");
    case graph::DType::kFloat16:
      return py::dtype("float16");
    case graph::DType::kInt8:
      return py::dtype("int8");
    case graph::DType::kInt16:
      return py::dtype("int16");
    case graph::DType::kInt32:
      return py::dtype("int32");
    case graph::DType::kInt64:
      return py::dtype("int64");
    case graph::DType::kUint8:
      return py::dtype("uint8");
    case graph::DType::kUint16:
      return py::dtype("uint16");
    case graph::DType::kUint32:
      return py::dtype("uint32");
    case graph::DType::kUint64:
      return py::dtype("uint64");
    case graph::DType::kBool:
      return py::dtype("bool");
    default:
      throw StatusError(absl::UnimplementedError(
          absl::StrCat(graph::DTypeName(dtype), " tensors have no NumPy dtype")));
  }
}

graph::DType LoomDType(const py::dtype& dtype, const std::string& what) {
  const char kind = dtype.kind();
  const size_t size = static_cast<size_t>(dtype.itemsize());
  for (graph::DType d :
       {graph::DType::kFloat32, graph::DType::kFloat64, graph::DType::kFloat16, graph::DType::kInt8,
        graph::DType::kInt16, graph::DType::kInt32, graph::DType::kInt64, graph::DType::kUint8,
        graph::DType::kUint16, graph::DType::kUint32, graph::DType::kUint64, graph::DType::kBool}) {
    const py::dtype n = NumpyDType(d);
    if (n.kind() == kind && static_cast<size_t>(n.itemsize()) == size) return d;
  }
  throw StatusError(absl::InvalidArgumentError(absl::StrCat(what, " has NumPy dtype ",
                                                            dtype.attr("str").cast<std::string>(),
                                                            ", which Loom has no type for")));
}

graph::Tensor ToTensor(const py::handle& value, graph::DType dtype, const std::string& what) {
  // C-contiguous, native byte order, without changing the dtype (a cast is refused below).
  py::array array = py::array::ensure(value);
  if (!array) {
    PyErr_Clear();
    throw StatusError(absl::InvalidArgumentError(
        absl::StrCat(what, " is a ", std::string(py::str(py::type::of(value).attr("__name__"))),
                     ", not an array")));
  }
  const graph::DType got = LoomDType(array.dtype(), what);
  if (got != dtype) {
    throw StatusError(absl::InvalidArgumentError(absl::StrCat(
        what, " is ", graph::DTypeName(got), ", the model takes ", graph::DTypeName(dtype),
        " (convert it with .astype(numpy.", graph::DTypeName(dtype), "))")));
  }
  if (!(array.flags() & py::array::c_style) || !array.dtype().attr("isnative").cast<bool>()) {
    array = py::module_::import("numpy").attr("ascontiguousarray")(
        array, array.dtype().attr("newbyteorder")("="));
  }
  graph::Shape shape(array.shape(), array.shape() + array.ndim());
  graph::Tensor t = ValueOrThrow(graph::Tensor::Create(dtype, std::move(shape)));
  if (t.num_bytes() > 0) std::memcpy(t.raw_data(), array.data(), t.num_bytes());
  return t;
}

py::array ToArray(graph::Tensor tensor) {
  const py::dtype dtype = NumpyDType(tensor.dtype());
  auto* owned = new graph::Tensor(std::move(tensor));
  py::capsule base(owned, [](void* p) { delete static_cast<graph::Tensor*>(p); });
  std::vector<py::ssize_t> shape(owned->shape().begin(), owned->shape().end());
  return py::array(dtype, shape, owned->raw_data(), base);
}

}  // namespace loom::python
