import { spawnSync } from 'node:child_process'
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { expect } from 'chai'
import { findLibtorch } from '../../native/build.ts'

const buildScript = new URL('../../native/build.ts', import.meta.url).pathname

describe('libtorch discovery', () => {
  let dir: string
  const keys = ['LIBTORCH', 'LIBTORCH_CXX11_ABI', 'PYTHON', 'LIBTORCH_SYSTEM_PREFIX'] as const
  const saved = Object.fromEntries(keys.map((k) => [k, process.env[k]]))
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'trn-build-'))
  })
  afterEach(() => {
    for (const k of keys) {
      if (saved[k] === undefined) delete process.env[k]
      else process.env[k] = saved[k]
    }
    rmSync(dir, { recursive: true, force: true })
  })

  it('should take LIBTORCH first, with its ABI flag, rpath and CUDA libraries when present', () => {
    mkdirSync(join(dir, 'include', 'torch'), { recursive: true })
    mkdirSync(join(dir, 'lib'))
    writeFileSync(join(dir, 'lib', 'libtorch_cuda.so'), '')
    process.env.LIBTORCH = dir
    process.env.LIBTORCH_CXX11_ABI = '0'
    const lt = findLibtorch()!
    expect(lt.source).to.equal('LIBTORCH')
    expect(lt.defines).to.include('-D_GLIBCXX_USE_CXX11_ABI=0')
    expect(lt.defines).to.include('-DTRN_WITH_CUDA')
    expect(lt.libs).to.include.members(['-ltorch', '-ltorch_cpu', '-lc10', '-ltorch_cuda', '-lc10_cuda'])
    expect(lt.ldflags).to.include(`-Wl,-rpath,${join(dir, 'lib')}`)
    expect(lt.includes).to.include(join(dir, 'include', 'torch', 'csrc', 'api', 'include'))
  })

  it('should refuse a LIBTORCH that is not a libtorch', () => {
    process.env.LIBTORCH = dir
    expect(() => findLibtorch()).to.throw(/include\/torch/)
  })

  it('should fall back to a system libtorch when there is no LIBTORCH and no python torch', () => {
    // a Debian-like prefix: headers, gloo headers, libtorch_cpu.so under lib/<triplet>
    const prefix = join(dir, 'usr')
    mkdirSync(join(prefix, 'include/torch/csrc/api/include'), { recursive: true })
    mkdirSync(join(prefix, 'include/gloo'))
    mkdirSync(join(prefix, 'lib/x86_64-linux-gnu'), { recursive: true })
    writeFileSync(join(prefix, 'lib/x86_64-linux-gnu/libtorch_cpu.so'), '')
    delete process.env.LIBTORCH
    process.env.PYTHON = join(dir, 'no-python')
    process.env.LIBTORCH_SYSTEM_PREFIX = prefix
    const lt = findLibtorch()
    expect(lt?.source).to.equal('debian')
    expect(lt?.defines).to.include('-DUSE_C10D_GLOO')
    expect(lt?.ldflags).to.include(`-L${join(prefix, 'lib/x86_64-linux-gnu')}`)
    expect(lt?.includes).to.include(join(prefix, 'include/torch/csrc/api/include'))
  })

  it('should exit non-zero saying how to get libtorch when there is none', () => {
    const env: NodeJS.ProcessEnv = {
      ...process.env,
      PYTHON: join(dir, 'no-python'),
      LIBTORCH_SYSTEM_PREFIX: join(dir, 'usr'),
    }
    delete env.LIBTORCH
    const r = spawnSync(process.execPath, ['--import', 'tsx', buildScript], { env, encoding: 'utf8' })
    expect(r.status).to.not.equal(0)
    expect(r.stderr).to.match(/apt-get install libtorch-dev libgloo-dev/)
    expect(r.stderr).to.match(/pip install torch/)
    expect(r.stderr).to.match(/LIBTORCH/)
  })
})
