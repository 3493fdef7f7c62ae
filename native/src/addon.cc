// N-API bindings (node-addon-api). native/index.ts is the only consumer and documents every export.
//
// Threading: every long call runs in an AsyncWorker (libuv pool); Execute() touches no N-API/V8, only
// plain C++ copies of the arguments made on the JS thread. One call at a time per model handle (and per
// process group): a second call while one runs is rejected with TRN_ERR_BUSY. Failures never abort the
// process: C++ exceptions become JS errors with a catalogue `code` (and `file`/`line` of the C++ check).
#include <napi.h>

#include <ATen/Parallel.h>
#include <ATen/core/grad_mode.h>
#include <malloc.h>

#include <functional>
#include <memory>

#ifdef TRN_WITH_CUDA
#include <c10/cuda/CUDACachingAllocator.h>
#endif

#include "bind_group.h"
#include "bind_model.h"
#include "dist.h"
#include "js_util.h"
#include "train.h"

#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif

namespace trn::js {
namespace {

// ppoLoss({logprobs, proxLogprobs, behaveLogprobs?, advantages, lossMask, cuSeqlens}, loss, denom?) (sync)
Napi::Value PpoLossFn(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    auto o = obj(info[0], "inputs");
    TRN_CHECK(arrayType(o.Get("logprobs")) == napi_float64_array, "TRN_ERR_ARG", "logprobs must be a Float64Array");
    const int64_t T = o.Get("logprobs").As<Napi::Float64Array>().ElementLength();
    auto cu = ints(o, "cuSeqlens");
    std::vector<int64_t> seq(T, 0);
    TRN_CHECK(cu.size() >= 2 && cu.front() == 0 && cu.back() == T, "TRN_ERR_ARG", "cuSeqlens must run from 0 to T");
    for (size_t s = 0; s + 1 < cu.size(); s++)
      for (int64_t i = cu[s]; i < cu[s + 1]; i++) seq[i] = static_cast<int64_t>(s);
    auto lp = floats(o, "logprobs", T).requires_grad_(true);
    auto prox = floats(o, "proxLogprobs", T);
    at::Tensor behave;
    if (has(o, "behaveLogprobs")) behave = floats(o, "behaveLogprobs", T);
    auto adv = floats(o, "advantages", T);
    auto m = mask(o, "lossMask", T);
    double temperature = 1;
    auto cfg = readLoss(obj(info[1], "loss"), temperature);
    double denom = info.Length() > 2 && info[2].IsNumber() ? info[2].As<Napi::Number>().DoubleValue() : m.sum().item<double>();
    TRN_CHECK(denom > 0, "TRN_ERR_ARG", "no loss tokens");
    PpoSums sums;
    auto loss = ppoLoss(lp, prox, behave, adv, m, at::tensor(seq, at::kLong), static_cast<int64_t>(cu.size()) - 1, denom,
                        cfg, sums);
    loss.backward();
    auto env = info.Env();
    auto out = Napi::Object::New(env);
    out.Set("loss", loss.item<double>());
    out.Set("grad", fromTensor(env, lp.grad()));
    out.Set("stats", statsObject(env, sums));
    return out;
  });
}

// lrAt(optim, step) (sync)
Napi::Value LrAt(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    auto opt = readOptim(obj(info[0], "optim"));
    TRN_CHECK(info[1].IsNumber(), "TRN_ERR_ARG", "step must be a number");
    return Napi::Number::New(info.Env(), lrAt(opt, info[1].As<Napi::Number>().Int64Value()));
  });
}

Napi::Value SetNumThreads(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    TRN_CHECK(info[0].IsNumber() && info[0].As<Napi::Number>().Int32Value() >= 1, "TRN_ERR_ARG",
              "setNumThreads(n) needs n >= 1");
    at::set_num_threads(info[0].As<Napi::Number>().Int32Value());
    return info.Env().Undefined();
  });
}

Napi::Value NumThreads(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), at::get_num_threads()); }

Napi::Value BuildInfo(const Napi::CallbackInfo& info) {
  auto env = info.Env();
  auto o = Napi::Object::New(env);
#ifdef TORCH_VERSION
  o.Set("torchVersion", TORCH_VERSION);
#else
  o.Set("torchVersion", "unknown");
#endif
  o.Set("gloo", haveGloo());
  o.Set("nccl", haveNccl());
#ifdef TRN_WITH_CUDA
  o.Set("cuda", true);
#else
  o.Set("cuda", false);
#endif
#ifdef TRN_HAVE_KERNELS
  o.Set("kernels", true);
#else
  o.Set("kernels", false);
#endif
  o.Set("cxx11Abi", static_cast<bool>(_GLIBCXX_USE_CXX11_ABI));
  return o;
}

Napi::Value CudaDeviceCount(const Napi::CallbackInfo& info) { return Napi::Number::New(info.Env(), cudaDeviceCount()); }

// cudaMemory(device, resetPeak): the caching allocator's bytes on that device — allocated now, the peak
// allocated (since the last reset), reserved from the driver; then optionally resets the peak.
Napi::Value CudaMemory(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    TRN_CHECK(info.Length() >= 1 && info[0].IsString(), "TRN_ERR_ARG", "cudaMemory(device, resetPeak?)");
    const auto dev = deviceFromName(info[0].As<Napi::String>().Utf8Value());
    TRN_CHECK(dev.is_cuda(), "TRN_ERR_ARG", "cudaMemory needs a cuda device");
#ifdef TRN_WITH_CUDA
    using namespace c10::cuda::CUDACachingAllocator;
    const auto stats = getDeviceStats(dev.index());
    const auto all = static_cast<size_t>(c10::CachingAllocator::StatType::AGGREGATE);
    auto o = Napi::Object::New(info.Env());
    o.Set("allocatedBytes", static_cast<double>(stats.allocated_bytes[all].current));
    o.Set("peakBytes", static_cast<double>(stats.allocated_bytes[all].peak));
    o.Set("reservedBytes", static_cast<double>(stats.reserved_bytes[all].current));
    if (info.Length() >= 2 && info[1].ToBoolean()) resetPeakStats(dev.index());
    return o;
#else
    TRN_FAIL("TRN_ERR_DEVICE", "this addon was built without CUDA");
#endif
  });
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // NOTE: glibc serves blocks above the (dynamic) mmap threshold with fresh mmaps and unmaps them on free;
  // libtorch allocates and frees tensors of many MB per op, so every op page-faults its output in again
  // (measured: 100 ms to zero 19 MB on the CI VM). Keep blocks up to 32 MB (glibc's maximum) in the heap
  // and do not trim it back after every free.
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
  auto* data = new AddonData();
  data->modelCtor = Napi::Persistent(modelClass(env));
  data->groupCtor = Napi::Persistent(groupClass(env));
  env.SetInstanceData(data);
  exports.Set("createModel", Napi::Function::New(env, CreateModel));
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
  exports.Set("ppoLoss", Napi::Function::New(env, PpoLossFn));
  exports.Set("lrAt", Napi::Function::New(env, LrAt));
  exports.Set("initProcessGroup", Napi::Function::New(env, InitProcessGroup));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("numThreads", Napi::Function::New(env, NumThreads));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
  exports.Set("cudaDeviceCount", Napi::Function::New(env, CudaDeviceCount));
  exports.Set("cudaMemory", Napi::Function::New(env, CudaMemory));
  return exports;
}

}  // namespace
}  // namespace trn::js

static Napi::Object InitAll(Napi::Env env, Napi::Object exports) { return trn::js::Init(env, exports); }

NODE_API_MODULE(trainer, InitAll)
