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

#include "dist.h"
#include "generate.h"
#include "model.h"
#include "safetensors.h"
#include "train.h"

#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif

namespace trn {
namespace {

// ---- errors -------------------------------------------------------------------------------------------

struct Failure {
  std::string code = "TRN_ERR_TORCH";
  std::string msg;
  std::string file;
  int line = 0;
};

Failure describe(std::exception_ptr p) {
  Failure f;
  try {
    std::rethrow_exception(p);
  } catch (const TrnError& e) {
    f.code = e.code, f.msg = e.what(), f.file = e.file, f.line = e.line;
  } catch (const c10::Error& e) {
    f.msg = e.what_without_backtrace();
  } catch (const std::bad_alloc&) {
    f.msg = "out of memory";
  } catch (const std::exception& e) {
    f.msg = e.what();
  } catch (...) {
    f.msg = "unknown C++ exception";
  }
  return f;
}

Napi::Error codedError(Napi::Env env, const Failure& f) {
  auto e = Napi::Error::New(env, f.msg);
  e.Set("code", Napi::String::New(env, f.code));
  if (!f.file.empty()) {
    e.Set("file", Napi::String::New(env, f.file));
    e.Set("line", Napi::Number::New(env, f.line));
  }
  return e;
}

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

// ---- argument readers (throw TRN_ERR_ARG naming the key) ----------------------------------------------

Napi::Object obj(const Napi::Value& v, const std::string& what) {
  TRN_CHECK(v.IsObject(), "TRN_ERR_ARG", what + " must be an object");
  return v.As<Napi::Object>();
}

bool has(const Napi::Object& o, const char* k) {
  auto v = o.Get(k);
  return !v.IsUndefined() && !v.IsNull();
}

double num(const Napi::Object& o, const char* k, double def) {
  if (!has(o, k)) return def;
  auto v = o.Get(k);
  TRN_CHECK(v.IsNumber(), "TRN_ERR_ARG", std::string(k) + " must be a number");
  return v.As<Napi::Number>().DoubleValue();
}

double numReq(const Napi::Object& o, const char* k) {
  TRN_CHECK(has(o, k), "TRN_ERR_ARG", std::string(k) + " is required");
  return num(o, k, 0);
}

int64_t integer(const Napi::Object& o, const char* k, int64_t def) {
  double d = num(o, k, static_cast<double>(def));
  TRN_CHECK(std::floor(d) == d, "TRN_ERR_ARG", std::string(k) + " must be an integer");
  return static_cast<int64_t>(d);
}

bool flag(const Napi::Object& o, const char* k, bool def) {
  if (!has(o, k)) return def;
  auto v = o.Get(k);
  TRN_CHECK(v.IsBoolean(), "TRN_ERR_ARG", std::string(k) + " must be a boolean");
  return v.As<Napi::Boolean>().Value();
}

std::string str(const Napi::Object& o, const char* k, const std::string& def) {
  if (!has(o, k)) return def;
  auto v = o.Get(k);
  TRN_CHECK(v.IsString(), "TRN_ERR_ARG", std::string(k) + " must be a string");
  return v.As<Napi::String>().Utf8Value();
}

napi_typedarray_type arrayType(const Napi::Value& v) {
  return v.IsTypedArray() ? v.As<Napi::TypedArray>().TypedArrayType() : static_cast<napi_typedarray_type>(-1);
}

std::vector<int64_t> ints(const Napi::Object& o, const char* k) {
  auto v = o.Get(k);
  TRN_CHECK(arrayType(v) == napi_int32_array, "TRN_ERR_ARG", std::string(k) + " must be an Int32Array");
  auto a = v.As<Napi::Int32Array>();
  return std::vector<int64_t>(a.Data(), a.Data() + a.ElementLength());
}

// Float32Array or Float64Array of length n → float64 tensor.
at::Tensor floats(const Napi::Object& o, const char* k, int64_t n) {
  auto v = o.Get(k);
  auto t = arrayType(v);
  TRN_CHECK(t == napi_float32_array || t == napi_float64_array, "TRN_ERR_ARG",
            std::string(k) + " must be a Float32Array or Float64Array");
  auto a = v.As<Napi::TypedArray>();
  TRN_CHECK(static_cast<int64_t>(a.ElementLength()) == n, "TRN_ERR_ARG",
            std::string(k) + " has " + std::to_string(a.ElementLength()) + " elements, expected " + std::to_string(n));
  if (t == napi_float32_array) {
    auto f = v.As<Napi::Float32Array>();
    return at::from_blob(f.Data(), {n}, at::kFloat).to(at::kDouble);
  }
  auto f = v.As<Napi::Float64Array>();
  return at::from_blob(f.Data(), {n}, at::kDouble).clone();
}

at::Tensor mask(const Napi::Object& o, const char* k, int64_t n) {
  auto v = o.Get(k);
  TRN_CHECK(arrayType(v) == napi_uint8_array, "TRN_ERR_ARG", std::string(k) + " must be a Uint8Array");
  auto a = v.As<Napi::Uint8Array>();
  TRN_CHECK(static_cast<int64_t>(a.ElementLength()) == n, "TRN_ERR_ARG",
            std::string(k) + " has " + std::to_string(a.ElementLength()) + " elements, expected " + std::to_string(n));
  return at::from_blob(a.Data(), {n}, at::kByte).ne(0);
}

Napi::Value fromTensor(Napi::Env env, const at::Tensor& t0) {
  auto t = t0.detach().contiguous();
  if (t.scalar_type() == at::kDouble) {
    auto a = Napi::Float64Array::New(env, t.numel());
    std::memcpy(a.Data(), t.data_ptr<double>(), t.numel() * sizeof(double));
    return a;
  }
  t = t.to(at::kFloat).contiguous();
  auto a = Napi::Float32Array::New(env, t.numel());
  std::memcpy(a.Data(), t.data_ptr<float>(), t.numel() * sizeof(float));
  return a;
}

ModelConfig readConfig(const Napi::Object& o) {
  ModelConfig c;
  c.vocabSize = integer(o, "vocabSize", 0);
  c.hiddenSize = integer(o, "hiddenSize", 0);
  c.intermediateSize = integer(o, "intermediateSize", 0);
  c.numLayers = integer(o, "numHiddenLayers", 0);
  c.numHeads = integer(o, "numAttentionHeads", 0);
  c.numKvHeads = integer(o, "numKeyValueHeads", 0);
  c.headDim = integer(o, "headDim", 0);
  c.rmsNormEps = num(o, "rmsNormEps", 1e-6);
  c.ropeTheta = num(o, "ropeTheta", 1e6);
  c.initializerRange = num(o, "initializerRange", 0.02);
  c.tieWordEmbeddings = flag(o, "tieWordEmbeddings", false);
  c.attentionBias = flag(o, "attentionBias", false);
  c.maxPositionEmbeddings = integer(o, "maxPositionEmbeddings", 0);
  c.validate();
  return c;
}

PpoLossConfig readLoss(const Napi::Object& o, double& temperature) {
  PpoLossConfig c;
  c.epsClip = num(o, "epsClip", 0.2);
  c.epsClipHigher = num(o, "epsClipHigher", -1);
  c.dualClip = num(o, "dualClip", 0);
  c.behavImpWeightCap = num(o, "behavImpWeightCap", 0);
  c.behavImpWeightMode = str(o, "behavImpWeightMode", "mask");
  c.sequenceLevel = flag(o, "sequenceLevel", false);
  temperature = num(o, "temperature", 1.0);
  c.validate();
  return c;
}

OptimConfig readOptim(const Napi::Object& o) {
  OptimConfig c;
  c.lr = numReq(o, "lr");
  if (has(o, "betas")) {
    auto b = o.Get("betas");
    TRN_CHECK(b.IsArray() && b.As<Napi::Array>().Length() == 2, "TRN_ERR_ARG", "betas must be [beta1, beta2]");
    c.beta1 = b.As<Napi::Array>().Get(0u).ToNumber().DoubleValue();
    c.beta2 = b.As<Napi::Array>().Get(1u).ToNumber().DoubleValue();
  }
  c.eps = num(o, "eps", 1e-8);
  c.weightDecay = num(o, "weightDecay", 0.0);
  c.maxGradNorm = num(o, "maxGradNorm", 1.0);
  if (has(o, "schedule")) {
    auto s = obj(o.Get("schedule"), "schedule");
    c.schedule.kind = str(s, "kind", "constant");
    c.schedule.warmupSteps = integer(s, "warmupSteps", 0);
    c.schedule.totalSteps = integer(s, "totalSteps", 0);
    c.schedule.minLrRatio = num(s, "minLrRatio", 0.0);
  }
  c.validate();
  return c;
}

std::vector<MicroBatch> readMicroBatches(const Napi::Value& v, int64_t vocab) {
  TRN_CHECK(v.IsArray(), "TRN_ERR_ARG", "microBatches must be an array");
  auto arr = v.As<Napi::Array>();
  TRN_CHECK(arr.Length() > 0, "TRN_ERR_ARG", "microBatches is empty");
  std::vector<MicroBatch> out;
  for (uint32_t i = 0; i < arr.Length(); i++) {
    auto o = obj(arr.Get(i), "microBatches[" + std::to_string(i) + "]");
    MicroBatch mb;
    mb.batch = makePacked(ints(o, "inputIds"), ints(o, "cuSeqlens"), vocab);
    const int64_t T = mb.batch.tokens();
    mb.mask = mask(o, "lossMask", T);
    for (int64_t s = 0; s < mb.batch.numSeqs(); s++)
      TRN_CHECK(!mb.mask[mb.batch.cu[s]].item<bool>(), "TRN_ERR_ARG",
                "microBatches[" + std::to_string(i) + "]: lossMask is set on the first token of sequence " +
                    std::to_string(s) + " (nothing predicts it)");
    mb.adv = floats(o, "advantages", T);
    mb.prox = floats(o, "proxLogprobs", T);
    if (has(o, "behaveLogprobs")) mb.behave = floats(o, "behaveLogprobs", T);
    out.push_back(std::move(mb));
  }
  return out;
}

Napi::Object statsObject(Napi::Env env, const PpoSums& s) {
  auto o = Napi::Object::New(env);
  const double n = std::max(1.0, s.tokens);
  o.Set("loss", s.loss);
  o.Set("tokens", s.tokens);
  o.Set("clipFraction", s.clipped / n);
  o.Set("dualClipFraction", s.dualClipped / n);
  o.Set("behavCappedFraction", s.behavDropped / n);
  o.Set("ratioMean", s.ratioSum / n);
  o.Set("ratioMax", s.ratioMax);
  o.Set("approxKl", s.approxKlSum / n);
  o.Set("entropy", s.entropySum / n);
  return o;
}

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

// ---- process group ------------------------------------------------------------------------------------

class GroupWrap : public Napi::ObjectWrap<GroupWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeProcessGroup",
                       {InstanceMethod("info", &GroupWrap::Info), InstanceMethod("allreduceSum", &GroupWrap::AllreduceSum),
                        InstanceMethod("barrier", &GroupWrap::Barrier)});
  }
  explicit GroupWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<GroupWrap>(info) {
    if (info.Length() == 1 && info[0].IsExternal())
      comm = *info[0].As<Napi::External<std::shared_ptr<Comm>>>().Data();
  }
  std::shared_ptr<Comm> comm;

 private:
  Napi::Value Info(const Napi::CallbackInfo& info) {
    auto o = Napi::Object::New(info.Env());
    o.Set("rank", comm ? comm->rank() : 0);
    o.Set("worldSize", comm ? comm->worldSize() : 1);
    return o;
  }
  void begin() {
    TRN_CHECK(comm, "TRN_ERR_ARG", "process group is not initialised");
    bool expected = false;
    TRN_CHECK(comm->busy.compare_exchange_strong(expected, true), "TRN_ERR_BUSY",
              "the process group is running another collective call");
  }
  Napi::Value AllreduceSum(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      TRN_CHECK(arrayType(info[0]) == napi_float64_array, "TRN_ERR_ARG", "allreduceSum takes a Float64Array");
      auto a = info[0].As<Napi::Float64Array>();
      auto t = at::from_blob(a.Data(), {static_cast<int64_t>(a.ElementLength())}, at::kDouble).clone();
      begin();
      auto c = comm;
      auto w = new PromiseWorker(
          info.Env(), [c, t]() mutable { c->allreduceSum(t); }, [t](Napi::Env env) { return fromTensor(env, t); },
          [c] { c->busy = false; });
      w->keep(info.This().As<Napi::Object>());
      w->Queue();
      return w->promise();
    });
  }
  Napi::Value Barrier(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      begin();
      auto c = comm;
      auto w = new PromiseWorker(info.Env(), [c] { c->barrier(); }, nullptr, [c] { c->busy = false; });
      w->keep(info.This().As<Napi::Object>());
      w->Queue();
      return w->promise();
    });
  }
};

std::shared_ptr<Comm> groupOf(Napi::Env env, const Napi::Object& opts) {
  if (!has(opts, "processGroup")) return nullptr;
  auto v = opts.Get("processGroup");
  auto* data = env.GetInstanceData<AddonData>();
  TRN_CHECK(v.IsObject() && v.As<Napi::Object>().InstanceOf(data->groupCtor.Value()), "TRN_ERR_ARG",
            "processGroup must come from initProcessGroup()");
  auto comm = GroupWrap::Unwrap(v.As<Napi::Object>())->comm;
  return comm && comm->worldSize() > 1 ? comm : nullptr;
}

// ---- model --------------------------------------------------------------------------------------------

class ModelWrap : public Napi::ObjectWrap<ModelWrap> {
 public:
  static Napi::Function Init(Napi::Env env) {
    return DefineClass(env, "NativeModel",
                       {InstanceMethod("info", &ModelWrap::Info), InstanceMethod("logprobs", &ModelWrap::Logprobs),
                        InstanceMethod("gradients", &ModelWrap::Gradients), InstanceMethod("ppoStep", &ModelWrap::PpoStep),
                        InstanceMethod("generate", &ModelWrap::Generate), InstanceMethod("save", &ModelWrap::Save),
                        InstanceMethod("parameters", &ModelWrap::Parameters),
                        InstanceMethod("saveState", &ModelWrap::SaveState),
                        InstanceMethod("loadState", &ModelWrap::LoadState),
                        InstanceMethod("setParameter", &ModelWrap::SetParameter),
                        InstanceMethod("dispose", &ModelWrap::Dispose)});
  }
  explicit ModelWrap(const Napi::CallbackInfo& info) : Napi::ObjectWrap<ModelWrap>(info) {
    if (info.Length() == 1 && info[0].IsExternal())
      model_ = *info[0].As<Napi::External<std::shared_ptr<Model>>>().Data();
  }

 private:
  std::shared_ptr<Model> model_;
  bool busy_ = false;

  // Claim the handle (JS thread). Returns the model; `release` must run when the call settles.
  std::shared_ptr<Model> begin() {
    TRN_CHECK(model_, "TRN_ERR_DISPOSED", "the model was disposed");
    TRN_CHECK(!busy_, "TRN_ERR_BUSY", "another call on this model is still running; await it first");
    if (auto* c = model_->store.comm()) {
      bool expected = false;
      TRN_CHECK(c->busy.compare_exchange_strong(expected, true), "TRN_ERR_BUSY",
                "the model's process group is running another collective call");
    }
    busy_ = true;
    return model_;
  }
  std::function<void()> release() {
    auto m = model_;
    return [this, m] {
      busy_ = false;
      if (auto* c = m->store.comm()) c->busy = false;
    };
  }
  Napi::Value queue(const Napi::CallbackInfo& info, std::function<void()> run, std::function<Napi::Value(Napi::Env)> res) {
    auto w = new PromiseWorker(info.Env(), std::move(run), std::move(res), release());
    w->keep(info.This().As<Napi::Object>());
    w->Queue();
    return w->promise();
  }

  Napi::Value Info(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      TRN_CHECK(model_, "TRN_ERR_DISPOSED", "the model was disposed");
      auto env = info.Env();
      auto& st = model_->store;
      auto o = Napi::Object::New(env);
      o.Set("numParams", static_cast<double>(st.numParams()));
      o.Set("shardNumel", static_cast<double>(st.master().numel()));
      o.Set("dtype", dtypeName(st.dtype()));
      o.Set("rank", st.rank());
      o.Set("worldSize", st.worldSize());
      o.Set("step", static_cast<double>(st.step));
      o.Set("busy", busy_);
      auto ps = Napi::Array::New(env);
      for (size_t i = 0; i < st.specs().size(); i++) {
        auto p = Napi::Object::New(env);
        p.Set("name", st.specs()[i].name);
        auto sh = Napi::Array::New(env);
        for (size_t d = 0; d < st.specs()[i].shape.size(); d++) sh.Set(d, static_cast<double>(st.specs()[i].shape[d]));
        p.Set("shape", sh);
        ps.Set(i, p);
      }
      o.Set("params", ps);
      return o;
    });
  }

  Napi::Value Logprobs(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      TRN_CHECK(model_, "TRN_ERR_DISPOSED", "the model was disposed");
      auto b = obj(info[0], "batch");
      auto opts = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(info.Env());
      double temperature = num(opts, "temperature", 1.0);
      TRN_CHECK(temperature > 0, "TRN_ERR_ARG", "temperature must be > 0");
      auto batch = std::make_shared<PackedBatch>(makePacked(ints(b, "inputIds"), ints(b, "cuSeqlens"), model_->cfg.vocabSize));
      auto m = begin();
      auto out = std::make_shared<Scores>();
      return queue(
          info,
          [m, batch, temperature, out] {
            at::NoGradGuard ng;
            const auto& full = m->store.materialize(false);
            auto w = m->weights(full);
            auto h = m->hidden(w, batch->ids, batch->positions(),
                               [&](const at::Tensor& q, const at::Tensor& k, const at::Tensor& v, int) {
                                 return attentionPacked(q, k, v, batch->cu);
                               });
            *out = m->score(w, h, *batch, temperature);
            m->store.release();
          },
          [out](Napi::Env env) -> Napi::Value {
            auto o = Napi::Object::New(env);
            o.Set("logprobs", fromTensor(env, out->logprobs.to(at::kFloat)));
            o.Set("entropy", fromTensor(env, out->entropy.to(at::kFloat)));
            return o;
          });
    });
  }

  Napi::Value Gradients(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      TRN_CHECK(model_, "TRN_ERR_DISPOSED", "the model was disposed");
      auto mbs = std::make_shared<std::vector<MicroBatch>>(readMicroBatches(info[0], model_->cfg.vocabSize));
      double temperature = 1;
      auto loss = readLoss(obj(info[1], "loss"), temperature);
      auto m = begin();
      auto grads = std::make_shared<std::vector<at::Tensor>>();
      auto sums = std::make_shared<PpoSums>();
      return queue(
          info, [=] { *grads = lossGradients(*m, *mbs, loss, temperature, *sums); },
          [=](Napi::Env env) -> Napi::Value {
            auto o = Napi::Object::New(env);
            auto g = Napi::Object::New(env);
            for (size_t i = 0; i < grads->size(); i++) g.Set(m->store.specs()[i].name, fromTensor(env, (*grads)[i]));
            o.Set("grads", g);
            o.Set("stats", statsObject(env, *sums));
            return o;
          });
    });
  }

  Napi::Value PpoStep(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      TRN_CHECK(model_, "TRN_ERR_DISPOSED", "the model was disposed");
      auto mbs = std::make_shared<std::vector<MicroBatch>>(readMicroBatches(info[0], model_->cfg.vocabSize));
      double temperature = 1;
      auto loss = readLoss(obj(info[1], "loss"), temperature);
      auto opt = readOptim(obj(info[2], "optim"));
      auto m = begin();
      auto st = std::make_shared<StepStats>();
      return queue(
          info, [=] { *st = ppoStep(*m, *mbs, loss, temperature, opt); },
          [=](Napi::Env env) -> Napi::Value {
            auto o = statsObject(env, st->sums);
            o.Set("gradNorm", st->gradNorm);
            o.Set("lr", st->lr);
            o.Set("skipped", st->skipped);
            o.Set("step", static_cast<double>(st->step));
            return o;
          });
    });
  }

  Napi::Value Generate(const Napi::CallbackInfo& info);

  Napi::Value Save(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      TRN_CHECK(model_, "TRN_ERR_DISPOSED", "the model was disposed");
      TRN_CHECK(info[0].IsString(), "TRN_ERR_ARG", "save(dir): dir must be a string");
      std::string dir = info[0].As<Napi::String>().Utf8Value();
      auto opts = info.Length() > 1 && info[1].IsObject() ? info[1].As<Napi::Object>() : Napi::Object::New(info.Env());
      auto dtype = dtypeFromName(str(opts, "dtype", "bfloat16"));
      TRN_CHECK(dtype != at::kDouble, "TRN_ERR_ARG", "save dtype must be float32, bfloat16 or float16");
      int64_t maxShard = integer(opts, "maxShardBytes", 0);
      auto m = begin();
      auto files = std::make_shared<std::vector<std::string>>();
      return queue(
          info,
          [=] {
            const auto& full = m->store.materialize(false);
            if (m->store.rank() == 0) {
              std::vector<std::string> names;
              for (auto& s : m->store.specs()) names.push_back(s.name);
              *files = writeSafetensors(dir, names, full, dtype, maxShard);
            }
            m->store.release();
          },
          [=](Napi::Env env) -> Napi::Value {
            auto a = Napi::Array::New(env);
            for (size_t i = 0; i < files->size(); i++) a.Set(i, (*files)[i]);
            return a;
          });
    });
  }

  Napi::Value Parameters(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      auto m = begin();
      auto vals = std::make_shared<std::vector<at::Tensor>>();
      return queue(
          info,
          [=] {
            const auto& full = m->store.materialize(false);
            for (auto& t : full) vals->push_back(t.detach().clone());
            m->store.release();
          },
          [=](Napi::Env env) -> Napi::Value {
            auto o = Napi::Object::New(env);
            for (size_t i = 0; i < vals->size(); i++) o.Set(m->store.specs()[i].name, fromTensor(env, (*vals)[i]));
            return o;
          });
    });
  }

  // saveState(path): this rank's master shard, AdamW moments and step, one safetensors file.
  Napi::Value SaveState(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      TRN_CHECK(model_, "TRN_ERR_DISPOSED", "the model was disposed");
      TRN_CHECK(info[0].IsString(), "TRN_ERR_ARG", "saveState(path): path must be a string");
      std::string path = info[0].As<Napi::String>().Utf8Value();
      auto m = begin();
      return queue(
          info,
          [=] {
            auto& st = m->store;
            writeSafetensorsFile(path, {"master", "exp_avg", "exp_avg_sq"}, {st.master(), st.expAvg(), st.expAvgSq()},
                                 {{"format", "trn-optimizer"},
                                  {"step", std::to_string(st.step)},
                                  {"rank", std::to_string(st.rank())},
                                  {"world_size", std::to_string(st.worldSize())},
                                  {"num_params", std::to_string(st.numParams())},
                                  {"dtype", dtypeName(st.dtype())}});
          },
          nullptr);
    });
  }

  // loadState(tensors: TensorLocation[], meta: {step, rank, worldSize, numParams})
  Napi::Value LoadState(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      TRN_CHECK(model_, "TRN_ERR_DISPOSED", "the model was disposed");
      TRN_CHECK(info[0].IsArray(), "TRN_ERR_ARG", "tensors must be an array");
      auto arr = info[0].As<Napi::Array>();
      auto meta = obj(info[1], "meta");
      auto& st = model_->store;
      const int64_t step = integer(meta, "step", -1);
      TRN_CHECK(step >= 0, "TRN_ERR_CHECKPOINT", "optimizer state has no step");
      TRN_CHECK(integer(meta, "worldSize", -1) == st.worldSize() && integer(meta, "rank", -1) == st.rank(),
                "TRN_ERR_CHECKPOINT",
                "optimizer state is of rank " + std::to_string(integer(meta, "rank", -1)) + " of " +
                    std::to_string(integer(meta, "worldSize", -1)) + ", this model is rank " + std::to_string(st.rank()) +
                    " of " + std::to_string(st.worldSize()));
      TRN_CHECK(integer(meta, "numParams", -1) == st.numParams(), "TRN_ERR_CHECKPOINT",
                "optimizer state is for a model of " + std::to_string(integer(meta, "numParams", -1)) +
                    " parameters, this one has " + std::to_string(st.numParams()));
      std::vector<TensorLocation> locs;
      for (uint32_t i = 0; i < arr.Length(); i++) {
        auto o = obj(arr.Get(i), "tensors[" + std::to_string(i) + "]");
        TensorLocation l;
        l.name = str(o, "name", "");
        l.file = str(o, "file", "");
        l.dtype = str(o, "dtype", "");
        l.offset = integer(o, "offset", 0);
        l.nbytes = integer(o, "nbytes", 0);
        auto sh = o.Get("shape");
        TRN_CHECK(sh.IsArray(), "TRN_ERR_ARG", "tensors[" + std::to_string(i) + "].shape must be an array");
        for (uint32_t d = 0; d < sh.As<Napi::Array>().Length(); d++)
          l.shape.push_back(sh.As<Napi::Array>().Get(d).ToNumber().Int64Value());
        locs.push_back(std::move(l));
      }
      auto m = begin();
      return queue(
          info,
          [=] {
            at::NoGradGuard ng;
            auto& st = m->store;
            std::vector<at::Tensor> vals(3);
            const char* names[3] = {"master", "exp_avg", "exp_avg_sq"};
            for (auto& l : locs)
              for (int k = 0; k < 3; k++)
                if (l.name == names[k]) {
                  TRN_CHECK(l.shape.size() == 1 && l.shape[0] == st.master().numel(), "TRN_ERR_CHECKPOINT",
                            l.name + " has shape " + shapeStr(l.shape) + ", this rank's shard has " +
                                std::to_string(st.master().numel()) + " elements");
                  vals[k] = readTensor(l);
                }
            for (int k = 0; k < 3; k++)
              TRN_CHECK(vals[k].defined(), "TRN_ERR_CHECKPOINT", std::string("optimizer state lacks ") + names[k]);
            st.master().copy_(vals[0]);
            st.expAvg().copy_(vals[1]);
            st.expAvgSq().copy_(vals[2]);
            st.step = step;
          },
          nullptr);
    });
  }

  Napi::Value SetParameter(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      TRN_CHECK(model_, "TRN_ERR_DISPOSED", "the model was disposed");
      TRN_CHECK(!busy_, "TRN_ERR_BUSY", "another call on this model is still running; await it first");
      TRN_CHECK(info[0].IsString(), "TRN_ERR_ARG", "setParameter(name, data): name must be a string");
      auto name = info[0].As<Napi::String>().Utf8Value();
      int i = model_->store.indexOf(name);
      TRN_CHECK(i >= 0, "TRN_ERR_ARG", "no parameter named " + name);
      auto holder = Napi::Object::New(info.Env());
      holder.Set("data", info[1]);
      auto t = floats(holder, "data", model_->store.specs()[i].numel);
      model_->store.setFull(i, t);
      return info.Env().Undefined();
    });
  }

  Napi::Value Dispose(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      TRN_CHECK(!busy_, "TRN_ERR_BUSY", "cannot dispose while a call is running; await it first");
      model_.reset();
      return info.Env().Undefined();
    });
  }
};

// generate(requests, sampling, control?: Int32Array, onProgress?: (steps) => void)
class GenerateWorker : public Napi::AsyncProgressWorker<int64_t> {
 public:
  GenerateWorker(Napi::Env env, std::shared_ptr<Model> m, std::vector<GenRequest> reqs, Sampling s, std::function<void()> done)
      : Napi::AsyncProgressWorker<int64_t>(env, "trn.generate"), deferred_(Napi::Promise::Deferred::New(env)),
        model_(std::move(m)), reqs_(std::move(reqs)), s_(std::move(s)), done_(std::move(done)) {}
  Napi::Promise promise() { return deferred_.Promise(); }
  void keep(Napi::Object self) { self_ = Napi::Persistent(self); }
  void control(Napi::Int32Array a) {
    ctrlRef_ = Napi::Persistent(a);
    ctrl_ = a.Data();
  }
  void onProgress(Napi::Function f) { progressFn_ = Napi::Persistent(f); }

  // no N-API/V8 here: worker thread
  void Execute(const ExecutionProgress& progress) override {
    try {
      const bool wantProgress = !progressFn_.IsEmpty();
      out_ = generate(*model_, reqs_, s_, ctrl_, [&](int64_t steps) {
        if (wantProgress) progress.Send(&steps, 1);
      });
    } catch (...) {
      fail_ = describe(std::current_exception());
      SetError(fail_.msg);
    }
  }
  void OnProgress(const int64_t* data, size_t count) override {
    if (progressFn_.IsEmpty() || count == 0) return;
    Napi::HandleScope scope(Env());
    progressFn_.Call({Napi::Number::New(Env(), static_cast<double>(data[count - 1]))});
  }
  void OnOK() override {
    done_();
    auto env = Env();
    auto a = Napi::Array::New(env);
    for (size_t i = 0; i < out_.size(); i++) {
      auto o = Napi::Object::New(env);
      auto toks = Napi::Int32Array::New(env, out_[i].tokens.size());
      std::copy(out_[i].tokens.begin(), out_[i].tokens.end(), toks.Data());
      auto lps = Napi::Float32Array::New(env, out_[i].logprobs.size());
      std::copy(out_[i].logprobs.begin(), out_[i].logprobs.end(), lps.Data());
      o.Set("tokens", toks);
      o.Set("logprobs", lps);
      o.Set("finish", out_[i].finish);
      a.Set(i, o);
    }
    deferred_.Resolve(a);
  }
  void OnError(const Napi::Error&) override {
    done_();
    deferred_.Reject(codedError(Env(), fail_).Value());
  }

 private:
  Napi::Promise::Deferred deferred_;
  std::shared_ptr<Model> model_;
  std::vector<GenRequest> reqs_;
  Sampling s_;
  std::function<void()> done_;
  Napi::ObjectReference self_;
  Napi::Reference<Napi::Int32Array> ctrlRef_;
  const int32_t* ctrl_ = nullptr;
  Napi::FunctionReference progressFn_;
  std::vector<GenResult> out_;
  Failure fail_;
};

Napi::Value ModelWrap::Generate(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    TRN_CHECK(model_, "TRN_ERR_DISPOSED", "the model was disposed");
    TRN_CHECK(info[0].IsArray(), "TRN_ERR_ARG", "requests must be an array");
    auto arr = info[0].As<Napi::Array>();
    auto so = obj(info[1], "sampling");
    Sampling s;
    s.temperature = num(so, "temperature", 1.0);
    s.topP = num(so, "topP", 1.0);
    s.topK = integer(so, "topK", 0);
    s.kvCache = flag(so, "kvCache", true);
    const int64_t defMax = integer(so, "maxNewTokens", 0);
    const int64_t seed = integer(so, "seed", 0);
    if (has(so, "stopIds")) {
      auto st = so.Get("stopIds");
      TRN_CHECK(st.IsArray(), "TRN_ERR_ARG", "stopIds must be an array of token ids");
      auto sa = st.As<Napi::Array>();
      for (uint32_t i = 0; i < sa.Length(); i++) s.stopIds.push_back(sa.Get(i).ToNumber().Int64Value());
    }
    s.validate(model_->cfg.vocabSize);
    std::vector<GenRequest> reqs;
    for (uint32_t i = 0; i < arr.Length(); i++) {
      auto o = obj(arr.Get(i), "requests[" + std::to_string(i) + "]");
      GenRequest r;
      r.prompt = ints(o, "prompt");
      r.maxNewTokens = integer(o, "maxNewTokens", defMax);
      r.seed = static_cast<uint64_t>(integer(o, "seed", seed + static_cast<int64_t>(i)));
      reqs.push_back(std::move(r));
    }
    auto m = begin();
    auto w = new GenerateWorker(info.Env(), m, std::move(reqs), s, release());
    w->keep(info.This().As<Napi::Object>());
    if (info.Length() > 2 && arrayType(info[2]) == napi_int32_array) w->control(info[2].As<Napi::Int32Array>());
    if (info.Length() > 3 && info[3].IsFunction()) w->onProgress(info[3].As<Napi::Function>());
    w->Queue();
    return w->promise();
  });
}

// ---- module functions ---------------------------------------------------------------------------------

Napi::Value makeModel(Napi::Env env, std::shared_ptr<Model> m) {
  auto* data = env.GetInstanceData<AddonData>();
  auto ext = Napi::External<std::shared_ptr<Model>>::New(env, new std::shared_ptr<Model>(std::move(m)),
                                                         [](Napi::Env, std::shared_ptr<Model>* p) { delete p; });
  return data->modelCtor.New({ext});
}

// createModel(config, {seed, dtype, processGroup})
Napi::Value CreateModel(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    auto cfg = readConfig(obj(info[0], "config"));
    auto opts = obj(info[1], "options");
    auto seed = static_cast<uint64_t>(integer(opts, "seed", 0));
    auto dtype = dtypeFromName(str(opts, "dtype", "float32"));
    auto comm = groupOf(info.Env(), opts);
    auto holder = std::make_shared<std::shared_ptr<Model>>();
    auto w = new PromiseWorker(
        info.Env(),
        [=] {
          auto m = std::make_shared<Model>(cfg, dtype, comm);
          m->initRandom(seed);
          *holder = m;
        },
        [=](Napi::Env env) { return makeModel(env, *holder); }, nullptr);
    w->Queue();
    return w->promise();
  });
}

// loadModel(config, tensors: TensorLocation[], {dtype, processGroup})
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    auto cfg = readConfig(obj(info[0], "config"));
    TRN_CHECK(info[1].IsArray(), "TRN_ERR_ARG", "tensors must be an array");
    auto arr = info[1].As<Napi::Array>();
    std::vector<TensorLocation> locs;
    for (uint32_t i = 0; i < arr.Length(); i++) {
      auto o = obj(arr.Get(i), "tensors[" + std::to_string(i) + "]");
      TensorLocation l;
      l.name = str(o, "name", "");
      l.file = str(o, "file", "");
      l.dtype = str(o, "dtype", "");
      l.offset = integer(o, "offset", 0);
      l.nbytes = integer(o, "nbytes", 0);
      auto sh = o.Get("shape");
      TRN_CHECK(sh.IsArray(), "TRN_ERR_ARG", "tensors[" + std::to_string(i) + "].shape must be an array");
      for (uint32_t d = 0; d < sh.As<Napi::Array>().Length(); d++)
        l.shape.push_back(sh.As<Napi::Array>().Get(d).ToNumber().Int64Value());
      locs.push_back(std::move(l));
    }
    auto opts = obj(info[2], "options");
    auto dtype = dtypeFromName(str(opts, "dtype", "float32"));
    auto comm = groupOf(info.Env(), opts);
    auto holder = std::make_shared<std::shared_ptr<Model>>();
    auto w = new PromiseWorker(
        info.Env(),
        [=] {
          auto m = std::make_shared<Model>(cfg, dtype, comm);
          std::vector<bool> seen(m->store.specs().size(), false);
          for (auto& l : locs) {
            int i = m->store.indexOf(l.name);
            if (i < 0) {
              if (l.name == "lm_head.weight" && cfg.tieWordEmbeddings) continue;  // tied: embed is the head
              if (l.name.find("rotary_emb.inv_freq") != std::string::npos) continue;
              TRN_FAIL("TRN_ERR_CHECKPOINT", "unexpected tensor " + l.name + " in " + l.file + " (not a Qwen3 parameter)");
            }
            const auto& s = m->store.specs()[i];
            TRN_CHECK(l.shape == s.shape, "TRN_ERR_CHECKPOINT",
                      l.name + " has shape " + shapeStr(l.shape) + ", the config needs " + shapeStr(s.shape));
            m->store.setFull(i, readTensor(l));
            seen[i] = true;
          }
          std::string missing;
          for (size_t i = 0; i < seen.size(); i++)
            if (!seen[i]) missing += (missing.empty() ? "" : ", ") + m->store.specs()[i].name;
          TRN_CHECK(missing.empty(), "TRN_ERR_CHECKPOINT", "checkpoint lacks " + missing);
          *holder = m;
        },
        [=](Napi::Env env) { return makeModel(env, *holder); }, nullptr);
    w->Queue();
    return w->promise();
  });
}

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

// initProcessGroup({rank, worldSize, storePath | host+port, glooHostname, timeoutMs})
Napi::Value InitProcessGroup(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    auto o = obj(info[0], "options");
    CommOptions c;
    c.rank = static_cast<int>(integer(o, "rank", -1));
    c.worldSize = static_cast<int>(integer(o, "worldSize", 0));
    c.storePath = str(o, "storePath", "");
    c.host = str(o, "host", "");
    c.port = static_cast<int>(integer(o, "port", 0));
    c.glooHostname = str(o, "glooHostname", "");
    c.timeoutMs = integer(o, "timeoutMs", 300000);
    TRN_CHECK(c.worldSize >= 1, "TRN_ERR_ARG", "worldSize must be >= 1");
    TRN_CHECK(c.rank >= 0 && c.rank < c.worldSize, "TRN_ERR_ARG", "rank must be in [0, worldSize)");
    auto holder = std::make_shared<std::shared_ptr<Comm>>();
    auto w = new PromiseWorker(
        info.Env(), [=] { *holder = createGlooComm(c); },
        [=](Napi::Env env) -> Napi::Value {
          auto* data = env.GetInstanceData<AddonData>();
          auto ext = Napi::External<std::shared_ptr<Comm>>::New(env, new std::shared_ptr<Comm>(*holder),
                                                                [](Napi::Env, std::shared_ptr<Comm>* p) { delete p; });
          return data->groupCtor.New({ext});
        },
        nullptr);
    w->Queue();
    return w->promise();
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
#ifdef TRN_WITH_CUDA
  o.Set("cuda", true);
#else
  o.Set("cuda", false);
#endif
  o.Set("cxx11Abi", static_cast<bool>(_GLIBCXX_USE_CXX11_ABI));
  return o;
}

Napi::Object Init(Napi::Env env, Napi::Object exports) {
  // NOTE: glibc serves blocks above the (dynamic) mmap threshold with fresh mmaps and unmaps them on free;
  // libtorch allocates and frees tensors of many MB per op, so every op page-faults its output in again
  // (measured: 100 ms to zero 19 MB on the CI VM). Keep blocks up to 32 MB (glibc's maximum) in the heap
  // and do not trim it back after every free.
  mallopt(M_MMAP_THRESHOLD, 32 * 1024 * 1024);
  mallopt(M_TRIM_THRESHOLD, 256 * 1024 * 1024);
  auto* data = new AddonData();
  data->modelCtor = Napi::Persistent(ModelWrap::Init(env));
  data->groupCtor = Napi::Persistent(GroupWrap::Init(env));
  env.SetInstanceData(data);
  exports.Set("createModel", Napi::Function::New(env, CreateModel));
  exports.Set("loadModel", Napi::Function::New(env, LoadModel));
  exports.Set("ppoLoss", Napi::Function::New(env, PpoLossFn));
  exports.Set("lrAt", Napi::Function::New(env, LrAt));
  exports.Set("initProcessGroup", Napi::Function::New(env, InitProcessGroup));
  exports.Set("setNumThreads", Napi::Function::New(env, SetNumThreads));
  exports.Set("numThreads", Napi::Function::New(env, NumThreads));
  exports.Set("buildInfo", Napi::Function::New(env, BuildInfo));
  return exports;
}

}  // namespace
}  // namespace trn

static Napi::Object InitAll(Napi::Env env, Napi::Object exports) { return trn::Init(env, exports); }

NODE_API_MODULE(trainer, InitAll)
