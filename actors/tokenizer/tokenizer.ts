/**
 * A model's tokenizer, loaded from a model directory the way Hugging Face lays it out:
 * `tokenizer.json` (the fast-tokenizer spec), `tokenizer_config.json` (special tokens, chat template) and,
 * when present, `generation_config.json` (extra end-of-sequence ids). Shared by the proxy (templating,
 * decoding) and the rollout/engine side.
 *
 * Contract: `encode` never adds special tokens on its own (chat templates write them as text, and the
 * added-token splitter turns `<|im_start|>` etc. into their single ids); `decode` keeps special tokens
 * unless asked not to, so `decode(encode(s)) === s` for the texts a template renders.
 */
import { existsSync, readFileSync } from 'node:fs'
import { join } from 'node:path'
import { Tokenizer } from '@huggingface/tokenizers'
import { fail } from '../../runtime/errors.ts'
import { ByteLevelBpe, ByteLevelDecoder } from './byte-level-bpe.ts'

/** What a tokenizer_config.json may say about one special token (a string or an AddedToken object). */
type TokenSpec = string | { content: string } | null | undefined

function tokenText(t: TokenSpec): string | undefined {
  if (t == null) return undefined
  return typeof t === 'string' ? t : t.content
}

export interface TokenizerFiles {
  /** parsed tokenizer.json */
  tokenizer: Record<string, unknown>
  /** parsed tokenizer_config.json */
  config: Record<string, unknown>
  /** parsed generation_config.json, if any */
  generation?: Record<string, unknown>
}

export class ModelTokenizer {
  /** the chat template (Jinja source), or undefined when the model has none */
  readonly chatTemplate: string | undefined
  /** the end-of-sequence token text (e.g. `<|im_end|>` for Qwen chat models) */
  readonly eosToken: string
  /** ids that end a generation: the eos token plus generation_config.json's eos_token_id(s) */
  readonly eosTokenIds: readonly number[]
  readonly bosToken: string | undefined
  readonly padToken: string | undefined
  /** largest id + 1 (the vocabulary size the engine's logits cover, at least) */
  readonly vocabSize: number
  private readonly tok: Tokenizer
  /** the same ids as `tok.encode`, faster, for byte-level BPE layouts (byte-level-bpe.ts); else null */
  private readonly fast: ByteLevelBpe | null
  /** the same text as `tok.decode`, faster, for a ByteLevel decoder; else null */
  private readonly fastDecoder: ByteLevelDecoder | null
  private readonly completing = new Map<string, number[]>()

  constructor(files: TokenizerFiles) {
    try {
      this.tok = new Tokenizer(files.tokenizer, files.config)
    } catch (err) {
      throw fail('PRX_ERR_TOKENIZER', `tokenizer.json rejected: ${(err as Error).message}`, undefined, err)
    }
    this.fast = ByteLevelBpe.of(this.tok, files.tokenizer)
    this.fastDecoder = ByteLevelDecoder.of(this.tok, files.tokenizer)
    const cfg = files.config
    const tmpl = cfg.chat_template
    // Some configs hold a list of named templates; the one named "default" is the chat template.
    if (Array.isArray(tmpl)) {
      const named = tmpl as { name: string; template: string }[]
      this.chatTemplate = (named.find((t) => t.name === 'default') ?? named[0])?.template
    } else {
      this.chatTemplate = typeof tmpl === 'string' ? tmpl : undefined
    }
    const eos = tokenText(cfg.eos_token as TokenSpec)
    if (eos === undefined) throw fail('PRX_ERR_TOKENIZER', 'tokenizer_config.json has no eos_token')
    this.eosToken = eos
    this.bosToken = tokenText(cfg.bos_token as TokenSpec)
    this.padToken = tokenText(cfg.pad_token as TokenSpec)
    const eosId = this.tok.token_to_id(eos)
    if (eosId === undefined)
      throw fail('PRX_ERR_TOKENIZER', `eos_token ${JSON.stringify(eos)} is not in the vocabulary`)
    const ids = new Set<number>([eosId])
    const gen = files.generation?.eos_token_id
    for (const id of Array.isArray(gen) ? gen : gen === undefined ? [] : [gen]) {
      if (Number.isInteger(id)) ids.add(id as number)
    }
    this.eosTokenIds = [...ids]
    let max = 0
    for (const id of this.tok.get_vocab(true).values()) if (id > max) max = id
    this.vocabSize = max + 1
  }

  /** Load from a model directory holding tokenizer.json + tokenizer_config.json (+ generation_config.json). */
  static fromDir(dir: string): ModelTokenizer {
    const read = (name: string, required: boolean): Record<string, unknown> | undefined => {
      const p = join(dir, name)
      if (!existsSync(p)) {
        if (required) throw fail('PRX_ERR_TOKENIZER', `${p} not found`, { dir })
        return undefined
      }
      try {
        return JSON.parse(readFileSync(p, 'utf8')) as Record<string, unknown>
      } catch (err) {
        throw fail('PRX_ERR_TOKENIZER', `${p} is not valid JSON`, { dir }, err)
      }
    }
    return new ModelTokenizer({
      tokenizer: read('tokenizer.json', true)!,
      config: read('tokenizer_config.json', true)!,
      generation: read('generation_config.json', false),
    })
  }

  /** Token ids of `text`, no special tokens added (templates write their own). */
  encode(text: string): number[] {
    return this.fast ? this.fast.encode(text) : this.encodeReference(text)
  }

  /** `encode` by the library's own pipeline (what the fast path is tested against). */
  encodeReference(text: string): number[] {
    return this.tok.encode(text, { add_special_tokens: false }).ids
  }

  /** Whether `encode` takes the byte-level BPE fast path. */
  get fastEncode(): boolean {
    return this.fast !== null
  }

  /** Whether `decode` takes the byte-level fast path. */
  get fastDecode(): boolean {
    return this.fastDecoder !== null
  }

  /** Text of `ids`; special tokens are kept unless `skipSpecial`. */
  decode(ids: ArrayLike<number>, skipSpecial = false): string {
    if (ids.length === 0) return ''
    if (this.fastDecoder) return this.fastDecoder.decode(ids, skipSpecial)
    return this.decodeReference(ids, skipSpecial)
  }

  /** `decode` by the library's own pipeline (what the fast path is tested against). */
  decodeReference(ids: ArrayLike<number>, skipSpecial = false): string {
    if (ids.length === 0) return ''
    const arr = Array.isArray(ids) ? (ids as number[]) : Array.from(ids)
    return this.tok.decode(arr, { skip_special_tokens: skipSpecial, clean_up_tokenization_spaces: false })
  }

  tokenToId(token: string): number | undefined {
    return this.tok.token_to_id(token)
  }

  idToToken(id: number): string | undefined {
    return this.tok.id_to_token(id)
  }

  /**
   * Ids of the tokens whose text contains `stop`: sampling one of them completes the stop string within
   * that token. Engines that stop on token ids only (the embedded engine) get these for a request's `stop`
   * strings; a stop string spread over several tokens is not caught this way. Cached per string; the first
   * call decodes the vocabulary once.
   */
  idsCompleting(stop: string): number[] {
    let ids = this.completing.get(stop)
    if (!ids) {
      ids = []
      if (stop)
        for (let id = 0; id < this.vocabSize; id++)
          if (this.tok.id_to_token(id) !== undefined && this.decode([id]).includes(stop)) ids.push(id)
      this.completing.set(stop, ids)
    }
    return ids
  }

  isEos(id: number): boolean {
    return this.eosTokenIds.includes(id)
  }
}
