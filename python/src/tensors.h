// NumPy arrays <-> loom::graph::Tensor for the extension module: dtypes by NumPy kind and size,
// inputs copied once into Loom's aligned tensors (C order, any strides accepted), outputs handed
// to NumPy without a copy (the array keeps the tensor's buffer alive). Called with the GIL held.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <string>

#include "loom/graph/tensor.h"

namespace loom::python {

// The NumPy dtype of a Loom dtype; StatusError(kUnimplemented) for bfloat16 (NumPy has none).
pybind11::dtype NumpyDType(graph::DType dtype);
// The Loom dtype of a NumPy dtype; StatusError(kInvalidArgument) naming `what` otherwise.
graph::DType LoomDType(const pybind11::dtype& dtype, const std::string& what);

// `value` (an ndarray or anything numpy.asarray takes) as a tensor of `dtype`, without casting:
// StatusError(kInvalidArgument) naming `what` when its dtype differs.
graph::Tensor ToTensor(const pybind11::handle& value, graph::DType dtype, const std::string& what);
// The tensor as an ndarray over its own buffer (no copy).
pybind11::array ToArray(graph::Tensor tensor);

}  // namespace loom::python
