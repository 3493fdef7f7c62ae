// Tensor-level entry points to the hand-written CUDA kernels (kernels.h). `fusedFor()` says whether one
// serves a device and dtype: only in builds with the kernels (TRN_HAVE_KERNELS), on CUDA, for float32,
// bfloat16 and float16. TRN_KERNELS picks: unset — both kernels; `aten` — none (the ATen compositions;
// the GPU tests compare against them); `rope` or `softmax` — that kernel alone (diagnostics). Callers
// keep their ATen path otherwise.
#pragma once

#include <ATen/ATen.h>

#include <utility>

namespace trn {

/** `kernel`: "rope" or "softmax" (see TRN_KERNELS above). */
bool fusedFor(const at::Device& device, at::ScalarType dtype, const char* kernel);

/** float32 RoPE tables for the kernel: cos and sin of pos·θ^(−2j/hd), each [T, hd/2], contiguous. */
std::pair<at::Tensor, at::Tensor> ropeHalfTables(const at::Tensor& pos, int64_t hd, double theta);

/** RoPE of x [T, heads, hd] (rotate-half) with ropeHalfTables; `transpose` applies the inverse rotation. */
at::Tensor fusedRope(const at::Tensor& x, const at::Tensor& cosH, const at::Tensor& sinH, bool transpose);

/** RoPE through fusedRope with its backward (the transposed rotation); no gradient for the tables. */
at::Tensor fusedRopeAutograd(const at::Tensor& x, const at::Tensor& cosH, const at::Tensor& sinH);

/**
 * Softmax row statistics over logits z [rows, V] (see kernels::softmaxRows): fills logp/entropy [rows]
 * (float32, either may be undefined) and, with `outProbs`, overwrites z with the probabilities, or with
 * d loss / d z when gradLogp/gradEntropy (float32 [rows]) are given.
 */
void fusedSoftmaxRows(const at::Tensor& z, double scale, const at::Tensor& target, const at::Tensor& logp,
                      const at::Tensor& entropy, bool outProbs, const at::Tensor& gradLogp = {},
                      const at::Tensor& gradEntropy = {});

}  // namespace trn
