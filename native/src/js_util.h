// The N-API side's shared pieces: coded JS errors from C++ exceptions, readers of JS arguments (each
// failing with TRN_ERR_ARG naming the key), conversions of results, and the promise-settling worker.
#pragma once

#include <napi.h>

#include <ATen/ATen.h>

#include <exception>
#include <functional>
#include <memory>
#include <string>
#include <vector>

#include "common.h"
#include "config.h"
#include "ppo.h"
#include "safetensors.h"
#include "train.h"

namespace trn::js {

// ---- errors -------------------------------------------------------------------------------------------

struct Failure {
  std::string code = "TRN_ERR_TORCH";
  std::string msg;
  std::string file;
  int line = 0;
};

/** The catalogue code, message and C++ place of any exception (TrnError, c10::Error, std::exception). */
Failure describe(std::exception_ptr p);

/** A JS Error with `code` (and `file`/`line` when known). */
Napi::Error codedError(Napi::Env env, const Failure& f);

/** Runs a binding body; C++ exceptions leave as coded JS exceptions. */
template <typename F>
Napi::Value guard(Napi::Env env, F&& fn) {
  try {
    return fn();
  } catch (const Napi::Error&) {
    throw;
  } catch (...) {
    throw codedError(env, describe(std::current_exception()));
  }
}

// ---- argument readers ---------------------------------------------------------------------------------

Napi::Object obj(const Napi::Value& v, const std::string& what);
bool has(const Napi::Object& o, const char* k);
double num(const Napi::Object& o, const char* k, double def);
double numReq(const Napi::Object& o, const char* k);
int64_t integer(const Napi::Object& o, const char* k, int64_t def);
bool flag(const Napi::Object& o, const char* k, bool def);
std::string str(const Napi::Object& o, const char* k, const std::string& def);
napi_typedarray_type arrayType(const Napi::Value& v);
/** Int32Array → int64 values. */
std::vector<int64_t> ints(const Napi::Object& o, const char* k);
/** Float32Array or Float64Array of length n → float64 tensor (a copy). */
at::Tensor floats(const Napi::Object& o, const char* k, int64_t n);
/** Uint8Array of length n → bool tensor. */
at::Tensor mask(const Napi::Object& o, const char* k, int64_t n);

ModelConfig readConfig(const Napi::Object& o);
PpoLossConfig readLoss(const Napi::Object& o, double& temperature);
OptimConfig readOptim(const Napi::Object& o);
std::vector<MicroBatch> readMicroBatches(const Napi::Value& v, int64_t vocab);
std::vector<TensorLocation> readLocations(const Napi::Value& v);

// ---- results ------------------------------------------------------------------------------------------

/** float64 tensors → Float64Array, anything else → Float32Array (copies). */
Napi::Value fromTensor(Napi::Env env, const at::Tensor& t);
Napi::Object statsObject(Napi::Env env, const PpoSums& s);

// ---- workers ------------------------------------------------------------------------------------------

/** Runs `run` off the JS thread, then settles a promise with `result` (JS thread) or a coded error. */
class PromiseWorker : public Napi::AsyncWorker {
 public:
  PromiseWorker(Napi::Env env, std::function<void()> run, std::function<Napi::Value(Napi::Env)> result,
                std::function<void()> done)
      : Napi::AsyncWorker(env, "trn"), deferred_(Napi::Promise::Deferred::New(env)), run_(std::move(run)),
        result_(std::move(result)), done_(std::move(done)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void keep(Napi::Object o) { self_ = Napi::Persistent(o); }

  // no N-API/V8 here: worker thread
  void Execute() override {
    try {
      run_();
    } catch (...) {
      fail_ = describe(std::current_exception());
      SetError(fail_.msg);
    }
  }
  void OnOK() override {
    if (done_) done_();
    try {
      deferred_.Resolve(result_ ? result_(Env()) : Env().Undefined());
    } catch (const Napi::Error& e) {
      deferred_.Reject(e.Value());
    } catch (...) {
      deferred_.Reject(codedError(Env(), describe(std::current_exception())).Value());
    }
  }
  void OnError(const Napi::Error&) override {
    if (done_) done_();
    deferred_.Reject(codedError(Env(), fail_).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::function<void()> run_;
  std::function<Napi::Value(Napi::Env)> result_;
  std::function<void()> done_;
  Napi::ObjectReference self_;
  Failure fail_;
};

struct AddonData {
  Napi::FunctionReference modelCtor;
  Napi::FunctionReference groupCtor;
};

}  // namespace trn::js
