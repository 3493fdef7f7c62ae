/**
 * Builds the native trainer addon (native/build/trainer.node) with g++ directly: one object per
 * native/src/*.cc (at most 2 compile jobs), then one link. No node-gyp, no downloads.
 *
 * libtorch is found in this order:
 *   1. `LIBTORCH=/path/to/libtorch` (an unpacked libtorch zip or a torch package dir: include/ and lib/);
 *      set `LIBTORCH_CXX11_ABI=0|1` if it is not the default (1).
 *   2. a `python3` with torch (`torch.utils.cmake_prefix_path`, ABI from `torch._C._GLIBCXX_USE_CXX11_ABI`;
 *      CUDA builds also link torch_cuda/c10_cuda, and with nccl.h found (pip's nvidia/nccl next to torch)
 *      compile c10d's NCCL process group in). `PYTHON=...` picks the interpreter.
 *   3. Debian's `libtorch-dev` (1.13, CPU) with `libgloo-dev` for c10d Gloo, under `/usr`
 *      (`LIBTORCH_SYSTEM_PREFIX` overrides the prefix).
 *
 * With a CUDA libtorch and a CUDA toolkit (nvcc), native/src/*.cu (hand-written kernels) are compiled too and
 * TRN_HAVE_KERNELS is defined (see cudaToolkit()).
 *
 * Usage: `node --import tsx native/build.ts [--if-needed] [--force]` (`TRN_BUILD_JOBS=n` compiles n sources at
 * once; default 2, the CI machine's cores). With `--if-needed` it exits at once
 * when the addon is newer than every source (what bin/setup runs). Objects are rebuilt only when their
 * source, a header or the flags changed (native/build/stamp.json).
 */
import { execFileSync, spawn } from 'node:child_process'
import { createHash } from 'node:crypto'
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs'
import { createRequire } from 'node:module'
import { dirname, join, resolve } from 'node:path'
import { fileURLToPath } from 'node:url'

const here = dirname(fileURLToPath(import.meta.url))
const srcDir = join(here, 'src')
const outDir = join(here, 'build')
const objDir = join(outDir, 'obj')
const target = join(outDir, 'trainer.node')
const stampFile = join(outDir, 'stamp.json')

/** Where libtorch lives and how to compile/link against it. */
export interface Libtorch {
  source: 'LIBTORCH' | 'python' | 'debian'
  includes: string[]
  libDir: string | undefined
  defines: string[]
  libs: string[]
  ldflags: string[]
  /** nvcc for native/src/*.cu (CUDA libtorch with a CUDA toolkit found); undefined: no hand-written kernels. */
  nvcc?: string
}

const HOWTO =
  'no libtorch found. Get one of:\n' +
  '  - Debian/Ubuntu (CPU, what CI uses): apt-get install libtorch-dev libgloo-dev\n' +
  '  - a PyTorch install: pip install torch   (found through python3; PYTHON=... picks the interpreter)\n' +
  '  - an unpacked libtorch from pytorch.org: export LIBTORCH=/path/to/libtorch\n' +
  'then run: npm run build:native   (error TRN_ERR_LIBTORCH)'

function fromDir(root: string, source: Libtorch['source'], abi: string | undefined): Libtorch {
  const lib = join(root, 'lib')
  const includes = [join(root, 'include'), join(root, 'include', 'torch', 'csrc', 'api', 'include')]
  const defines = abi === undefined ? [] : [`-D_GLIBCXX_USE_CXX11_ABI=${abi}`]
  const libs = ['-ltorch', '-ltorch_cpu', '-lc10']
  const extraLd: string[] = []
  let nvcc: string | undefined
  if (existsSync(join(lib, 'libtorch_cuda.so'))) {
    libs.push('-ltorch_cuda', '-lc10_cuda')
    defines.push('-DTRN_WITH_CUDA')
    // c10d's NCCL process group (compiled into libtorch_cuda) needs nccl.h and the CUDA headers.
    const cuda = cudaIncludes(root)
    includes.push(...cuda.dirs)
    if (cuda.nccl) defines.push('-DUSE_C10D_NCCL')
    const tk = cudaToolkit()
    if (tk) {
      defines.push('-DTRN_HAVE_KERNELS')
      libs.push('-lcudart')
      extraLd.push(`-L${tk.lib}`, `-Wl,-rpath,${tk.lib}`)
      nvcc = tk.nvcc
    }
  }
  if (existsSync(join(root, 'include', 'gloo')) || existsSync('/usr/include/gloo'))
    defines.push('-DUSE_C10D_GLOO')
  return {
    source,
    includes,
    libDir: lib,
    defines,
    libs,
    ldflags: [`-L${lib}`, '-Wl,--no-as-needed', `-Wl,-rpath,${lib}`, ...extraLd],
    nvcc,
  }
}

/**
 * The CUDA toolkit for the hand-written kernels (native/src/*.cu): `NVCC`, else `CUDA_HOME`/bin/nvcc or
 * /usr/local/cuda/bin/nvcc, else nvcc on the PATH; its lib64 must hold libcudart. `TRN_KERNELS_BUILD=0`
 * skips them (the ATen compositions then serve CUDA too).
 */
function cudaToolkit(): { nvcc: string; lib: string } | undefined {
  if (process.env.TRN_KERNELS_BUILD === '0') return undefined
  const home = process.env.CUDA_HOME ?? '/usr/local/cuda'
  let nvcc =
    process.env.NVCC ?? (existsSync(join(home, 'bin', 'nvcc')) ? join(home, 'bin', 'nvcc') : undefined)
  if (!nvcc) {
    try {
      nvcc = execFileSync('sh', ['-c', 'command -v nvcc'], { encoding: 'utf8' }).trim() || undefined
    } catch {
      return undefined
    }
  }
  if (!nvcc) return undefined
  const root = dirname(dirname(resolve(nvcc)))
  const lib = ['lib64', 'lib', 'targets/x86_64-linux/lib', 'targets/sbsa-linux/lib']
    .map((d) => join(root, d))
    .find((d) => existsSync(join(d, 'libcudart.so')))
  return lib ? { nvcc, lib } : undefined
}

/** nvcc flags: sm_80 and sm_90 machine code plus compute_90 PTX, or `TRN_CUDA_ARCH=90` (one arch) alone. */
function nvccFlags(lt: Libtorch): string[] {
  const arch = process.env.TRN_CUDA_ARCH
  const gencode = arch
    ? [`-gencode=arch=compute_${arch},code=sm_${arch}`]
    : [
        '-gencode=arch=compute_80,code=sm_80',
        '-gencode=arch=compute_90,code=sm_90',
        '-gencode=arch=compute_90,code=compute_90',
      ]
  return [
    '-std=c++17',
    '-O3',
    '-Xcompiler',
    '-fPIC',
    ...gencode,
    ...lt.defines.filter((d) => d.startsWith('-D_GLIBCXX')),
  ]
}

/**
 * CUDA and NCCL header dirs for a CUDA libtorch: `CUDA_HOME`/include or /usr/local/cuda/include, and the
 * pip `nvidia/*` packages next to a torch package (their include/ dirs; NCCL's nccl.h is in nvidia/nccl).
 */
function cudaIncludes(torchRoot: string): { dirs: string[]; nccl: boolean } {
  const dirs: string[] = []
  const home = process.env.CUDA_HOME ?? '/usr/local/cuda'
  if (existsSync(join(home, 'include', 'cuda_runtime_api.h'))) dirs.push(join(home, 'include'))
  const nv = join(dirname(torchRoot), 'nvidia')
  if (existsSync(nv)) {
    for (const d of readdirSync(nv).sort()) {
      const inc = join(nv, d, 'include')
      if (existsSync(inc)) dirs.push(inc)
    }
  }
  const nccl = dirs.some((d) => existsSync(join(d, 'nccl.h')))
  return { dirs, nccl }
}

/** Finds libtorch (see the file header for the order); undefined when there is none. */
export function findLibtorch(): Libtorch | undefined {
  const env = process.env.LIBTORCH
  if (env) {
    if (!existsSync(join(env, 'include', 'torch'))) {
      throw new Error(`LIBTORCH=${env} has no include/torch; point it at an unpacked libtorch`)
    }
    return fromDir(env, 'LIBTORCH', process.env.LIBTORCH_CXX11_ABI ?? '1')
  }
  const py = process.env.PYTHON ?? 'python3'
  try {
    const out = execFileSync(
      py,
      [
        '-c',
        'import os, torch, torch.utils; print(os.path.dirname(os.path.dirname(os.path.dirname(torch.utils.cmake_prefix_path)))+"/torch"); print(int(torch._C._GLIBCXX_USE_CXX11_ABI))',
      ],
      { stdio: ['ignore', 'pipe', 'ignore'], encoding: 'utf8' },
    )
    const [root, abi] = out.trim().split('\n')
    if (root && existsSync(join(root, 'include', 'torch'))) return fromDir(root, 'python', abi)
  } catch {
    // no python3 or no torch in it: try Debian's
  }
  const prefix = process.env.LIBTORCH_SYSTEM_PREFIX ?? '/usr'
  const sysLib = systemLibDir(prefix)
  if (existsSync(join(prefix, 'include/torch/csrc/api/include')) && sysLib) {
    return {
      source: 'debian',
      includes:
        prefix === '/usr'
          ? [join(prefix, 'include/torch/csrc/api/include')]
          : [join(prefix, 'include'), join(prefix, 'include/torch/csrc/api/include')],
      libDir: sysLib,
      defines: existsSync(join(prefix, 'include/gloo')) ? ['-DUSE_C10D_GLOO'] : [],
      libs: ['-ltorch', '-ltorch_cpu', '-lc10'],
      // /usr is searched by default; another prefix needs its include and lib dirs named
      ldflags: prefix === '/usr' ? [] : [`-L${sysLib}`, `-Wl,-rpath,${sysLib}`],
    }
  }
  return undefined
}

function systemLibDir(prefix: string): string | undefined {
  return ['lib/x86_64-linux-gnu', 'lib/aarch64-linux-gnu', 'lib']
    .map((d) => join(prefix, d))
    .find((d) => existsSync(join(d, 'libtorch_cpu.so')))
}

function nodeIncludes(): string[] {
  const nodeInc = join(dirname(dirname(process.execPath)), 'include', 'node')
  const require = createRequire(import.meta.url)
  const napiDir = resolve(dirname(require.resolve('node-addon-api/package.json')))
  return [nodeInc, napiDir]
}

function sources(): { cc: string[]; cu: string[]; headers: string[] } {
  const files = readdirSync(srcDir).sort()
  return {
    cc: files.filter((f) => f.endsWith('.cc')).map((f) => join(srcDir, f)),
    cu: files.filter((f) => f.endsWith('.cu')).map((f) => join(srcDir, f)),
    headers: files.filter((f) => f.endsWith('.h')).map((f) => join(srcDir, f)),
  }
}

function hashOf(parts: string[]): string {
  const h = createHash('sha256')
  for (const p of parts) h.update(p).update('\0')
  return h.digest('hex')
}

function upToDate(): boolean {
  if (!existsSync(target)) return false
  const t = statSync(target).mtimeMs
  const { cc, cu, headers } = sources()
  return [...cc, ...cu, ...headers, fileURLToPath(import.meta.url)].every((f) => statSync(f).mtimeMs <= t)
}

function run(cmd: string, args: string[]): Promise<void> {
  return new Promise((ok, bad) => {
    const p = spawn(cmd, args, { stdio: 'inherit' })
    p.on('error', bad)
    p.on('exit', (code) => (code === 0 ? ok() : bad(new Error(`${cmd} exited with ${code}`))))
  })
}

async function pool<T>(items: T[], jobs: number, fn: (x: T) => Promise<void>): Promise<void> {
  let next = 0
  const worker = async () => {
    while (next < items.length) await fn(items[next++]!)
  }
  await Promise.all(Array.from({ length: Math.min(jobs, items.length) }, worker))
}

export async function build(opts: { force?: boolean } = {}): Promise<string> {
  const lt = findLibtorch()
  if (!lt) {
    const err = new Error(HOWTO) as Error & { code: string }
    err.code = 'TRN_ERR_LIBTORCH'
    throw err
  }
  mkdirSync(objDir, { recursive: true })
  const cxxflags = [
    '-std=c++17',
    '-O2',
    '-fPIC',
    '-fexceptions',
    '-Wall',
    '-Wno-unused-parameter',
    '-DNAPI_VERSION=8',
    '-DNAPI_CPP_EXCEPTIONS',
    '-DNODE_ADDON_API_DISABLE_DEPRECATED',
    ...lt.defines,
    ...nodeIncludes().map((d) => `-I${d}`),
    ...lt.includes.map((d) => `-isystem${d}`),
  ]
  const { cc, cu, headers } = sources()
  const headerHash = hashOf(headers.map((h) => readFileSync(h, 'utf8')))
  const flagHash = hashOf(cxxflags)
  const cuFlags = lt.nvcc ? nvccFlags(lt) : []
  const cuFlagHash = hashOf([lt.nvcc ?? '', ...cuFlags])
  const stamp: Record<string, string> = existsSync(stampFile)
    ? JSON.parse(readFileSync(stampFile, 'utf8'))
    : {}
  const objs: string[] = []
  const todo: { src: string; obj: string; key: string }[] = []
  const all = lt.nvcc ? [...cc, ...cu] : cc
  for (const src of all) {
    const isCu = src.endsWith('.cu')
    const obj = join(objDir, src.slice(srcDir.length + 1).replace(/\.(cc|cu)$/, isCu ? '.cu.o' : '.o'))
    objs.push(obj)
    const key = hashOf([isCu ? cuFlagHash : flagHash, headerHash, readFileSync(src, 'utf8')])
    if (opts.force || stamp[obj] !== key || !existsSync(obj)) todo.push({ src, obj, key })
  }
  process.stderr.write(
    `build:native: libtorch from ${lt.source}${lt.nvcc ? ` (CUDA kernels by ${lt.nvcc})` : ''}; compiling ${todo.length}/${all.length} sources\n`,
  )
  const jobs = Math.max(1, Number(process.env.TRN_BUILD_JOBS ?? 2) || 2)
  await pool(todo, jobs, async ({ src, obj, key }) => {
    if (src.endsWith('.cu')) await run(lt.nvcc!, [...cuFlags, '-c', src, '-o', obj])
    else await run('g++', [...cxxflags, '-c', src, '-o', obj])
    stamp[obj] = key
    writeFileSync(stampFile, JSON.stringify(stamp, null, 2))
  })
  await run('g++', ['-shared', '-o', target, ...objs, ...lt.ldflags, ...lt.libs, '-lpthread'])
  process.stderr.write(`build:native: wrote ${target}\n`)
  return target
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const args = process.argv.slice(2)
  if (args.includes('--if-needed') && upToDate()) process.exit(0)
  build({ force: args.includes('--force') }).catch((e: Error & { code?: string }) => {
    process.stderr.write(`build:native: ${e.message}\n`)
    process.exit(1)
  })
}
