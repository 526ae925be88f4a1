// attention.cu — attention kernels (see attention.cuh).
//
// Masks are evaluated per (query slot, key slot) by visible(), the single place that
// encodes backend.h's AttnMode rules. Softmax is online (running max m, sum l) in fp32;
// a row with no visible key yields zeros. For causal and sequential modes every visible
// key slot is <= the query slot, so key loops stop at max query slot + 1.
// Planned KV loop (AttnArgs::loop_state): the window is read at kernel start; the grid and
// the split plan use only static sizes (capacity), each query group spreads its runtime key
// range over all the planned splits, and CTAs or splits left without keys write empty
// partials (m = -inf, l = 0), which the combine turns into zeros.
#include <algorithm>

#include "attention.cuh"

namespace esolm {
namespace cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return __bfloat162float(x); }

__device__ __forceinline__ bool visible(AttnMode mode, int qs, int ks, int half,
                                        const int32_t* clean_b) {
  switch (mode) {
    case AttnMode::causal: return ks <= qs;
    case AttnMode::bidirectional: return true;
    case AttnMode::mixed2: return ks <= qs || (clean_b[qs] != 0 && clean_b[ks] != 0);
    case AttnMode::sequential:  // x-half row qs sees x j <= qs; z row half+i sees x j < i, itself
      return qs < half ? ks <= qs : (ks < qs - half || ks == qs);
  }
  return false;
}

// Exclusive end of the key slots any query slot < q_end can see.
__host__ __device__ __forceinline__ int key_end(AttnMode mode, int n_kv, int q_end_slot) {
  return (mode == AttnMode::causal || mode == AttnMode::sequential) ? min(n_kv, q_end_slot)
                                                                    : n_kv;
}

// The query window a launch sees: static, or read from the loop state (clamped so that a
// bad state cannot reach past the cache). Query rows >= n_valid see no key (zeros).
struct Window { int q_slot0, n_kv, n_valid; };
__device__ __forceinline__ Window query_window(const AttnArgs& a) {
  if (!a.loop_state) return {a.q_slot0, a.n_kv, a.n_q};
  const int q_slot0 = min(max(a.loop_state[kLoopSlot0], 0), a.capacity);
  const int n_valid = min(max(a.loop_state[kLoopN], 0), a.n_q);
  return {q_slot0, min(q_slot0 + n_valid, a.capacity), n_valid};
}

// ---------------------------------------------------------------- split-KV path
constexpr int kQG = 16;     // queries per CTA (4 per warp)
constexpr int kKT = 32;     // keys per smem tile (one per lane)
constexpr int kMaxHD = 128;

struct SplitPlan { int splits, chunk, kv_range, groups; };

static SplitPlan plan_split(const AttnArgs& a, int sm_count) {
  SplitPlan p;
  p.groups = (a.n_q + kQG - 1) / kQG;
  // The loop's window is known only on the device: plan for the whole cache.
  p.kv_range = std::max(1, a.loop_state ? a.capacity : key_end(a.mode, a.n_kv, a.q_slot0 + a.n_q));
  const int64_t ctas = int64_t(a.batch) * a.n_heads * p.groups;
  const int tiles = (p.kv_range + kKT - 1) / kKT;
  int64_t want = (2 * int64_t(sm_count) + ctas - 1) / ctas;  // fill ~2 waves
  p.splits = int(std::max<int64_t>(1, std::min<int64_t>(want, tiles)));
  p.chunk = ((tiles + p.splits - 1) / p.splits) * kKT;
  p.splits = (p.kv_range + p.chunk - 1) / p.chunk;
  return p;
}

// grid (splits, heads, batch * groups); 128 threads. Partials: ml [rows][splits][2],
// o [rows][splits][hd] with rows = (b * n_q + r) * heads + h.
template <typename T>
__global__ void __launch_bounds__(128)
    attn_split_kernel(AttnArgs a, int groups, int chunk, int splits, float* ml, float* po) {
  __shared__ float Qs[kQG][kMaxHD];
  __shared__ float Ks[kKT][kMaxHD + 1];
  __shared__ float Vs[kKT][kMaxHD];
  const int split = blockIdx.x, h = blockIdx.y, b = blockIdx.z / groups;
  const int r0 = (blockIdx.z % groups) * kQG;
  const int hd = a.head_dim, d = a.n_heads * hd, warp = threadIdx.x >> 5, lane = threadIdx.x & 31;
  const T* q = static_cast<const T*>(a.q);
  const T* kc = static_cast<const T*>(a.k);
  const T* vc = static_cast<const T*>(a.v);
  const int32_t* clean_b = a.clean ? a.clean + int64_t(b) * a.capacity : nullptr;
  const Window win = query_window(a);
  const int half = win.n_kv / 2;
  const float scale = rsqrtf(float(hd));
  for (int i = threadIdx.x; i < kQG * hd; i += blockDim.x) {
    const int qi = i / hd, dd = i % hd, r = r0 + qi;
    Qs[qi][dd] = r < a.n_q ? to_f(q[(int64_t(b) * a.n_q + r) * d + h * hd + dd]) : 0.f;
  }
  const int q_end = min(r0 + kQG, win.n_valid);
  const int group_end = q_end > r0 ? key_end(a.mode, win.n_kv, win.q_slot0 + q_end) : 0;
  // Planned loop: the splits were planned for the whole cache; spread this group's real key
  // range over all of them, so the work per CTA follows the window, not the capacity.
  const int span = a.loop_state ? ((group_end + kKT - 1) / kKT + splits - 1) / splits * kKT : chunk;
  const int kb = split * span, ke = min(kb + span, group_end);
  float m[4], l[4], o[4][4];
#pragma unroll
  for (int i = 0; i < 4; ++i) {
    m[i] = -INFINITY; l[i] = 0.f;
#pragma unroll
    for (int j = 0; j < 4; ++j) o[i][j] = 0.f;
  }
  for (int t0 = kb; t0 < ke; t0 += kKT) {
    __syncthreads();
    for (int i = threadIdx.x; i < kKT * hd; i += blockDim.x) {
      const int j = i / hd, dd = i % hd, ks = t0 + j;
      const int64_t off = (int64_t(b) * a.capacity + ks) * d + h * hd + dd;
      Ks[j][dd] = ks < ke ? to_f(kc[off]) : 0.f;
      Vs[j][dd] = ks < ke ? to_f(vc[off]) : 0.f;
    }
    __syncthreads();
    const int ks = t0 + lane;
#pragma unroll
    for (int w = 0; w < 4; ++w) {
      const int qi = warp * 4 + w, r = r0 + qi;
      if (r >= win.n_valid) break;  // warp-uniform
      const int qs = win.q_slot0 + r;
      float s = -INFINITY;
      if (ks < ke && visible(a.mode, qs, ks, half, clean_b)) {
        float acc = 0.f;
        for (int dd = 0; dd < hd; ++dd) acc = fmaf(Qs[qi][dd], Ks[lane][dd], acc);
        s = acc * scale;
      }
      float tmax = s;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) tmax = fmaxf(tmax, __shfl_xor_sync(~0u, tmax, off));
      const float m_new = fmaxf(m[w], tmax);
      if (m_new == -INFINITY) continue;  // nothing visible yet (warp-uniform)
      const float corr = __expf(m[w] - m_new);  // exp(-inf) = 0 on the first visible tile
      const float p = __expf(s - m_new);
      float psum = p;
#pragma unroll
      for (int off = 16; off > 0; off >>= 1) psum += __shfl_xor_sync(~0u, psum, off);
      l[w] = l[w] * corr + psum;
      m[w] = m_new;
#pragma unroll
      for (int c = 0; c < 4; ++c) o[w][c] *= corr;
      for (int j = 0; j < kKT; ++j) {
        const float pj = __shfl_sync(~0u, p, j);
#pragma unroll
        for (int c = 0; c < 4; ++c)
          if (lane + 32 * c < hd) o[w][c] = fmaf(pj, Vs[j][lane + 32 * c], o[w][c]);
      }
    }
  }
#pragma unroll
  for (int w = 0; w < 4; ++w) {
    const int r = r0 + warp * 4 + w;
    if (r >= a.n_q) break;
    const int64_t row = (int64_t(b) * a.n_q + r) * a.n_heads + h;
    if (lane == 0) {
      ml[(row * splits + split) * 2] = m[w];
      ml[(row * splits + split) * 2 + 1] = l[w];
    }
#pragma unroll
    for (int c = 0; c < 4; ++c)
      if (lane + 32 * c < hd) po[(row * splits + split) * hd + lane + 32 * c] = o[w][c];
  }
}

// One thread per (row, dim): merge the split partials with their log-sum-exp weights.
__global__ void attn_combine_kernel(AttnArgs a, int splits, const float* ml, const float* po) {
  const int hd = a.head_dim;
  const int64_t rows = int64_t(a.batch) * a.n_q * a.n_heads;
  for (int64_t e = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; e < rows * hd;
       e += int64_t(gridDim.x) * blockDim.x) {
    const int64_t row = e / hd;
    const int dd = int(e % hd), h = int(row % a.n_heads);
    float M = -INFINITY;
    for (int s = 0; s < splits; ++s) M = fmaxf(M, ml[(row * splits + s) * 2]);
    float L = 0.f, acc = 0.f;
    if (M != -INFINITY)
      for (int s = 0; s < splits; ++s) {
        const float w = __expf(ml[(row * splits + s) * 2] - M);
        L += w * ml[(row * splits + s) * 2 + 1];
        acc += w * po[(row * splits + s) * hd + dd];
      }
    const int64_t qrow = row / a.n_heads;  // b * n_q + r
    st_any(a.out, a.out_t, qrow * (int64_t(a.n_heads) * hd) + int64_t(h) * hd + dd,
           L > 0.f ? acc / L : 0.f);
  }
}

// ---------------------------------------------------------------- tiled tensor-core path
__device__ __forceinline__ void mma16816(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}
__device__ __forceinline__ uint32_t pack_bf16(float lo, float hi) {
  __nv_bfloat162 v = __floats2bfloat162_rn(lo, hi);  // .x (low half) = lo
  return *reinterpret_cast<uint32_t*>(&v);
}
__device__ __forceinline__ uint32_t pack_raw(bf16 lo, bf16 hi) {
  return uint32_t(__bfloat16_as_ushort(lo)) | (uint32_t(__bfloat16_as_ushort(hi)) << 16);
}

// Load rows [r0, r0+64) of head h (rows >= limit zero) from a [rows, d] bf16 matrix.
template <int HD>
__device__ __forceinline__ void load_rows64(bf16 (*dst)[HD + 8], const bf16* src, int64_t base_row,
                                            int r0, int limit, int d, int h) {
  constexpr int CH = HD / 8;  // 16-byte chunks per row
  for (int i = threadIdx.x; i < 64 * CH; i += blockDim.x) {
    const int r = i / CH, c = (i % CH) * 8;
    uint4 v = make_uint4(0, 0, 0, 0);
    if (r0 + r < limit)
      v = *reinterpret_cast<const uint4*>(src + (base_row + r0 + r) * d + h * HD + c);
    *reinterpret_cast<uint4*>(&dst[r][c]) = v;
  }
}

// grid (ceil(n_q/64), heads, batch); 128 threads; warp w owns query rows [16w, 16w+16).
template <int HD>
__global__ void __launch_bounds__(128) attn_tiled_kernel(AttnArgs a) {
  constexpr int LD = HD + 8;  // padded row: fragment loads are bank-conflict free
  __shared__ __align__(16) bf16 Qs[64][LD];
  __shared__ __align__(16) bf16 Ks[64][LD];
  __shared__ __align__(16) bf16 Vs[64][LD];
  const int h = blockIdx.y, b = blockIdx.z, q0 = blockIdx.x * 64, d = a.n_heads * HD;
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const bf16* q = static_cast<const bf16*>(a.q);
  const bf16* kc = static_cast<const bf16*>(a.k);
  const bf16* vc = static_cast<const bf16*>(a.v);
  const int32_t* clean_b = a.clean ? a.clean + int64_t(b) * a.capacity : nullptr;
  const Window win = query_window(a);
  const int half = win.n_kv / 2;
  const float sl2 = rsqrtf(float(HD)) * 1.4426950408889634f;  // scale * log2(e)

  load_rows64<HD>(Qs, q, int64_t(b) * a.n_q, q0, a.n_q, d, h);
  __syncthreads();
  uint32_t qf[HD / 16][4];
#pragma unroll
  for (int kd = 0; kd < HD / 16; ++kd) {
    const int r = warp * 16 + g, c = kd * 16 + 2 * t;
    qf[kd][0] = *reinterpret_cast<const uint32_t*>(&Qs[r][c]);
    qf[kd][1] = *reinterpret_cast<const uint32_t*>(&Qs[r + 8][c]);
    qf[kd][2] = *reinterpret_cast<const uint32_t*>(&Qs[r][c + 8]);
    qf[kd][3] = *reinterpret_cast<const uint32_t*>(&Qs[r + 8][c + 8]);
  }
  float O[HD / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.f, 0.f};
#pragma unroll
  for (int i = 0; i < HD / 8; ++i) O[i][0] = O[i][1] = O[i][2] = O[i][3] = 0.f;
  const int row_q[2] = {q0 + warp * 16 + g, q0 + warp * 16 + g + 8};
  const int q_end = min(q0 + 64, win.n_valid);
  const int kend = q_end > q0 ? key_end(a.mode, win.n_kv, win.q_slot0 + q_end) : 0;

  for (int k0 = 0; k0 < kend; k0 += 64) {
    __syncthreads();  // previous tile fully consumed
    load_rows64<HD>(Ks, kc, int64_t(b) * a.capacity, k0, kend, d, h);
    load_rows64<HD>(Vs, vc, int64_t(b) * a.capacity, k0, kend, d, h);
    __syncthreads();
    float S[8][4];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      S[nt][0] = S[nt][1] = S[nt][2] = S[nt][3] = 0.f;
#pragma unroll
      for (int kd = 0; kd < HD / 16; ++kd) {
        const uint32_t b0 = *reinterpret_cast<const uint32_t*>(&Ks[nt * 8 + g][kd * 16 + 2 * t]);
        const uint32_t b1 =
            *reinterpret_cast<const uint32_t*>(&Ks[nt * 8 + g][kd * 16 + 2 * t + 8]);
        mma16816(S[nt], qf[kd], b0, b1);
      }
    }
    float tmax[2] = {-INFINITY, -INFINITY};
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int ri = e >> 1, ks = k0 + nt * 8 + 2 * t + (e & 1);
        const bool ok = row_q[ri] < win.n_valid && ks < kend &&
                        visible(a.mode, win.q_slot0 + row_q[ri], ks, half, clean_b);
        S[nt][e] = ok ? S[nt][e] * sl2 : -INFINITY;
        tmax[ri] = fmaxf(tmax[ri], S[nt][e]);
      }
    float corr[2];
#pragma unroll
    for (int ri = 0; ri < 2; ++ri) {
      tmax[ri] = fmaxf(tmax[ri], __shfl_xor_sync(~0u, tmax[ri], 1));
      tmax[ri] = fmaxf(tmax[ri], __shfl_xor_sync(~0u, tmax[ri], 2));
      const float m_new = fmaxf(m[ri], tmax[ri]);
      const float m_use = m_new == -INFINITY ? 0.f : m_new;  // avoid (-inf) - (-inf)
      corr[ri] = exp2f(m[ri] - m_use);
      m[ri] = m_new;
      tmax[ri] = m_use;
    }
#pragma unroll
    for (int nt = 0; nt < 8; ++nt)
#pragma unroll
      for (int e = 0; e < 4; ++e) S[nt][e] = exp2f(S[nt][e] - tmax[e >> 1]);  // masked -> 0
    // l is a per-thread partial sum of its row; the quad reduces it once at the end.
#pragma unroll
    for (int ri = 0; ri < 2; ++ri) l[ri] *= corr[ri];
#pragma unroll
    for (int nt = 0; nt < 8; ++nt) {
      l[0] += S[nt][0] + S[nt][1];
      l[1] += S[nt][2] + S[nt][3];
    }
#pragma unroll
    for (int dn = 0; dn < HD / 8; ++dn) {
      O[dn][0] *= corr[0]; O[dn][1] *= corr[0];
      O[dn][2] *= corr[1]; O[dn][3] *= corr[1];
    }
    // O += P·V: P's C fragments of key tiles 2kk, 2kk+1 form the A fragment of k-chunk kk.
#pragma unroll
    for (int kk = 0; kk < 4; ++kk) {
      uint32_t pa[4];
      pa[0] = pack_bf16(S[2 * kk][0], S[2 * kk][1]);
      pa[1] = pack_bf16(S[2 * kk][2], S[2 * kk][3]);
      pa[2] = pack_bf16(S[2 * kk + 1][0], S[2 * kk + 1][1]);
      pa[3] = pack_bf16(S[2 * kk + 1][2], S[2 * kk + 1][3]);
      const int kr = kk * 16 + 2 * t;
#pragma unroll
      for (int dn = 0; dn < HD / 8; ++dn) {
        const int c = dn * 8 + g;
        const uint32_t b0 = pack_raw(Vs[kr][c], Vs[kr + 1][c]);
        const uint32_t b1 = pack_raw(Vs[kr + 8][c], Vs[kr + 9][c]);
        mma16816(O[dn], pa, b0, b1);
      }
    }
  }
#pragma unroll
  for (int ri = 0; ri < 2; ++ri) {
    l[ri] += __shfl_xor_sync(~0u, l[ri], 1);
    l[ri] += __shfl_xor_sync(~0u, l[ri], 2);
  }
#pragma unroll
  for (int dn = 0; dn < HD / 8; ++dn)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int ri = e >> 1, r = row_q[ri];
      if (r < a.n_q) {
        const float inv = l[ri] > 0.f ? 1.f / l[ri] : 0.f;
        st_any(a.out, a.out_t, (int64_t(b) * a.n_q + r) * d + h * HD + dn * 8 + 2 * t + (e & 1),
               O[dn][e] * inv);
      }
    }
}

// ---------------------------------------------------------------- dispatch
static bool use_tiled(const AttnArgs& a) {
  return a.n_q > kQG && a.q_t == DType::bf16 && a.kv_t == DType::bf16 &&
         (a.head_dim == 32 || a.head_dim == 64);
}

size_t attention_workspace_floats(const AttnArgs& a, int sm_count) {
  if (use_tiled(a) || a.n_q <= 0) return 0;
  const SplitPlan p = plan_split(a, sm_count);
  return size_t(a.batch) * a.n_q * a.n_heads * p.splits * (a.head_dim + 2);
}

Status launch_attention(const AttnArgs& a, float* ws, size_t ws_floats, int sm_count,
                        cudaStream_t st) {
  if (a.n_q <= 0 || a.batch <= 0) return Status::ok();
  if (a.head_dim > kMaxHD || a.head_dim <= 0)
    return Status::error(Code::invalid_arg, "attention: head_dim must be <= 128 on CUDA");
  if (use_tiled(a)) {
    dim3 grid((a.n_q + 63) / 64, a.n_heads, a.batch);
    if (a.head_dim == 64) attn_tiled_kernel<64><<<grid, 128, 0, st>>>(a);
    else attn_tiled_kernel<32><<<grid, 128, 0, st>>>(a);
    CUDA_CHECK_LAUNCH("attention(tiled)");
    return Status::ok();
  }
  const SplitPlan p = plan_split(a, sm_count);
  const size_t need = size_t(a.batch) * a.n_q * a.n_heads * p.splits * (a.head_dim + 2);
  if (ws_floats < need) return Status::error(Code::internal, "attention: workspace too small");
  float* ml = ws;
  float* po = ws + size_t(a.batch) * a.n_q * a.n_heads * p.splits * 2;
  dim3 grid(p.splits, a.n_heads, a.batch * p.groups);
  if (a.q_t != a.kv_t) return Status::error(Code::invalid_arg, "attention: q and K/V dtypes differ");
  if (a.q_t == DType::bf16)
    attn_split_kernel<bf16><<<grid, 128, 0, st>>>(a, p.groups, p.chunk, p.splits, ml, po);
  else if (a.q_t == DType::f32)
    attn_split_kernel<float><<<grid, 128, 0, st>>>(a, p.groups, p.chunk, p.splits, ml, po);
  else
    return Status::error(Code::invalid_arg, "attention: q must be F32 or BF16");
  CUDA_CHECK_LAUNCH("attention(split)");
  const int64_t total = int64_t(a.batch) * a.n_q * a.n_heads * a.head_dim;
  attn_combine_kernel<<<grid_1d(total, 256), 256, 0, st>>>(a, p.splits, ml, po);
  CUDA_CHECK_LAUNCH("attention(combine)");
  return Status::ok();
}

}  // namespace cuda
}  // namespace esolm
