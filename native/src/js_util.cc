#include "js_util.h"

#include <cmath>
#include <cstring>

namespace trn::js {

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
  auto t = t0.detach().to(at::kCPU).contiguous();
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
  c.entropyCoef = num(o, "entropyCoef", 0);
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

std::vector<TensorLocation> readLocations(const Napi::Value& v) {
  TRN_CHECK(v.IsArray(), "TRN_ERR_ARG", "tensors must be an array");
  auto arr = v.As<Napi::Array>();
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
  return locs;
}

}  // namespace trn::js
