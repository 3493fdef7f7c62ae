#include "profile.h"

#include <cstdlib>
#include <set>

#if __has_include(<torch/version.h>)
#include <torch/version.h>
#endif
#if defined(TORCH_VERSION_MAJOR) && TORCH_VERSION_MAJOR >= 2
#include <torch/csrc/autograd/profiler_kineto.h>
#define TRN_HAVE_KINETO 1
#endif

namespace trn {

#ifdef TRN_HAVE_KINETO
namespace {
namespace prof = torch::profiler::impl;
prof::ProfilerConfig traceConfig() { return prof::ProfilerConfig(prof::ProfilerState::KINETO, false, false, false, false, false); }
std::set<prof::ActivityType> traceActivities() { return {prof::ActivityType::CPU, prof::ActivityType::CUDA}; }
}  // namespace
#endif

TraceScope::TraceScope() {
  const char* p = std::getenv("TRN_PROFILE_TRACE");
  if (!p || !*p) return;
  path_ = p;
#ifdef TRN_HAVE_KINETO
  torch::autograd::profiler::prepareProfiler(traceConfig(), traceActivities());
  torch::autograd::profiler::enableProfiler(traceConfig(), traceActivities());
  on_ = true;
#endif
}

TraceScope::~TraceScope() {
#ifdef TRN_HAVE_KINETO
  if (!on_) return;
  try {
    auto result = torch::autograd::profiler::disableProfiler();
    if (result) result->save(path_);
  } catch (...) {
    // a diagnostics aid must never fail the step
  }
#endif
}

}  // namespace trn
