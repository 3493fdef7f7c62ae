/**
 * safetensors headers and checkpoint layout (the bytes themselves are read and written natively).
 * Format: u64 little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets:[b, e]},
 * "__metadata__": {...}}, then the data; offsets are relative to the end of the header.
 * A checkpoint directory holds model.safetensors, or shards listed by model.safetensors.index.json.
 */
import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync } from 'node:fs'
import { join } from 'node:path'
import { fail } from '../runtime/errors.ts'

/** One tensor's place on disk (absolute byte offset), as the native loader takes it. */
export interface TensorLocation {
  name: string
  file: string
  dtype: string
  shape: number[]
  offset: number
  nbytes: number
}

const MAX_HEADER = 100 * 1024 * 1024

/** Parses one file's header. TRN_ERR_CHECKPOINT on anything malformed. */
export function readSafetensorsHeader(file: string): TensorLocation[] {
  return readSafetensorsFile(file).tensors
}

/** One file's tensors and its `__metadata__` (string → string). */
export function readSafetensorsFile(file: string): {
  tensors: TensorLocation[]
  metadata: Record<string, string>
} {
  let fd: number
  try {
    fd = openSync(file, 'r')
  } catch (e) {
    throw fail('TRN_ERR_CHECKPOINT', `cannot open ${file}`, { file }, e)
  }
  try {
    const lenBuf = Buffer.alloc(8)
    if (readSync(fd, lenBuf, 0, 8, 0) !== 8)
      throw fail('TRN_ERR_CHECKPOINT', `${file} is too short`, { file })
    const n = Number(lenBuf.readBigUInt64LE(0))
    if (n <= 0 || n > MAX_HEADER)
      throw fail('TRN_ERR_CHECKPOINT', `${file}: bad header length ${n}`, { file })
    const hdr = Buffer.alloc(n)
    if (readSync(fd, hdr, 0, n, 8) !== n)
      throw fail('TRN_ERR_CHECKPOINT', `${file}: truncated header`, { file })
    let json: Record<string, unknown>
    try {
      json = JSON.parse(hdr.toString('utf8')) as Record<string, unknown>
    } catch (e) {
      throw fail('TRN_ERR_CHECKPOINT', `${file}: header is not JSON`, { file }, e)
    }
    const out: TensorLocation[] = []
    const metadata: Record<string, string> = {}
    for (const [name, v] of Object.entries(json)) {
      if (name === '__metadata__') {
        for (const [k, x] of Object.entries((v ?? {}) as Record<string, unknown>)) {
          if (typeof x === 'string') metadata[k] = x
        }
        continue
      }
      const t = v as { dtype?: unknown; shape?: unknown; data_offsets?: unknown }
      const offs = t.data_offsets
      if (
        typeof t.dtype !== 'string' ||
        !Array.isArray(t.shape) ||
        !Array.isArray(offs) ||
        offs.length !== 2 ||
        typeof offs[0] !== 'number' ||
        typeof offs[1] !== 'number'
      ) {
        throw fail('TRN_ERR_CHECKPOINT', `${file}: malformed entry for ${name}`, { file, name })
      }
      out.push({
        name,
        file,
        dtype: t.dtype,
        shape: t.shape as number[],
        offset: 8 + n + offs[0],
        nbytes: offs[1] - offs[0],
      })
    }
    return { tensors: out, metadata }
  } finally {
    closeSync(fd)
  }
}

/** Every tensor of a checkpoint directory (index.json shards, model.safetensors, or all *.safetensors). */
export function checkpointTensors(dir: string): TensorLocation[] {
  const index = join(dir, 'model.safetensors.index.json')
  let files: string[]
  if (existsSync(index)) {
    let map: Record<string, string>
    try {
      map = (JSON.parse(readFileSync(index, 'utf8')) as { weight_map: Record<string, string> }).weight_map
    } catch (e) {
      throw fail('TRN_ERR_CHECKPOINT', `${index} is not a valid index`, { file: index }, e)
    }
    files = [...new Set(Object.values(map))]
  } else if (existsSync(join(dir, 'model.safetensors'))) {
    files = ['model.safetensors']
  } else {
    let names: string[] = []
    try {
      names = readdirSync(dir)
    } catch (e) {
      throw fail('TRN_ERR_CHECKPOINT', `cannot list ${dir}`, { dir }, e)
    }
    files = names.filter((f) => f.endsWith('.safetensors')).sort()
  }
  if (files.length === 0) throw fail('TRN_ERR_CHECKPOINT', `no *.safetensors in ${dir}`, { dir })
  return files.flatMap((f) => readSafetensorsHeader(join(dir, f)))
}
