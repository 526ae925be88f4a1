// matmul.cu — the linear() kernels (see matmul.cuh).
//
// Tensor-core path: a BM x BN output tile per CTA, BK = 32, 2-stage cp.async pipeline,
// each warp owns a (BM/WARPS_M) x (BN/WARPS_N) sub-tile of m16n8k16 accumulators.
// Fragments are read from shared memory with 32-bit loads following the PTX fragment
// layout (no ldmatrix: fewer ways to be wrong). Rows are padded to 40 bf16 (20 words)
// so the 8 row groups x 4 lanes of a fragment load hit 32 distinct banks.
// Out-of-range rows / columns / k-chunks are zero-filled (cp.async src-size 0) and
// masked at the store, so any M, N work; K must be a multiple of 8 (16-byte chunks).
#include "matmul.cuh"

#include <algorithm>
#include <cstdlib>

namespace esolm {
namespace cuda {

using bf16 = __nv_bfloat16;

__device__ __forceinline__ float gelu_tanh(float y) {
  const float k0 = 0.7978845608028654f;  // sqrt(2/pi)
  return 0.5f * y * (1.f + tanhf(k0 * (y + 0.044715f * y * y * y)));
}

// y already includes the bias.
__device__ __forceinline__ void epilogue_store(void* out, DType odt, int64_t idx, float y,
                                               Epilogue ep) {
  if (ep == Epilogue::add_to) {
    static_cast<float*>(out)[idx] += y;
  } else {
    if (ep == Epilogue::gelu) y = gelu_tanh(y);
    st_any(out, odt, idx, y);
  }
}

__device__ __forceinline__ void cp_async16(void* smem, const void* gmem, int src_bytes) {
  unsigned s = static_cast<unsigned>(__cvta_generic_to_shared(smem));
  asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(s), "l"(gmem),
               "r"(src_bytes));
}
__device__ __forceinline__ void cp_async_commit() { asm volatile("cp.async.commit_group;\n" ::); }
template <int N>
__device__ __forceinline__ void cp_async_wait() {
  asm volatile("cp.async.wait_group %0;\n" ::"n"(N));
}

__device__ __forceinline__ void mma_bf16(float (&c)[4], const uint32_t (&a)[4], uint32_t b0,
                                         uint32_t b1) {
  asm volatile(
      "mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, "
      "{%8,%9}, {%0,%1,%2,%3};\n"
      : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
      : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
}

constexpr int kBK = 32, kLDS = kBK + 8;  // padded smem row (bf16 elements)

// Copy rows [r0, r0+ROWS) x k-chunk [k0, k0+32) of a row-major [R, K] matrix into smem.
template <int ROWS, int THREADS>
__device__ __forceinline__ void load_tile(bf16 (*dst)[kLDS], const bf16* src, int64_t r0,
                                          int64_t R, int64_t k0, int64_t K) {
  for (int i = threadIdx.x; i < ROWS * 4; i += THREADS) {
    int r = i >> 2, c = (i & 3) * 8;
    bool ok = (r0 + r < R) && (k0 + c < K);
    const bf16* p = ok ? src + (r0 + r) * K + k0 + c : src;
    cp_async16(&dst[r][c], p, ok ? 16 : 0);
  }
}

template <int BM, int BN, int WARPS_M, int WARPS_N>
__global__ void __launch_bounds__(WARPS_M* WARPS_N * 32)
    gemm_tc_kernel(const bf16* __restrict__ A, const bf16* __restrict__ W,
                   const float* __restrict__ bias, void* out, DType odt, int64_t M, int64_t N,
                   int64_t K, Epilogue ep) {
  constexpr int THREADS = WARPS_M * WARPS_N * 32;
  constexpr int WTM = BM / WARPS_M, WTN = BN / WARPS_N, MT = WTM / 16, NT = WTN / 8;
  __shared__ __align__(16) bf16 As[2][BM][kLDS];
  __shared__ __align__(16) bf16 Bs[2][BN][kLDS];

  // Grouped raster: GROUP m-tiles share a sweep over N so A and W tiles stay in L2.
  const int64_t num_m = (M + BM - 1) / BM, num_n = (N + BN - 1) / BN, GROUP = 16;
  const int64_t pid = blockIdx.x, group = pid / (GROUP * num_n), local = pid % (GROUP * num_n);
  const int64_t first_m = group * GROUP, gsize = min(num_m - first_m, GROUP);
  const int64_t m0 = (first_m + local % gsize) * BM;  // local < gsize * num_n always
  const int64_t n0 = (local / gsize) * BN;

  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int wm = warp / WARPS_N, wn = warp % WARPS_N;
  float acc[MT][NT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j) acc[i][j][0] = acc[i][j][1] = acc[i][j][2] = acc[i][j][3] = 0.f;

  const int64_t nk = (K + kBK - 1) / kBK;
  load_tile<BM, THREADS>(As[0], A, m0, M, 0, K);
  load_tile<BN, THREADS>(Bs[0], W, n0, N, 0, K);
  cp_async_commit();
  for (int64_t kt = 0; kt < nk; ++kt) {
    const int s = kt & 1;
    if (kt + 1 < nk) {
      load_tile<BM, THREADS>(As[s ^ 1], A, m0, M, (kt + 1) * kBK, K);
      load_tile<BN, THREADS>(Bs[s ^ 1], W, n0, N, (kt + 1) * kBK, K);
    }
    cp_async_commit();
    cp_async_wait<1>();
    __syncthreads();
#pragma unroll
    for (int kk = 0; kk < kBK; kk += 16) {
      uint32_t a[MT][4], b[NT][2];
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        const int r = wm * WTM + i * 16 + g;
        a[i][0] = *reinterpret_cast<const uint32_t*>(&As[s][r][kk + 2 * t]);
        a[i][1] = *reinterpret_cast<const uint32_t*>(&As[s][r + 8][kk + 2 * t]);
        a[i][2] = *reinterpret_cast<const uint32_t*>(&As[s][r][kk + 2 * t + 8]);
        a[i][3] = *reinterpret_cast<const uint32_t*>(&As[s][r + 8][kk + 2 * t + 8]);
      }
#pragma unroll
      for (int j = 0; j < NT; ++j) {
        const int c = wn * WTN + j * 8 + g;
        b[j][0] = *reinterpret_cast<const uint32_t*>(&Bs[s][c][kk + 2 * t]);
        b[j][1] = *reinterpret_cast<const uint32_t*>(&Bs[s][c][kk + 2 * t + 8]);
      }
#pragma unroll
      for (int i = 0; i < MT; ++i)
#pragma unroll
        for (int j = 0; j < NT; ++j) mma_bf16(acc[i][j], a[i], b[j][0], b[j][1]);
    }
    __syncthreads();  // stage s is overwritten by the next iteration's prefetch
  }

  // Epilogue: c0,c1 -> (row g, cols 2t, 2t+1); c2,c3 -> (row g+8, same cols).
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int j = 0; j < NT; ++j)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int64_t row = m0 + wm * WTM + i * 16 + g + (e >= 2 ? 8 : 0);
        const int64_t col = n0 + wn * WTN + j * 8 + 2 * t + (e & 1);
        if (row < M && col < N)
          epilogue_store(out, odt, row * N + col, acc[i][j][e] + (bias ? bias[col] : 0.f), ep);
      }
}

// Weight streaming for few rows: each warp owns CW output columns and reads their W rows
// once with 16-byte loads; the (<= R) input rows come through L1. Warp-reduce at the end.
template <int R>
__global__ void __launch_bounds__(256)
    gemv_kernel(const bf16* __restrict__ X, const bf16* __restrict__ W,
                const float* __restrict__ bias, void* out, DType odt, int M, int64_t N,
                int64_t K, Epilogue ep) {
  constexpr int CW = 2;
  const int64_t warp = (int64_t(blockIdx.x) * blockDim.x + threadIdx.x) >> 5;
  const int lane = threadIdx.x & 31;
  const int64_t n0 = warp * CW;
  if (n0 >= N) return;
  float acc[CW][R];
#pragma unroll
  for (int c = 0; c < CW; ++c)
#pragma unroll
    for (int r = 0; r < R; ++r) acc[c][r] = 0.f;
#pragma unroll 2
  for (int64_t k = lane * 8; k < K; k += 256) {
    float w[CW][8];
#pragma unroll
    for (int c = 0; c < CW; ++c) {
      uint4 v = make_uint4(0, 0, 0, 0);
      if (n0 + c < N) v = __ldg(reinterpret_cast<const uint4*>(W + (n0 + c) * K + k));
      const bf16* h = reinterpret_cast<const bf16*>(&v);
#pragma unroll
      for (int e = 0; e < 8; ++e) w[c][e] = __bfloat162float(h[e]);
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (r < M) {
        uint4 v = __ldg(reinterpret_cast<const uint4*>(X + int64_t(r) * K + k));
        const bf16* h = reinterpret_cast<const bf16*>(&v);
#pragma unroll
        for (int e = 0; e < 8; ++e) {
          const float x = __bfloat162float(h[e]);
#pragma unroll
          for (int c = 0; c < CW; ++c) acc[c][r] = fmaf(x, w[c][e], acc[c][r]);
        }
      }
    }
  }
#pragma unroll
  for (int c = 0; c < CW; ++c)
#pragma unroll
    for (int r = 0; r < R; ++r) {
      float v = acc[c][r];
#pragma unroll
      for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
      if (lane == 0 && r < M && n0 + c < N)
        epilogue_store(out, odt, int64_t(r) * N + n0 + c, v + (bias ? bias[n0 + c] : 0.f), ep);
    }
}

// ---------------------------------------------------------------- skinny (M <= 128)
// Tensor cores with the tokens in mma's N = 8 dimension: y^T = W · x^T, W the A operand.
// A CTA of 4 warps owns 64 output features (16 per warp) for one k-split of the
// reduction; every lane loads 16 bytes of W (rows g, g+8) and of x (token g of each 8-token
// tile) per 32-wide k-chunk. The k order is permuted identically for A and B, which only
// reorders the sum: in a group of U chunks starting at k0, chunk u of lane t is physical
// k0 + (t * U + u) * 8 .. +7 (so the 4 lanes of a row read 64 * U contiguous bytes), and
// words 0,1 feed the first mma of the chunk, words 2,3 the second. Split-K across CTAs (grid.y) fills the SMs when N is small: each
// split writes F32 partials, and the last CTA of a column group (atomic ticket) adds
// them in split order (deterministic), applies bias + epilogue, and re-arms the ticket.
constexpr int kSkW = 4;                 // warps per CTA
constexpr int kSkCols = 16 * kSkW;      // output features per CTA
constexpr int kSkCounters = 4096;       // tickets (column groups) available for split-K

__device__ __forceinline__ uint4 ld16(const bf16* p) {
  return __ldg(reinterpret_cast<const uint4*>(p));
}

template <int MT, int U>
__global__ void __launch_bounds__(kSkW * 32)
    gemm_skinny_kernel(const bf16* __restrict__ X, const bf16* __restrict__ W,
                       const float* __restrict__ bias, void* out, DType odt, int M, int N, int K,
                       Epilogue ep, int cps, float* part, unsigned* tickets) {
  const int warp = threadIdx.x >> 5, lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
  const int splits = gridDim.y, split = blockIdx.y;
  const int n0 = blockIdx.x * kSkCols + warp * 16;
  const int nch = (K + 31) / 32;
  const int c_begin = split * cps, c_end = min(nch, c_begin + cps);
  const int r0 = min(n0 + g, N - 1), r1 = min(n0 + g + 8, N - 1);  // clamped: discarded
  const bf16* w0 = W + int64_t(r0) * K;
  const bf16* w1 = W + int64_t(r1) * K;
  const bf16* xr[MT];
#pragma unroll
  for (int i = 0; i < MT; ++i) xr[i] = X + int64_t(min(i * 8 + g, M - 1)) * K;

  float acc[MT][4];
#pragma unroll
  for (int i = 0; i < MT; ++i) acc[i][0] = acc[i][1] = acc[i][2] = acc[i][3] = 0.f;

  for (int c = c_begin; c < c_end; c += U) {
    uint4 wa[U], wb[U], xv[U][MT];
#pragma unroll
    for (int u = 0; u < U; ++u) {
      // Chunks past c_end in the last group are treated as zeros: their k lie beyond this
      // split only if the group is cut short, so the group spans [c*32, min(c_end,c+U)*32).
      const int gchunks = min(U, c_end - c);
      const int kk = c * 32 + (t * gchunks + u) * 8;
      const bool ok = (u < gchunks) && (kk < K);
      const uint4 z = make_uint4(0, 0, 0, 0);
      wa[u] = ok ? ld16(w0 + kk) : z;
      wb[u] = ok ? ld16(w1 + kk) : z;
#pragma unroll
      for (int i = 0; i < MT; ++i) xv[u][i] = ok ? ld16(xr[i] + kk) : z;
    }
#pragma unroll
    for (int u = 0; u < U; ++u) {
      const uint32_t a0[4] = {wa[u].x, wb[u].x, wa[u].y, wb[u].y};
      const uint32_t a1[4] = {wa[u].z, wb[u].z, wa[u].w, wb[u].w};
#pragma unroll
      for (int i = 0; i < MT; ++i) {
        mma_bf16(acc[i], a0, xv[u][i].x, xv[u][i].y);
        mma_bf16(acc[i], a1, xv[u][i].z, xv[u][i].w);
      }
    }
  }

  // c0,c1 -> (feature g, tokens 2t, 2t+1); c2,c3 -> (feature g+8, same tokens).
  if (splits > 1) {
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int tok = i * 8 + 2 * t + (e & 1), f = n0 + g + (e >= 2 ? 8 : 0);
        if (tok < M && f < N) part[(int64_t(split) * M + tok) * N + f] = acc[i][e];
      }
    __threadfence();
    __syncthreads();
    __shared__ unsigned s_last;
    if (threadIdx.x == 0) s_last = atomicAdd(&tickets[blockIdx.x], 1u) == unsigned(splits - 1);
    __syncthreads();
    if (!s_last) return;
    __threadfence();
#pragma unroll
    for (int i = 0; i < MT; ++i)
#pragma unroll
      for (int e = 0; e < 4; ++e) {
        const int tok = i * 8 + 2 * t + (e & 1), f = n0 + g + (e >= 2 ? 8 : 0);
        float s = 0.f;
        if (tok < M && f < N)
          for (int sp = 0; sp < splits; ++sp) s += __ldcg(&part[(int64_t(sp) * M + tok) * N + f]);
        acc[i][e] = s;
      }
    if (threadIdx.x == 0) tickets[blockIdx.x] = 0;  // re-arm for the next launch
  }
#pragma unroll
  for (int i = 0; i < MT; ++i)
#pragma unroll
    for (int e = 0; e < 4; ++e) {
      const int tok = i * 8 + 2 * t + (e & 1), f = n0 + g + (e >= 2 ? 8 : 0);
      if (tok < M && f < N)
        epilogue_store(out, odt, int64_t(tok) * N + f, acc[i][e] + (bias ? bias[f] : 0.f), ep);
    }
}

struct SkinnyPlan {
  bool use = false;
  int mt = 1, groups = 1, splits = 1, cps = 1;
};

// Rule, from linear() A/B timings on an H200 (cuda_bench, 2026-11-27; us incl. a sync):
// skinny wins at 8-32 rows (e.g. 768x3072 at 16 rows 19 vs 58, head 50258x768 at 16 rows
// 37 vs 149), ties at 1-2 rows (GEMV kept), and at 64 rows wins only for K = 3072 (40 vs
// 68; K = 768: 36 vs 27). So: K % 8 == 0 and 3 <= M <= 16; 17 <= M <= 32 with N <= 4096;
// 33 <= M <= 64 with N <= 4096 and K >= 2048.
// ESOLM_CUDA_SKINNY=0 in the environment turns the path off (A/B timing in cuda_bench). Splits: enough CTAs for ~4 per SM, >= 2 chunks per
// split, at most max(8, 32 / MT) partials per output (the last CTA reads them all).
static SkinnyPlan plan_skinny(int64_t M, int64_t N, int64_t K, int sm_count) {
  SkinnyPlan p;
  if (K % 8 != 0 || M <= 0 || N <= 0 || K > (int64_t(1) << 30) || N > (int64_t(1) << 30)) return p;
  if (!(M >= 3 && (M <= 16 || (N <= 4096 && (M <= 32 || (M <= 64 && K >= 2048)))))) return p;
  const char* env = std::getenv("ESOLM_CUDA_SKINNY");
  if (env && env[0] == '0') return p;
  p.use = true;
  p.mt = M <= 8 ? 1 : M <= 16 ? 2 : M <= 32 ? 4 : 8;
  p.groups = int((N + kSkCols - 1) / kSkCols);
  const int nch = int((K + 31) / 32);
  const int smax = std::max(8, 32 / p.mt);
  int want = int((4 * int64_t(sm_count) + p.groups - 1) / p.groups);
  want = std::min(want, std::max(1, nch / 2));
  want = std::min(want, smax);
  if (p.groups > kSkCounters) want = 1;
  want = std::max(want, 1);
  p.cps = (nch + want - 1) / want;
  p.splits = (nch + p.cps - 1) / p.cps;
  return p;
}

template <int MT, int U>
static void run_skinny(const SkinnyPlan& p, const bf16* in, const bf16* W, const float* bias,
                       void* out, DType odt, int64_t M, int64_t N, int64_t K, Epilogue ep,
                       float* part, unsigned* tickets, cudaStream_t st) {
  dim3 grid(unsigned(p.groups), unsigned(p.splits));
  gemm_skinny_kernel<MT, U><<<grid, kSkW * 32, 0, st>>>(in, W, bias, out, odt, int(M), int(N),
                                                        int(K), ep, p.cps, part, tickets);
}

size_t linear_workspace_floats(int64_t M, int64_t N, int64_t K, int sm_count) {
  const SkinnyPlan p = plan_skinny(M, N, K, sm_count);
  return p.use && p.splits > 1 ? size_t(p.splits) * size_t(M) * size_t(N) : 0;
}
size_t linear_ticket_count() { return kSkCounters; }

// Any shape (k % 8 != 0): one thread per output element.
__global__ void linear_naive_kernel(const bf16* X, const bf16* W, const float* bias, void* out,
                                    DType odt, int64_t M, int64_t N, int64_t K, Epilogue ep) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < M * N;
       i += int64_t(gridDim.x) * blockDim.x) {
    const int64_t r = i / N, n = i % N;
    float s = 0.f;
    for (int64_t k = 0; k < K; ++k)
      s = fmaf(__bfloat162float(X[r * K + k]), __bfloat162float(W[n * K + k]), s);
    epilogue_store(out, odt, i, s + (bias ? bias[n] : 0.f), ep);
  }
}

template <int R>
static void run_gemv(const bf16* in, const bf16* W, const float* bias, void* out, DType odt,
                     int64_t M, int64_t N, int64_t K, Epilogue ep, cudaStream_t st) {
  const int64_t warps = (N + 1) / 2;
  gemv_kernel<R><<<grid_1d(warps * 32, 256), 256, 0, st>>>(in, W, bias, out, odt, int(M), N, K,
                                                            ep);
}

template <int BM, int BN, int WM, int WN>
static Status run_tc(const bf16* in, const bf16* W, const float* bias, void* out, DType odt,
                     int64_t M, int64_t N, int64_t K, Epilogue ep, cudaStream_t st) {
  const int64_t tiles = ((M + BM - 1) / BM) * ((N + BN - 1) / BN);
  if (tiles > 0x7fffffff) return Status::error(Code::invalid_arg, "linear: shape too large");
  gemm_tc_kernel<BM, BN, WM, WN><<<unsigned(tiles), WM * WN * 32, 0, st>>>(in, W, bias, out, odt,
                                                                          M, N, K, ep);
  return Status::ok();
}

Status launch_linear(const bf16* in, const bf16* W, const float* bias, void* out, DType odt,
                     int64_t M, int64_t N, int64_t K, Epilogue ep, int sm_count,
                     cudaStream_t st, float* ws, size_t ws_floats, unsigned* tickets) {
  if (M <= 0 || N <= 0) return Status::ok();
  SkinnyPlan sk = plan_skinny(M, N, K, sm_count);
  // Split-K needs the partials workspace and the tickets; without them run unsplit.
  if (sk.use && sk.splits > 1 &&
      (!ws || !tickets || ws_floats < size_t(sk.splits) * size_t(M) * size_t(N))) {
    sk.cps = int((K + 31) / 32);
    sk.splits = 1;
  }
  if (K % 8 != 0) {
    linear_naive_kernel<<<grid_1d(M * N, 256), 256, 0, st>>>(in, W, bias, out, odt, M, N, K, ep);
  } else if (sk.use) {
    switch (sk.mt) {
      case 1: run_skinny<1, 4>(sk, in, W, bias, out, odt, M, N, K, ep, ws, tickets, st); break;
      case 2: run_skinny<2, 4>(sk, in, W, bias, out, odt, M, N, K, ep, ws, tickets, st); break;
      case 4: run_skinny<4, 2>(sk, in, W, bias, out, odt, M, N, K, ep, ws, tickets, st); break;
      default: run_skinny<8, 2>(sk, in, W, bias, out, odt, M, N, K, ep, ws, tickets, st); break;
    }
  } else if (M <= 16) {  // 1-2 rows (and 3-16 when the skinny path is off)
    if (M == 1) run_gemv<1>(in, W, bias, out, odt, M, N, K, ep, st);
    else if (M == 2) run_gemv<2>(in, W, bias, out, odt, M, N, K, ep, st);
    else if (M <= 4) run_gemv<4>(in, W, bias, out, odt, M, N, K, ep, st);
    else if (M <= 8) run_gemv<8>(in, W, bias, out, odt, M, N, K, ep, st);
    else run_gemv<16>(in, W, bias, out, odt, M, N, K, ep, st);
  } else {
    // Big tiles only when they alone fill the machine about twice; else 64x64 tiles.
    const int64_t big = ((M + 127) / 128) * ((N + 127) / 128);
    Status s = big >= 2 * int64_t(sm_count)
                   ? run_tc<128, 128, 2, 4>(in, W, bias, out, odt, M, N, K, ep, st)
                   : run_tc<64, 64, 2, 2>(in, W, bias, out, odt, M, N, K, ep, st);
    if (!s) return s;
  }
  CUDA_CHECK_LAUNCH("linear");
  return Status::ok();
}

__global__ void convert_kernel(const void* src, DType st, void* dst, DType dt, int64_t n) {
  for (int64_t i = blockIdx.x * int64_t(blockDim.x) + threadIdx.x; i < n;
       i += int64_t(gridDim.x) * blockDim.x)
    st_any(dst, dt, i, ld_any(src, st, i));
}

Status launch_convert(const void* src, DType st, void* dst, DType dt, int64_t n,
                      cudaStream_t stream) {
  if (n <= 0) return Status::ok();
  convert_kernel<<<grid_1d(n, 256), 256, 0, stream>>>(src, st, dst, dt, n);
  CUDA_CHECK_LAUNCH("convert");
  return Status::ok();
}

}  // namespace cuda
}  // namespace esolm
