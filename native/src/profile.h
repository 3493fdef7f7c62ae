// Optional kernel trace of one call (diagnostics): with TRN_PROFILE_TRACE=<path> set, ppoStep runs under
// libtorch's Kineto profiler (CPU ops + CUDA kernels) and writes a Chrome trace to <path> (libtorch >= 2.0;
// a no-op elsewhere). Traces are large and slow the step down: for finding where time goes, not for timing.
#pragma once

#include <memory>
#include <string>

namespace trn {

class TraceScope {
 public:
  TraceScope();  // starts when TRN_PROFILE_TRACE is set
  ~TraceScope();  // writes the trace
  TraceScope(const TraceScope&) = delete;
  TraceScope& operator=(const TraceScope&) = delete;

 private:
  std::string path_;
  bool on_ = false;
};

}  // namespace trn
