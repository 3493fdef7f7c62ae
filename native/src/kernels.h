// Hand-written CUDA kernels for the memory-bound passes of a training step (kernels.cu, compiled by nvcc
// when the build finds one next to a CUDA libtorch; TRN_HAVE_KERNELS is then defined). The interface is
// plain pointers and sizes so the .cu needs no torch headers; model.cc wraps them in autograd and checks
// shapes, dtypes and contiguity before calling. Every function returns 0 or a cudaError_t value.
#pragma once

#include <cstdint>

namespace trn::kernels {

/** Element type of the tensors a kernel reads and writes (the tables and statistics are float32). */
enum class Dtype : int { F32 = 0, BF16 = 1, F16 = 2 };

/**
 * Rotary embedding, rotate-half layout (HF Llama/Qwen): for every row r = (t, head) of x [T·heads, hd]
 * and a < hd/2, with c = cos[t, a], s = sin[t, a] (tables [T, hd/2], float32):
 *   y[a] = x[a]·c − x[a + hd/2]·s,   y[a + hd/2] = x[a + hd/2]·c + x[a]·s
 * in float32, rounded once. `transpose` rotates the other way (s → −s): the map's transpose, i.e. its
 * backward. x and y contiguous; y may be x.
 */
int rope(void* y, const void* x, const float* cos, const float* sin, int64_t T, int64_t heads, int64_t hd, Dtype dt,
         bool transpose, void* stream);

/**
 * Row statistics of a softmax over logits z [rows, V] (contiguous, z·scale are the logits used), one pass
 * over the row in float32 with a running maximum: lse = log Σ exp(scale·z), then
 *   logp[r] = scale·z[r, target[r]] − lse,   entropy[r] = −Σ p·log p   (p = exp(scale·z − lse)).
 * `probs` (may be z itself): when not null, p is written there in z's dtype (a second read of the row).
 * `gradLogp`/`gradEntropy` (either may be null): when given, the row is overwritten (in `probs`, which
 * must then be set) with d loss / d z for loss gradients g = gradLogp[r] and e = gradEntropy[r]:
 *   dz_j = scale·(g·(δ_j,target − p_j) − e·p_j·(log p_j + H))
 * instead of p. `logp`/`entropy` may be null when not wanted.
 */
int softmaxRows(const void* z, int64_t rows, int64_t V, float scale, const int64_t* target, float* logp,
                float* entropy, void* probs, const float* gradLogp, const float* gradEntropy, Dtype dt, void* stream);

/** CUDA's name for an error a function above returned. */
const char* errorString(int code);

}  // namespace trn::kernels
