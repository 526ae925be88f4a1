// backend.cpp — default implementations of the optional Backend ops.
#include "engine/backend.h"

#include <string>
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

namespace {
Status unsupported(const Backend& be, const char* op) {
  return Status::error(Code::internal, std::string(op) + " is not supported by the " + be.name() + " backend");
}
}  // namespace

Status Backend::upload_q8(Tensor&, int64_t, int64_t, const int8_t*, const float*) { return unsupported(*this, "upload_q8"); }
Status Backend::loop_begin_step(LoopTensors&, int, int, int, int) { return unsupported(*this, "loop_begin_step"); }
Status Backend::rope_qkv_store_loop(const Tensor&, const Tensor&, int, int, int, int, const Tensor&, Tensor&,
                                    Tensor&, Tensor&) {
  return unsupported(*this, "rope_qkv_store_loop");
}
Status Backend::sample_rows_to(const Tensor&, int64_t, const SampleParams&, const Tensor&, Tensor&) {
  return unsupported(*this, "sample_rows_to");
}
Status Backend::loop_end_step(LoopTensors&, int, int, int) { return unsupported(*this, "loop_end_step"); }
Status Backend::download_i32_async(const Tensor&, int64_t, int32_t*) {
  return unsupported(*this, "download_i32_async");
}
Status Backend::begin_record() { return unsupported(*this, "begin_record"); }
Status Backend::end_record(int&) { return unsupported(*this, "end_record"); }
Status Backend::replay(int) { return unsupported(*this, "replay"); }

}  // namespace esolm
