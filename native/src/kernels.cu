// CUDA kernels for the memory-bound passes of a training step; the contracts are in kernels.h. Built by
// nvcc only (native/build.ts, when a CUDA libtorch and nvcc are found); no torch headers here.
//
// Both kernels read and write 16-byte vectors per thread where the layout allows (8 bf16/fp16 or 4 fp32
// values), compute in float32 and round once.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdint>

#include "kernels.h"

namespace trn::kernels {
namespace {

__device__ __forceinline__ float toF(float x) { return x; }
__device__ __forceinline__ float toF(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float toF(__half x) { return __half2float(x); }

template <typename T>
__device__ __forceinline__ T fromF(float x);
template <>
__device__ __forceinline__ float fromF<float>(float x) { return x; }
template <>
__device__ __forceinline__ __nv_bfloat16 fromF<__nv_bfloat16>(float x) { return __float2bfloat16(x); }
template <>
__device__ __forceinline__ __half fromF<__half>(float x) { return __float2half(x); }

template <typename T, int N>
struct alignas(sizeof(T) * N) Vec {
  T v[N];
};

template <typename T, int N>
__device__ __forceinline__ Vec<T, N> load(const T* p) {
  return *reinterpret_cast<const Vec<T, N>*>(p);
}
template <typename T, int N>
__device__ __forceinline__ void store(T* p, const Vec<T, N>& v) {
  *reinterpret_cast<Vec<T, N>*>(p) = v;
}

bool aligned16(const void* p) { return (reinterpret_cast<uintptr_t>(p) & 15) == 0; }

int gridFor(int64_t work, int threads) {
  const int64_t b = (work + threads - 1) / threads;
  return static_cast<int>(b < (int64_t{1} << 20) ? (b > 0 ? b : 1) : (int64_t{1} << 20));
}

// ---- RoPE -------------------------------------------------------------------------------------------------

template <typename T, int N>
__global__ void ropeKernel(T* y, const T* x, const float* __restrict__ cosT, const float* __restrict__ sinT,
                           int64_t rows, int heads, int half, float sign) {
  const int groups = half / N;
  const int64_t n = rows * groups;
  for (int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x; i < n;
       i += static_cast<int64_t>(gridDim.x) * blockDim.x) {
    const int64_t r = i / groups;
    const int a0 = static_cast<int>(i - r * groups) * N;
    const int64_t t = r / heads;
    const T* xr = x + r * 2 * half;
    T* yr = y + r * 2 * half;
    const auto xa = load<T, N>(xr + a0);
    const auto xb = load<T, N>(xr + half + a0);
    const float* c = cosT + t * half + a0;
    const float* s = sinT + t * half + a0;
    Vec<T, N> ya, yb;
#pragma unroll
    for (int k = 0; k < N; k++) {
      const float u = toF(xa.v[k]), v = toF(xb.v[k]), ck = c[k], sk = sign * s[k];
      ya.v[k] = fromF<T>(u * ck - v * sk);
      yb.v[k] = fromF<T>(v * ck + u * sk);
    }
    store<T, N>(yr + a0, ya);
    store<T, N>(yr + half + a0, yb);
  }
}

template <typename T>
int ropeTyped(void* y, const void* x, const float* cosT, const float* sinT, int64_t T_, int64_t heads, int64_t hd,
              bool transpose, cudaStream_t st) {
  constexpr int V = 16 / sizeof(T);
  const int half = static_cast<int>(hd / 2);
  const int64_t rows = T_ * heads;
  const float sign = transpose ? -1.f : 1.f;
  constexpr int threads = 256;
  if (half % V == 0 && aligned16(x) && aligned16(y)) {
    ropeKernel<T, V><<<gridFor(rows * (half / V), threads), threads, 0, st>>>(
        static_cast<T*>(y), static_cast<const T*>(x), cosT, sinT, rows, static_cast<int>(heads), half, sign);
  } else {
    ropeKernel<T, 1><<<gridFor(rows * half, threads), threads, 0, st>>>(
        static_cast<T*>(y), static_cast<const T*>(x), cosT, sinT, rows, static_cast<int>(heads), half, sign);
  }
  return static_cast<int>(cudaGetLastError());
}

// ---- softmax rows -----------------------------------------------------------------------------------------

// Running softmax statistics of a set of values z: m = max, s = Σ exp(z − m), t = Σ exp(z − m)·(z − m).
// Then lse = m + log s and the entropy −Σ p·log p = log s − t/s (no large-|z| cancellation).
struct Acc {
  float m, s, t;
};

__device__ __forceinline__ Acc merge(const Acc& a, const Acc& b) {
  if (b.s == 0.f) return a;
  if (a.s == 0.f) return b;
  const float M = fmaxf(a.m, b.m);
  const float fa = expf(a.m - M), fb = expf(b.m - M);
  return {M, a.s * fa + b.s * fb, fa * (a.t + (a.m - M) * a.s) + fb * (b.t + (b.m - M) * b.s)};
}

template <typename T, int N>
__device__ __forceinline__ void accumulate(Acc& a, const Vec<T, N>& v, float scale) {
  float z[N];
  float vm = -INFINITY;
#pragma unroll
  for (int k = 0; k < N; k++) {
    z[k] = scale * toF(v.v[k]);
    vm = fmaxf(vm, z[k]);
  }
  if (vm == -INFINITY) return;  // every value masked out
  if (vm > a.m) {
    if (a.s > 0.f) {
      const float f = __expf(a.m - vm);
      a.t = f * (a.t + (a.m - vm) * a.s);
      a.s *= f;
    }
    a.m = vm;
  }
#pragma unroll
  for (int k = 0; k < N; k++) {
    const float d = z[k] - a.m;
    const float e = __expf(d);
    a.s += e;
    a.t += d == -INFINITY ? 0.f : e * d;
  }
}

constexpr int kRowThreads = 512;

template <typename T, int N>
__global__ void __launch_bounds__(kRowThreads) softmaxRowsKernel(const T* z, int64_t V, float scale,
                                                                 const int64_t* __restrict__ target, float* logp,
                                                                 float* entropy, T* out, const float* gradLogp,
                                                                 const float* gradEntropy) {
  const int64_t row = blockIdx.x;
  const T* zr = z + row * V;
  const int64_t nv = V / N;
  Acc a{-INFINITY, 0.f, 0.f};
  for (int64_t i = threadIdx.x; i < nv; i += kRowThreads) accumulate<T, N>(a, load<T, N>(zr + i * N), scale);
  // warp, then block reduction
#pragma unroll
  for (int off = 16; off > 0; off >>= 1) {
    Acc b{__shfl_xor_sync(0xffffffffu, a.m, off), __shfl_xor_sync(0xffffffffu, a.s, off),
          __shfl_xor_sync(0xffffffffu, a.t, off)};
    a = merge(a, b);
  }
  __shared__ Acc warps[kRowThreads / 32];
  __shared__ float rowStats[3];  // lse, H, the target's scaled logit
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) warps[warp] = a;
  const int64_t tgt = target[row];
  __syncthreads();
  if (warp == 0) {
    a = lane < kRowThreads / 32 ? warps[lane] : Acc{-INFINITY, 0.f, 0.f};
#pragma unroll
    for (int off = 16; off > 0; off >>= 1) {
      Acc b{__shfl_xor_sync(0xffffffffu, a.m, off), __shfl_xor_sync(0xffffffffu, a.s, off),
            __shfl_xor_sync(0xffffffffu, a.t, off)};
      a = merge(a, b);
    }
    if (lane == 0) {
      const float logS = logf(a.s);
      rowStats[0] = a.m + logS;
      rowStats[1] = logS - a.t / a.s;
      rowStats[2] = scale * toF(zr[tgt]);  // read before any thread overwrites the row (out may be z)
    }
  }
  __syncthreads();
  const float lse = rowStats[0], H = rowStats[1], lpT = rowStats[2] - lse;
  if (threadIdx.x == 0) {
    if (logp) logp[row] = lpT;
    if (entropy) entropy[row] = H;
  }
  if (!out) return;
  T* orow = out + row * V;
  const bool grad = gradLogp || gradEntropy;
  const float g = gradLogp ? gradLogp[row] : 0.f, e = gradEntropy ? gradEntropy[row] : 0.f;
  for (int64_t i = threadIdx.x; i < nv; i += kRowThreads) {
    const auto v = load<T, N>(zr + i * N);
    Vec<T, N> o;
#pragma unroll
    for (int k = 0; k < N; k++) {
      const float lp = scale * toF(v.v[k]) - lse;
      const float p = __expf(lp);
      if (!grad) {
        o.v[k] = fromF<T>(p);
      } else {
        // g·(δ − p): at the target −expm1(lp) = 1 − p without cancellation when p → 1
        const float dLogp = (i * N + k == tgt) ? -expm1f(lp) : -p;
        const float entTerm = p == 0.f ? 0.f : -e * p * (lp + H);
        o.v[k] = fromF<T>(scale * (g * dLogp + entTerm));
      }
    }
    store<T, N>(orow + i * N, o);
  }
}

template <typename T>
int softmaxTyped(const void* z, int64_t rows, int64_t V, float scale, const int64_t* target, float* logp,
                 float* entropy, void* out, const float* gradLogp, const float* gradEntropy, cudaStream_t st) {
  if (rows == 0) return 0;
  constexpr int N = 16 / sizeof(T);
  const auto* zt = static_cast<const T*>(z);
  auto* ot = static_cast<T*>(out);
  if (V % N == 0 && aligned16(z) && (!out || aligned16(out))) {
    softmaxRowsKernel<T, N><<<static_cast<unsigned>(rows), kRowThreads, 0, st>>>(zt, V, scale, target, logp, entropy,
                                                                                  ot, gradLogp, gradEntropy);
  } else {
    softmaxRowsKernel<T, 1><<<static_cast<unsigned>(rows), kRowThreads, 0, st>>>(zt, V, scale, target, logp, entropy,
                                                                                  ot, gradLogp, gradEntropy);
  }
  return static_cast<int>(cudaGetLastError());
}

}  // namespace

int rope(void* y, const void* x, const float* cosT, const float* sinT, int64_t T, int64_t heads, int64_t hd, Dtype dt,
         bool transpose, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  switch (dt) {
    case Dtype::F32: return ropeTyped<float>(y, x, cosT, sinT, T, heads, hd, transpose, st);
    case Dtype::BF16: return ropeTyped<__nv_bfloat16>(y, x, cosT, sinT, T, heads, hd, transpose, st);
    case Dtype::F16: return ropeTyped<__half>(y, x, cosT, sinT, T, heads, hd, transpose, st);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

int softmaxRows(const void* z, int64_t rows, int64_t V, float scale, const int64_t* target, float* logp,
                float* entropy, void* probs, const float* gradLogp, const float* gradEntropy, Dtype dt, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  if ((gradLogp || gradEntropy) && !probs) return static_cast<int>(cudaErrorInvalidValue);
  switch (dt) {
    case Dtype::F32:
      return softmaxTyped<float>(z, rows, V, scale, target, logp, entropy, probs, gradLogp, gradEntropy, st);
    case Dtype::BF16:
      return softmaxTyped<__nv_bfloat16>(z, rows, V, scale, target, logp, entropy, probs, gradLogp, gradEntropy, st);
    case Dtype::F16:
      return softmaxTyped<__half>(z, rows, V, scale, target, logp, entropy, probs, gradLogp, gradEntropy, st);
  }
  return static_cast<int>(cudaErrorInvalidValue);
}

const char* errorString(int code) { return cudaGetErrorString(static_cast<cudaError_t>(code)); }

}  // namespace trn::kernels
