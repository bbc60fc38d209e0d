/* Loom's C API: load a compiled-model artifact (written by `loom compile MODEL -o DIR` or
 * loom::Model::Export, or a GPU artifact of `loom compile MODEL --target cuda -o DIR`) and run it.
 * Needs no compiler and no tuning database at run time. Link with libloom.so (CMake target
 * loom_shared). Plain C99; every function is thread-compatible: one model may be used by one thread
 * at a time, distinct models by different threads.
 *
 *   loom_model_t* m = NULL;
 *   if (loom_model_load("resnet18_artifact", 2, &m) != LOOM_OK) {
 *     fprintf(stderr, "%s\n", loom_last_error());
 *   }
 *   const float* in[1] = {input};   float* out[1] = {output};
 *   loom_model_run(m, in, out);
 *   loom_model_free(m);
 *
 * Tensors are dense float32 in C order (NCHW for images), sized by the shapes the queries
 * report. Errors: every call returns a loom_status_t; on failure loom_last_error() holds a
 * one-line message (per thread, valid until the next failing call on that thread). */
#ifndef LOOM_LOOM_C_H_
#define LOOM_LOOM_C_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* The codes are abseil's (= gRPC's) status codes. */
typedef enum loom_status {
  LOOM_OK = 0,
  LOOM_INVALID_ARGUMENT = 3,    /* a null pointer, an index out of range, a non-float tensor */
  LOOM_NOT_FOUND = 5,           /* no artifact (plan.json, weights.bin, model.so) at the path */
  LOOM_FAILED_PRECONDITION = 9, /* another format version, kernels for an ISA this CPU lacks, or
                                   a GPU artifact for another GPU architecture (sm) */
  LOOM_INTERNAL = 13,           /* the kernel library does not load, or a step failed */
  LOOM_UNAVAILABLE = 14,        /* a GPU artifact on a machine without a CUDA driver or GPU */
  LOOM_DATA_LOSS = 15,          /* a file's checksum or size differs from plan.json */
  LOOM_UNKNOWN = 2              /* any other failure */
} loom_status_t;

typedef struct loom_model loom_model_t;

/* Loads the artifact in directory `dir` to run on `num_threads` threads (the calling thread is
 * one of them; 0: the thread count it was compiled with). A GPU artifact runs on GPU 0 through
 * the CUDA driver (num_threads must be 0), with the checks of a CPU artifact; each run uploads the
 * inputs, replays the model's kernels as one CUDA graph and downloads the outputs. On success
 * *model owns the model; free it with loom_model_free. */
loom_status_t loom_model_load(const char* dir, int32_t num_threads, loom_model_t** model);

/* Frees the model; null is allowed. */
void loom_model_free(loom_model_t* model);

/* Number of inputs / outputs of the model. */
int32_t loom_model_num_inputs(const loom_model_t* model);
int32_t loom_model_num_outputs(const loom_model_t* model);

/* The name of input / output `index`, owned by the model (valid until loom_model_free); null when
 * the index is out of range. */
const char* loom_model_input_name(const loom_model_t* model, int32_t index);
const char* loom_model_output_name(const loom_model_t* model, int32_t index);

/* The shape of input / output `index`: writes at most `max_rank` dimensions to `dims` (may be
 * null when max_rank is 0) and the rank to *rank. The element count is the product of the dims. */
loom_status_t loom_model_input_shape(const loom_model_t* model, int32_t index, int64_t* dims,
                                     int32_t max_rank, int32_t* rank);
loom_status_t loom_model_output_shape(const loom_model_t* model, int32_t index, int64_t* dims,
                                      int32_t max_rank, int32_t* rank);

/* Runs the model: inputs[i] points at input i's float32 data, outputs[i] at a caller buffer large
 * enough for output i. Inputs are only read. */
loom_status_t loom_model_run(loom_model_t* model, const float* const* inputs,
                             float* const* outputs);

/* The message of the last failure on this thread ("" when none). */
const char* loom_last_error(void);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* LOOM_LOOM_C_H_ */
