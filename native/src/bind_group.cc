#include "bind_group.h"

#include "js_util.h"

namespace trn::js {
namespace {

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
    o.Set("backend", comm ? comm->backend() : std::string("gloo"));
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

}  // namespace

Napi::Function groupClass(Napi::Env env) { return GroupWrap::Init(env); }

std::shared_ptr<Comm> groupFrom(Napi::Env env, const Napi::Value& v) {
  auto* data = env.GetInstanceData<AddonData>();
  TRN_CHECK(v.IsObject() && v.As<Napi::Object>().InstanceOf(data->groupCtor.Value()), "TRN_ERR_ARG",
            "group must come from initProcessGroup()");
  auto comm = GroupWrap::Unwrap(v.As<Napi::Object>())->comm;
  TRN_CHECK(comm, "TRN_ERR_ARG", "process group is not initialised");
  return comm;
}

std::shared_ptr<Comm> groupOf(Napi::Env env, const Napi::Object& opts) {
  if (!has(opts, "processGroup")) return nullptr;
  auto v = opts.Get("processGroup");
  auto* data = env.GetInstanceData<AddonData>();
  TRN_CHECK(v.IsObject() && v.As<Napi::Object>().InstanceOf(data->groupCtor.Value()), "TRN_ERR_ARG",
            "processGroup must come from initProcessGroup()");
  auto comm = GroupWrap::Unwrap(v.As<Napi::Object>())->comm;
  return comm && comm->worldSize() > 1 ? comm : nullptr;
}

// initProcessGroup({rank, worldSize, storePath | host+port, glooHostname, timeoutMs, backend, device,
// storePrefix, eagerConnect})
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
    c.backend = str(o, "backend", "gloo");
    c.device = str(o, "device", "");
    c.storePrefix = str(o, "storePrefix", "");
    if (o.Has("eagerConnect") && !o.Get("eagerConnect").IsUndefined()) {
      TRN_CHECK(o.Get("eagerConnect").IsBoolean(), "TRN_ERR_ARG", "eagerConnect must be a boolean");
      c.eagerConnect = o.Get("eagerConnect").As<Napi::Boolean>().Value();
    }
    TRN_CHECK(c.worldSize >= 1, "TRN_ERR_ARG", "worldSize must be >= 1");
    TRN_CHECK(c.rank >= 0 && c.rank < c.worldSize, "TRN_ERR_ARG", "rank must be in [0, worldSize)");
    auto holder = std::make_shared<std::shared_ptr<Comm>>();
    auto w = new PromiseWorker(
        info.Env(), [=] { *holder = createComm(c); },
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

}  // namespace trn::js
