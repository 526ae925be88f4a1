// loop_ops.cpp — see loop_ops.h. Every index is checked, so a corrupt table gives an
// error instead of a stray write.
#include "cpu/loop_ops.h"

#include <algorithm>
#include <string>

namespace esolm {
namespace {

Status bad(const char* op, const std::string& what) {
  return Status::error(Code::invalid_arg, std::string(op) + ": " + what);
}

bool is_i32(const Tensor& t, int64_t min_numel) { return t.dtype == DType::i32 && t.numel() >= min_numel; }

}  // namespace

Status loop_begin_step_host(LoopTensors& lt, int batch, int length, int n_pad, int k_pad) {
  const char* op = "loop_begin_step";
  const int64_t BL = int64_t(batch) * length;
  if (batch < 1 || length < 1 || n_pad < 1 || k_pad < 1) return bad(op, "shapes must be positive");
  if (!is_i32(lt.state, kLoopFields) || lt.table.dtype != DType::i32 || lt.table.cols != kStepFields ||
      !is_i32(lt.z, BL) || !is_i32(lt.order, BL) || !is_i32(lt.tokens, int64_t(batch) * n_pad) ||
      !is_i32(lt.positions, int64_t(batch) * n_pad) || !is_i32(lt.head_rows, int64_t(batch) * k_pad) ||
      !is_i32(lt.keys, int64_t(batch) * k_pad * 3))
    return bad(op, "tensor dtypes or sizes");
  int32_t* st = static_cast<int32_t*>(lt.state.data);
  const int cursor = st[kLoopCursor];
  if (cursor < 0 || cursor >= lt.table.rows) return bad(op, "cursor outside the step table");
  const int32_t* row = static_cast<const int32_t*>(lt.table.data) + int64_t(cursor) * kStepFields;
  const int slot0 = row[0], n = row[1], head0 = row[2], k = row[3], target = row[4];
  if (slot0 < 0 || n < 1 || n > n_pad || slot0 + n > length || k < 1 || k > k_pad || head0 < 0 ||
      head0 + k > n || target < 0 || target + k > length)
    return bad(op, "step " + std::to_string(cursor) + " does not fit the static shapes");
  st[kLoopSlot0] = slot0;
  st[kLoopN] = n;
  st[kLoopHead0] = head0;
  st[kLoopK] = k;
  st[kLoopTarget] = target;
  const int32_t* z = static_cast<const int32_t*>(lt.z.data);
  const int32_t* order = static_cast<const int32_t*>(lt.order.data);
  int32_t* tok = static_cast<int32_t*>(lt.tokens.data);
  int32_t* pos = static_cast<int32_t*>(lt.positions.data);
  int32_t* hr = static_cast<int32_t*>(lt.head_rows.data);
  int32_t* keys = static_cast<int32_t*>(lt.keys.data);
  for (int b = 0; b < batch; ++b) {
    const int64_t zb = int64_t(b) * length;
    for (int r = 0; r < n_pad; ++r) {
      tok[int64_t(b) * n_pad + r] = r < n ? z[zb + slot0 + r] : 0;
      pos[int64_t(b) * n_pad + r] = r < n ? order[zb + slot0 + r] : 0;
    }
    for (int r = 0; r < k_pad; ++r) {
      const int rr = std::min(r, k - 1);
      const int64_t i = int64_t(b) * k_pad + r;
      hr[i] = int32_t(int64_t(b) * n_pad + head0 + rr);
      keys[3 * i + 0] = b;
      keys[3 * i + 1] = order[zb + target + rr];
      keys[3 * i + 2] = 0;
    }
  }
  return Status::ok();
}

Status loop_end_step_host(LoopTensors& lt, int batch, int length, int k_pad) {
  const char* op = "loop_end_step";
  const int64_t BL = int64_t(batch) * length;
  if (batch < 1 || length < 1 || k_pad < 1) return bad(op, "shapes must be positive");
  if (!is_i32(lt.state, kLoopFields) || !is_i32(lt.z, BL) || !is_i32(lt.fixed, length) ||
      !is_i32(lt.picks, int64_t(batch) * k_pad))
    return bad(op, "tensor dtypes or sizes");
  int32_t* st = static_cast<int32_t*>(lt.state.data);
  const int k = st[kLoopK], target = st[kLoopTarget];
  if (k < 1 || k > k_pad || target < 0 || target + k > length) return bad(op, "state does not fit");
  int32_t* z = static_cast<int32_t*>(lt.z.data);
  const int32_t* fixed = static_cast<const int32_t*>(lt.fixed.data);
  const int32_t* picks = static_cast<const int32_t*>(lt.picks.data);
  for (int b = 0; b < batch; ++b)
    for (int r = 0; r < k; ++r)
      if (!fixed[target + r]) z[int64_t(b) * length + target + r] = picks[int64_t(b) * k_pad + r];
  st[kLoopCursor] += 1;
  return Status::ok();
}

}  // namespace esolm
