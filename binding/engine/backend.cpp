// backend.cpp — default implementations of the optional Backend ops.
#include "engine/backend.h"

#include <algorithm>
#include <thread>
#include <vector>

namespace esolm {

void sample_rows_host(const float* logits, int64_t rows, int vocab, const SampleParams& p,
                      const DrawKey* keys, int32_t* out) {
  // A row costs ~0.1-0.5 ms at V = 50k: split rows over the cores when there are many.
  const int64_t hw = std::max(1u, std::thread::hardware_concurrency());
  const int64_t nt = std::min<int64_t>(hw, rows / 4);
  auto work = [&](int64_t t, int64_t stride) {
    for (int64_t i = t; i < rows; i += stride) out[i] = sample_row(logits + i * vocab, vocab, p, keys[i]);
  };
  if (nt <= 1) {
    work(0, 1);
    return;
  }
  std::vector<std::thread> ts;
  for (int64_t t = 1; t < nt; ++t) ts.emplace_back(work, t, nt);
  work(0, nt);
  for (auto& th : ts) th.join();
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
