/** Whether the native addon can run on CUDA here; the GPU benchmarks skip (exit 0) when it cannot. */
import { buildInfo, cudaDeviceCount } from '../../native/index.ts'

/** Why CUDA is unusable (undefined when the addon has CUDA and sees at least `need` devices). */
export function noCudaReason(need = 1): string | undefined {
  const info = buildInfo()
  if (!info.cuda) return `the native addon was built without CUDA (libtorch ${info.torchVersion})`
  const n = cudaDeviceCount()
  if (n === 0) return `the addon has CUDA (libtorch ${info.torchVersion}) but sees no CUDA device`
  if (n < need) return `${need} GPUs asked for, ${n} visible`
  return undefined
}
