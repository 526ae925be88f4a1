// backend.cpp — default implementations of the optional Backend ops.
#include "engine/backend.h"

#include <vector>

#include "engine/parallel.h"

namespace esolm {

void sample_rows_host(const float* logits, int64_t rows, int vocab, const SampleParams& p,
                      const DrawKey* keys, int32_t* out) {
  parallel_rows(rows, 4, [&](int64_t i) { out[i] = sample_row(logits + i * vocab, vocab, p, keys[i]); });
}

Status Backend::sample_rows(const Tensor& logits, int64_t rows, const SampleParams& p,
                            const DrawKey* keys, int32_t* out) {
  if (logits.dtype != DType::f32 || rows > logits.rows)
    return Status::error(Code::internal, "sample_rows: logits must be F32 with enough rows");
  std::vector<float> host(size_t(rows * logits.cols));
  ESOLM_TRY(download_f32(logits, 0, rows, host.data()));
  sample_rows_host(host.data(), rows, int(logits.cols), p, keys, out);
  return Status::ok();
}

}  // namespace esolm
