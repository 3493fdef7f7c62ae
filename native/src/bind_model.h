// The NativeModel class (one model handle: parameters, optimizer state, calls serialised) and the
// createModel()/loadModel() functions that make one.
#pragma once

#include <napi.h>

namespace trn::js {

Napi::Function modelClass(Napi::Env env);
/** createModel(config, {seed, dtype, processGroup}) → Promise<NativeModel> */
Napi::Value CreateModel(const Napi::CallbackInfo& info);
/** loadModel(config, tensors: TensorLocation[], {dtype, processGroup}) → Promise<NativeModel> */
Napi::Value LoadModel(const Napi::CallbackInfo& info);

}  // namespace trn::js
