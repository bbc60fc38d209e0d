/* The C API from a C program: loads a tiny_cnn artifact, checks its queries and its errors, runs
 * it on a seeded input and compares the output with the reference executor's (`loom run` on the
 * same input, written as .npy). Usage: loom_api_c_test ARTIFACT_DIR LOOM_BINARY WORK_DIR */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "loom/loom_c.h"

static int failures = 0;
#define CHECK(cond)                                                            \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
      ++failures;                                                              \
    }                                                                          \
  } while (0)

/* A float32 .npy file, format 1.0, C order. */
static int WriteNpy(const char* path, const float* data, const int64_t* dims, int rank) {
  char header[256];
  int n = snprintf(header, sizeof(header), "{'descr': '<f4', 'fortran_order': False, 'shape': (");
  int64_t count = 1;
  for (int d = 0; d < rank; ++d) {
    n += snprintf(header + n, sizeof(header) - (size_t)n, "%lld, ", (long long)dims[d]);
    count *= dims[d];
  }
  n += snprintf(header + n, sizeof(header) - (size_t)n, "), }");
  int total = 10 + n + 1;
  int pad = (64 - total % 64) % 64;
  FILE* f = fopen(path, "wb");
  if (f == NULL) return 0;
  unsigned short hlen = (unsigned short)(n + pad + 1);
  fwrite("\x93NUMPY\x01\x00", 1, 8, f);
  fputc(hlen & 0xff, f);
  fputc(hlen >> 8, f);
  fwrite(header, 1, (size_t)n, f);
  for (int i = 0; i < pad; ++i) fputc(' ', f);
  fputc('\n', f);
  fwrite(data, sizeof(float), (size_t)count, f);
  return fclose(f) == 0;
}

/* Reads `count` floats of a version 1.0 float32 .npy file. */
static int ReadNpy(const char* path, float* data, int64_t count) {
  FILE* f = fopen(path, "rb");
  if (f == NULL) return 0;
  unsigned char pre[10];
  int ok = fread(pre, 1, 10, f) == 10 && memcmp(pre, "\x93NUMPY\x01", 7) == 0;
  if (ok) {
    long hlen = pre[8] | (pre[9] << 8);
    ok = fseek(f, 10 + hlen, SEEK_SET) == 0 &&
         fread(data, sizeof(float), (size_t)count, f) == (size_t)count;
  }
  fclose(f);
  return ok;
}

int main(int argc, char** argv) {
  if (argc != 4) {
    fprintf(stderr, "usage: %s ARTIFACT_DIR LOOM_BINARY WORK_DIR\n", argv[0]);
    return 2;
  }
  const char* dir = argv[1];
  const char* loom = argv[2];
  const char* work = argv[3];
  mkdir(work, 0755);

  /* Errors: a missing artifact, bad arguments. */
  loom_model_t* model = NULL;
  char path[4096];
  snprintf(path, sizeof(path), "%s/no_such_artifact", work);
  CHECK(loom_model_load(path, 1, &model) == LOOM_NOT_FOUND);
  CHECK(model == NULL);
  CHECK(strstr(loom_last_error(), "does not exist") != NULL);
  CHECK(loom_model_load(dir, -1, &model) == LOOM_INVALID_ARGUMENT);
  CHECK(strstr(loom_last_error(), "num_threads") != NULL);

  if (loom_model_load(dir, 2, &model) != LOOM_OK) {
    fprintf(stderr, "loading %s: %s\n", dir, loom_last_error());
    return 1;
  }
  CHECK(loom_model_num_inputs(model) == 1);
  CHECK(loom_model_num_outputs(model) == 1);
  CHECK(loom_model_input_name(model, 0) != NULL);
  CHECK(loom_model_input_name(model, 1) == NULL);
  int64_t in_dims[8], out_dims[8];
  int32_t in_rank = 0, out_rank = 0;
  CHECK(loom_model_input_shape(model, 0, in_dims, 8, &in_rank) == LOOM_OK);
  CHECK(loom_model_output_shape(model, 0, out_dims, 8, &out_rank) == LOOM_OK);
  CHECK(in_rank == 4);
  CHECK(loom_model_output_shape(model, 3, out_dims, 8, &out_rank) == LOOM_INVALID_ARGUMENT);
  CHECK(strstr(loom_last_error(), "out of range") != NULL);

  int64_t in_count = 1, out_count = 1;
  for (int d = 0; d < in_rank; ++d) in_count *= in_dims[d];
  for (int d = 0; d < out_rank; ++d) out_count *= out_dims[d];
  float* input = malloc(sizeof(float) * (size_t)in_count);
  float* output = malloc(sizeof(float) * (size_t)out_count);
  float* expected = malloc(sizeof(float) * (size_t)out_count);
  unsigned int s = 12345;
  for (int64_t i = 0; i < in_count; ++i) {
    s = s * 1103515245u + 12345u;
    input[i] = (float)((s >> 8) & 0xffff) / 32768.0f - 1.0f;
  }
  const float* ins[1] = {input};
  float* outs[1] = {output};
  CHECK(loom_model_run(model, ins, NULL) == LOOM_INVALID_ARGUMENT);
  CHECK(loom_model_run(model, ins, outs) == LOOM_OK);
  /* A second run reuses the arena and must give the same answer. */
  float* again = malloc(sizeof(float) * (size_t)out_count);
  float* outs2[1] = {again};
  CHECK(loom_model_run(model, ins, outs2) == LOOM_OK);
  CHECK(memcmp(output, again, sizeof(float) * (size_t)out_count) == 0);

  /* The reference executor on the same input. */
  char in_npy[4096], ref_npy[4096], cmd[16384];
  snprintf(in_npy, sizeof(in_npy), "%s/input.npy", work);
  snprintf(ref_npy, sizeof(ref_npy), "%s/reference.npy", work);
  CHECK(WriteNpy(in_npy, input, in_dims, in_rank));
  snprintf(cmd, sizeof(cmd), "'%s' run zoo:tiny_cnn --input '%s' --output '%s' > /dev/null", loom,
           in_npy, ref_npy);
  CHECK(system(cmd) == 0);
  CHECK(ReadNpy(ref_npy, expected, out_count));
  double err = 0, ref = 0;
  for (int64_t i = 0; i < out_count; ++i) {
    double d = fabs((double)output[i] - (double)expected[i]);
    if (d > err) err = d;
    if (fabs((double)expected[i]) > ref) ref = fabs((double)expected[i]);
  }
  printf("max|c_api - reference| = %g, max|reference| = %g\n", err, ref);
  CHECK(ref > 0);
  CHECK(err <= 1e-3 * ref);

  loom_model_free(model);
  loom_model_free(NULL);
  free(input);
  free(output);
  free(expected);
  free(again);
  if (failures > 0) {
    fprintf(stderr, "%d check(s) failed\n", failures);
    return 1;
  }
  printf("c api test passed\n");
  return 0;
}
