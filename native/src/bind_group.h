// The NativeProcessGroup class (a c10d Gloo or NCCL group) and initProcessGroup().
#pragma once

#include <napi.h>

#include <memory>

#include "dist.h"

namespace trn::js {

Napi::Function groupClass(Napi::Env env);
/** The group in opts.processGroup (nullptr when absent or of one rank); TRN_ERR_ARG if not a group. */
std::shared_ptr<Comm> groupOf(Napi::Env env, const Napi::Object& opts);
/** Any group (world size 1 included); TRN_ERR_ARG if `v` is not one. */
std::shared_ptr<Comm> groupFrom(Napi::Env env, const Napi::Value& v);
/** initProcessGroup({rank, worldSize, storePath | host+port, glooHostname, timeoutMs}) → Promise<group> */
Napi::Value InitProcessGroup(const Napi::CallbackInfo& info);

}  // namespace trn::js
