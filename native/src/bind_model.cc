#include "bind_model.h"

#include <ATen/core/grad_mode.h>
#include <c10/core/DeviceGuard.h>

#include "bind_group.h"
#include "generate.h"
#include "js_util.h"
#include "model.h"

namespace trn::js {
namespace {

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
                        InstanceMethod("publishParameters", &ModelWrap::PublishParameters),
                        InstanceMethod("receiveParameters", &ModelWrap::ReceiveParameters),
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
  // Runs `run` on a libuv thread with the model's device current, then settles with `res`; the model (and
  // `group`, an update group claimed with claim()) is released when the call settles.
  Napi::Value queue(const Napi::CallbackInfo& info, std::function<void()> run, std::function<Napi::Value(Napi::Env)> res,
                    std::shared_ptr<Comm> group = nullptr) {
    auto onDevice = [dev = model_->device(), run = std::move(run)] {
      c10::DeviceGuard g(dev);
      run();
    };
    auto done = release();
    auto w = new PromiseWorker(info.Env(), std::move(onDevice), std::move(res), [done, group] {
      done();
      if (group) group->busy = false;
    });
    w->keep(info.This().As<Napi::Object>());
    w->Queue();
    return w->promise();
  }

  // After begin(): claims an update group for the call too (TRN_ERR_BUSY, releasing the model, when it
  // runs another collective). A null group claims nothing.
  void claim(const std::shared_ptr<Comm>& g) {
    if (!g) return;
    bool expected = false;
    if (!g->busy.compare_exchange_strong(expected, true)) {
      release()();
      TRN_FAIL("TRN_ERR_BUSY", "the update group is running another collective call");
    }
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
      o.Set("computeDtype", dtypeName(st.computeDtype()));
      o.Set("device", st.device().str());
      o.Set("activationCheckpointing", model_->run.checkpointing);
      o.Set("checkpointLayers", static_cast<double>(model_->run.checkpointLayers));
      o.Set("tpRank", model_->tpRank());
      o.Set("tpSize", model_->tpSize());
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
            if (m->streams()) {  // sharded: a layer at a time, as the training step does
              auto w = m->beginStreamed();
              auto h = m->hidden(w, batch->ids, batch->positions(), m->attention(*batch));
              *out = m->score(w, h, *batch, temperature);
              m->endStreamed(/*reduce=*/false);
            } else {
              const auto& full = m->store.materialize(false);
              auto w = m->weights(full);
              auto h = m->hidden(w, batch->ids, batch->positions(), m->attention(*batch));
              *out = m->score(w, h, *batch, temperature);
              m->store.release();
            }
            out->logprobs = out->logprobs.to(at::kCPU);
            out->entropy = out->entropy.to(at::kCPU);
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
            if (st->peakUnits > 0) o.Set("gatheredUnitsPeak", st->peakUnits);
            if (!st->timings.empty()) {
              auto t = Napi::Object::New(env);
              for (auto& [phase, ms] : st->timings) t.Set(phase, ms);
              o.Set("timingsMs", t);
            }
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
            // one parameter at a time (collective), so no rank ever holds the whole model on its device; the
            // writer keeps host copies
            std::vector<at::Tensor> full;
            std::vector<std::string> names;
            const bool writer = m->isWriter();
            for (size_t i = 0; i < m->store.specs().size(); i++) {
              auto t = m->fullParameter(static_cast<int>(i), m->store.gatherMaster(static_cast<int>(i)));
              if (!writer) continue;
              full.push_back(t.to(at::kCPU));
              names.push_back(m->store.specs()[i].name);
            }
            if (writer) *files = writeSafetensors(dir, names, full, dtype, maxShard);
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
            for (size_t i = 0; i < m->store.specs().size(); i++) {  // one at a time, as save()
              auto t = m->fullParameter(static_cast<int>(i), m->store.gatherMaster(static_cast<int>(i)));
              vals->push_back(t.detach().to(at::kCPU, m->store.dtype(), false, true));
            }
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
      auto locs = readLocations(info[0]);
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

  // Names → parameter indices (all, in order, when absent); TRN_ERR_ARG on an unknown or repeated name.
  std::vector<int> paramIndices(const Napi::Object& o) {
    std::vector<int> idx;
    if (!has(o, "names")) {
      for (size_t i = 0; i < model_->store.specs().size(); i++) idx.push_back(static_cast<int>(i));
      return idx;
    }
    auto v = o.Get("names");
    TRN_CHECK(v.IsArray(), "TRN_ERR_ARG", "names must be an array of parameter names");
    auto a = v.As<Napi::Array>();
    std::vector<bool> seen(model_->store.specs().size(), false);
    for (uint32_t k = 0; k < a.Length(); k++) {
      TRN_CHECK(a.Get(k).IsString(), "TRN_ERR_ARG", "names must be strings");
      auto name = a.Get(k).As<Napi::String>().Utf8Value();
      int i = model_->store.indexOf(name);
      TRN_CHECK(i >= 0, "TRN_ERR_ARG", "no parameter named " + name);
      TRN_CHECK(!seen[i], "TRN_ERR_ARG", "parameter " + name + " named twice");
      seen[i] = true;
      idx.push_back(i);
    }
    return idx;
  }

  // What publishParameters/receiveParameters both read: which parameters, their wire dtype, the root.
  struct Transfer {
    std::vector<int> idx;
    at::ScalarType dtype;
    int root;
  };
  Transfer readTransfer(const Napi::Object& o) {
    return {paramIndices(o), dtypeFromName(str(o, "dtype", "bfloat16")), static_cast<int>(integer(o, "root", 0))};
  }

  // publishParameters({group?, names?, dtype, root}): every rank of the model's own group calls it (the
  // full parameters are gathered collectively); the rank that passes `group` — the `root` of that group —
  // broadcasts each named parameter, one tensor at a time in the order given, in `dtype`.
  Napi::Value PublishParameters(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      TRN_CHECK(model_, "TRN_ERR_DISPOSED", "the model was disposed");
      auto o = obj(info[0], "options");
      const auto t = readTransfer(o);
      const auto& idx = t.idx;
      const auto dtype = t.dtype;
      const int root = t.root;
      std::shared_ptr<Comm> g = has(o, "group") ? groupFrom(info.Env(), o.Get("group")) : nullptr;
      if (g)
        TRN_CHECK(g->rank() == root, "TRN_ERR_ARG",
                  "the publishing rank must be the root (" + std::to_string(root) + ") of the update group, it is rank " +
                      std::to_string(g->rank()));
      auto m = begin();
      claim(g);
      return queue(
          info,
          [m, g, idx, dtype, root] {
            at::NoGradGuard ng;
            for (int i : idx) {  // gathered one at a time over the data-parallel group, then over tp
              auto t = m->fullParameter(i, m->store.gatherMaster(i)).to(dtype).contiguous();
              if (g) g->broadcast(t, root);
            }
          },
          nullptr, g);
    });
  }

  // receiveParameters({group, names?, dtype, root}): the other side of publishParameters, for a model of
  // one rank: receives each named parameter from `root` (same names, order and dtype) and keeps it.
  Napi::Value ReceiveParameters(const Napi::CallbackInfo& info) {
    return guard(info.Env(), [&]() -> Napi::Value {
      TRN_CHECK(model_, "TRN_ERR_DISPOSED", "the model was disposed");
      TRN_CHECK(model_->store.worldSize() == 1 && model_->tpSize() == 1, "TRN_ERR_ARG",
                "receiveParameters needs a model of one rank");
      auto o = obj(info[0], "options");
      const auto t = readTransfer(o);
      const auto& idx = t.idx;
      const auto dtype = t.dtype;
      const int root = t.root;
      TRN_CHECK(has(o, "group"), "TRN_ERR_ARG", "receiveParameters needs the update group");
      auto g = groupFrom(info.Env(), o.Get("group"));
      TRN_CHECK(g->rank() != root, "TRN_ERR_ARG", "the receiving rank cannot be the root of the update group");
      auto m = begin();
      claim(g);
      return queue(
          info,
          [m, g, idx, dtype, root] {
            at::NoGradGuard ng;
            // Received in full first: a failed transfer leaves the weights as they were.
            std::vector<at::Tensor> got;
            for (int i : idx) {
              auto t = at::empty(m->store.specs()[i].shape, at::TensorOptions().dtype(dtype).device(g->device()));
              g->broadcast(t, root);
              got.push_back(t);
            }
            for (size_t k = 0; k < idx.size(); k++) m->store.setFull(idx[k], got[k]);
          },
          nullptr, g);
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
      c10::DeviceGuard g(model_->device());
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
    TRN_CHECK(model_->tpSize() == 1, "TRN_ERR_ARG", "generate runs on models without tensor parallelism");
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

Napi::Value makeModel(Napi::Env env, std::shared_ptr<Model> m) {
  auto* data = env.GetInstanceData<AddonData>();
  auto ext = Napi::External<std::shared_ptr<Model>>::New(env, new std::shared_ptr<Model>(std::move(m)),
                                                         [](Napi::Env, std::shared_ptr<Model>* p) { delete p; });
  return data->modelCtor.New({ext});
}

}  // namespace

Napi::Function modelClass(Napi::Env env) { return ModelWrap::Init(env); }

// {device, computeDtype, activationCheckpointing, logitsChunk} of createModel/loadModel's options.
RunOptions readRun(const Napi::Object& opts, at::ScalarType dtype) {
  RunOptions r;
  r.device = deviceFromName(str(opts, "device", "cpu"));
  r.compute = has(opts, "computeDtype") ? dtypeFromName(str(opts, "computeDtype", "float32")) : dtype;
  r.checkpointing = flag(opts, "activationCheckpointing", false);
  r.checkpointLayers = integer(opts, "checkpointLayers", -1);
  r.logitsChunk = integer(opts, "logitsChunk", 0);
  r.keepSoftmax = flag(opts, "keepSoftmax", false);
  if (has(opts, "tensorParallel")) {
    auto g = groupFrom(opts.Env(), opts.Get("tensorParallel"));
    if (g->worldSize() > 1) r.tp = g;
  }
  return r;
}

// createModel(config, {seed, dtype, processGroup, device, computeDtype, activationCheckpointing, logitsChunk})
Napi::Value CreateModel(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    auto cfg = readConfig(obj(info[0], "config"));
    auto opts = obj(info[1], "options");
    auto seed = static_cast<uint64_t>(integer(opts, "seed", 0));
    auto dtype = dtypeFromName(str(opts, "dtype", "float32"));
    auto run = readRun(opts, dtype);
    auto comm = groupOf(info.Env(), opts);
    auto holder = std::make_shared<std::shared_ptr<Model>>();
    auto w = new PromiseWorker(
        info.Env(),
        [=] {
          c10::DeviceGuard g(run.device);
          auto m = std::make_shared<Model>(cfg, dtype, comm, run);
          m->initRandom(seed);
          *holder = m;
        },
        [=](Napi::Env env) { return makeModel(env, *holder); }, nullptr);
    w->Queue();
    return w->promise();
  });
}

// loadModel(config, tensors: TensorLocation[], {dtype, processGroup, device, computeDtype, activationCheckpointing, logitsChunk})
Napi::Value LoadModel(const Napi::CallbackInfo& info) {
  return guard(info.Env(), [&]() -> Napi::Value {
    auto cfg = readConfig(obj(info[0], "config"));
    auto locs = readLocations(info[1]);
    auto opts = obj(info[2], "options");
    auto dtype = dtypeFromName(str(opts, "dtype", "float32"));
    auto run = readRun(opts, dtype);
    auto comm = groupOf(info.Env(), opts);
    auto holder = std::make_shared<std::shared_ptr<Model>>();
    auto w = new PromiseWorker(
        info.Env(),
        [=] {
          c10::DeviceGuard g(run.device);
          auto m = std::make_shared<Model>(cfg, dtype, comm, run);
          std::vector<bool> seen(m->store.specs().size(), false);
          for (auto& l : locs) {
            int i = m->store.indexOf(l.name);
            if (i < 0) {
              if (l.name == "lm_head.weight" && cfg.tieWordEmbeddings) continue;  // tied: embed is the head
              if (l.name.find("rotary_emb.inv_freq") != std::string::npos) continue;
              TRN_FAIL("TRN_ERR_CHECKPOINT", "unexpected tensor " + l.name + " in " + l.file + " (not a Qwen3 parameter)");
            }
            const auto& s = m->store.specs()[i];
            TRN_CHECK(l.shape == s.fullShape, "TRN_ERR_CHECKPOINT",
                      l.name + " has shape " + shapeStr(l.shape) + ", the config needs " + shapeStr(s.fullShape));
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

}  // namespace trn::js
