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
                     cudaStream_t st) {
  if (M <= 0 || N <= 0) return Status::ok();
  if (K % 8 != 0) {
    linear_naive_kernel<<<grid_1d(M * N, 256), 256, 0, st>>>(in, W, bias, out, odt, M, N, K, ep);
  } else if (M <= 16) {
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
