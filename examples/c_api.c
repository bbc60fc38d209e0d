/* The C API: load an artifact written by `loom compile MODEL -o DIR`, run it on a constant input,
 * print its shapes, the top class and the latency. Usage: c_api DIR */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "loom/loom_c.h"

static int64_t Elements(const loom_model_t* m, int is_input, int32_t i, int32_t* rank,
                        int64_t* dims) {
  if (is_input)
    loom_model_input_shape(m, i, dims, 8, rank);
  else
    loom_model_output_shape(m, i, dims, 8, rank);
  int64_t n = 1;
  for (int32_t d = 0; d < *rank; ++d) n *= dims[d];
  return n;
}

int main(int argc, char** argv) {
  if (argc != 2) {
    fprintf(stderr, "usage: %s ARTIFACT_DIR\n", argv[0]);
    return 2;
  }
  loom_model_t* model = NULL;
  if (loom_model_load(argv[1], 0, &model) != LOOM_OK) {
    fprintf(stderr, "error: %s\n", loom_last_error());
    return 1;
  }
  int32_t rank = 0;
  int64_t dims[8];
  const int64_t n_in = Elements(model, 1, 0, &rank, dims);
  printf("input  %s: %d dims, %lld floats\n", loom_model_input_name(model, 0), rank,
         (long long)n_in);
  const int64_t n_out = Elements(model, 0, 0, &rank, dims);
  printf("output %s: %d dims, %lld floats\n", loom_model_output_name(model, 0), rank,
         (long long)n_out);
  float* input = malloc(sizeof(float) * (size_t)n_in);
  float* output = malloc(sizeof(float) * (size_t)n_out);
  for (int64_t i = 0; i < n_in; ++i) input[i] = (float)(i % 17) / 17.0f - 0.5f;
  const float* ins[1] = {input};
  float* outs[1] = {output};

  struct timespec t0, t1;
  loom_status_t status = loom_model_run(model, ins, outs); /* warm-up */
  clock_gettime(CLOCK_MONOTONIC, &t0);
  for (int r = 0; r < 10 && status == LOOM_OK; ++r) status = loom_model_run(model, ins, outs);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  if (status != LOOM_OK) {
    fprintf(stderr, "error: %s\n", loom_last_error());
    return 1;
  }
  int64_t best = 0;
  for (int64_t i = 1; i < n_out; ++i) best = output[i] > output[best] ? i : best;
  printf("top-1  %lld (%.4f)\n", (long long)best, output[best]);
  printf("latency %.3f ms (mean of 10 runs)\n",
         ((t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6) / 10);
  loom_model_free(model);
  free(input);
  free(output);
  return 0;
}
