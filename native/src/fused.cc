#include "fused.h"

#include <torch/csrc/autograd/custom_function.h>

#include <cstdlib>
#include <string>

#include "common.h"

#ifdef TRN_HAVE_KERNELS
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>

#include "kernels.h"
#endif

namespace trn {

bool fusedFor(const at::Device& device, at::ScalarType dtype, const char* kernel) {
#ifdef TRN_HAVE_KERNELS
  if (!device.is_cuda()) return false;
  if (dtype != at::kFloat && dtype != at::kBFloat16 && dtype != at::kHalf) return false;
  const char* e = std::getenv("TRN_KERNELS");
  const std::string mode = e ? e : "";
  if (mode == "aten") return false;
  // TRN_KERNELS=rope|softmax: that kernel alone (diagnostics); anything else: both
  if (mode == "rope" || mode == "softmax") return mode == kernel;
  return true;
#else
  (void)device;
  (void)dtype;
  (void)kernel;
  return false;
#endif
}

std::pair<at::Tensor, at::Tensor> ropeHalfTables(const at::Tensor& pos, int64_t hd, double theta) {
  auto j = at::arange(0, hd, 2, at::TensorOptions().dtype(at::kDouble).device(pos.device())) / static_cast<double>(hd);
  auto freqs = pos.to(at::kDouble).unsqueeze(1) * at::pow(theta, -j).unsqueeze(0);  // [T, hd/2]
  return {freqs.cos().to(at::kFloat).contiguous(), freqs.sin().to(at::kFloat).contiguous()};
}

#ifdef TRN_HAVE_KERNELS
namespace {
kernels::Dtype kernelDtype(at::ScalarType t) {
  switch (t) {
    case at::kFloat: return kernels::Dtype::F32;
    case at::kBFloat16: return kernels::Dtype::BF16;
    case at::kHalf: return kernels::Dtype::F16;
    default: TRN_FAIL("TRN_ERR_TORCH", std::string("no CUDA kernel for dtype ") + dtypeName(t));
  }
}
void check(int rc, const char* what) {
  TRN_CHECK(rc == 0, "TRN_ERR_TORCH", std::string(what) + ": " + kernels::errorString(rc));
}
void* stream(const at::Tensor& t) { return at::cuda::getCurrentCUDAStream(t.device().index()).stream(); }
}  // namespace
#endif

at::Tensor fusedRope(const at::Tensor& x0, const at::Tensor& cosH, const at::Tensor& sinH, bool transpose) {
#ifdef TRN_HAVE_KERNELS
  TRN_CHECK(x0.dim() == 3 && x0.size(2) % 2 == 0 && cosH.size(0) == x0.size(0) && cosH.size(1) * 2 == x0.size(2),
            "TRN_ERR_TORCH", "fused RoPE: x " + shapeStr(x0.sizes()) + " does not match tables " + shapeStr(cosH.sizes()));
  TRN_CHECK(cosH.scalar_type() == at::kFloat && sinH.scalar_type() == at::kFloat && cosH.is_contiguous() &&
                sinH.is_contiguous() && cosH.device() == x0.device(),
            "TRN_ERR_TORCH", "fused RoPE: tables must be contiguous float32 on x's device");
  c10::cuda::CUDAGuard guard(x0.device());
  auto x = x0.contiguous();
  auto y = at::empty_like(x, at::MemoryFormat::Contiguous);
  check(kernels::rope(y.data_ptr(), x.data_ptr(), cosH.data_ptr<float>(), sinH.data_ptr<float>(), x.size(0), x.size(1),
                      x.size(2), kernelDtype(x.scalar_type()), transpose, stream(x)),
        "fused RoPE");
  return y;
#else
  (void)x0, (void)cosH, (void)sinH, (void)transpose;
  TRN_FAIL("TRN_ERR_DEVICE", "this build has no CUDA kernels");
#endif
}

namespace {
struct RopeKernelFn : public torch::autograd::Function<RopeKernelFn> {
  static at::Tensor forward(torch::autograd::AutogradContext* ctx, const at::Tensor& x, const at::Tensor& cosH,
                            const at::Tensor& sinH) {
    ctx->save_for_backward({cosH, sinH});
    return fusedRope(x, cosH, sinH, false);
  }
  static torch::autograd::variable_list backward(torch::autograd::AutogradContext* ctx,
                                                 torch::autograd::variable_list grads) {
    auto t = ctx->get_saved_variables();
    return {fusedRope(grads[0], t[0], t[1], true), at::Tensor(), at::Tensor()};
  }
};
}  // namespace

at::Tensor fusedRopeAutograd(const at::Tensor& x, const at::Tensor& cosH, const at::Tensor& sinH) {
  return RopeKernelFn::apply(x, cosH, sinH);
}

void fusedSoftmaxRows(const at::Tensor& z, double scale, const at::Tensor& target, const at::Tensor& logp,
                      const at::Tensor& entropy, bool outProbs, const at::Tensor& gradLogp,
                      const at::Tensor& gradEntropy) {
#ifdef TRN_HAVE_KERNELS
  TRN_CHECK(z.dim() == 2 && z.is_contiguous(), "TRN_ERR_TORCH", "fused softmax: logits must be a contiguous matrix");
  const int64_t rows = z.size(0);
  auto vec = [&](const at::Tensor& t, at::ScalarType dt, const char* name) -> const void* {
    if (!t.defined()) return nullptr;
    TRN_CHECK(t.numel() == rows && t.is_contiguous() && t.scalar_type() == dt && t.device() == z.device(),
              "TRN_ERR_TORCH", std::string("fused softmax: ") + name + " must be " + dtypeName(dt) + " [" +
                                   std::to_string(rows) + "], contiguous, on the logits' device");
    return t.data_ptr();
  };
  auto* tgt = static_cast<const int64_t*>(vec(target, at::kLong, "target"));
  TRN_CHECK(tgt != nullptr, "TRN_ERR_TORCH", "fused softmax: target is required");
  auto* lp = const_cast<float*>(static_cast<const float*>(vec(logp, at::kFloat, "logp")));
  auto* ent = const_cast<float*>(static_cast<const float*>(vec(entropy, at::kFloat, "entropy")));
  auto* gl = static_cast<const float*>(vec(gradLogp, at::kFloat, "gradLogp"));
  auto* ge = static_cast<const float*>(vec(gradEntropy, at::kFloat, "gradEntropy"));
  TRN_CHECK(outProbs || (!gl && !ge), "TRN_ERR_TORCH", "fused softmax: gradients are written over the logits");
  c10::cuda::CUDAGuard guard(z.device());
  check(kernels::softmaxRows(z.data_ptr(), rows, z.size(1), static_cast<float>(scale), tgt, lp, ent,
                             outProbs ? z.data_ptr() : nullptr, gl, ge, kernelDtype(z.scalar_type()), stream(z)),
        "fused softmax");
#else
  (void)z, (void)scale, (void)target, (void)logp, (void)entropy, (void)outProbs, (void)gradLogp, (void)gradEntropy;
  TRN_FAIL("TRN_ERR_DEVICE", "this build has no CUDA kernels");
#endif
}

}  // namespace trn
