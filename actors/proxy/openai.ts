/**
 * The OpenAI request shapes the proxy accepts, as TypeScript types and as the JSON schemas fastify
 * validates bodies with (unknown top-level fields are accepted and ignored, as OpenAI-compatible servers do;
 * known fields must have the right types).
 */
import type { ChatTool } from '../tokenizer/chat-template.ts'

export type ContentPart = { type: string; text?: string }

export interface ChatRequestMessage {
  role: 'system' | 'developer' | 'user' | 'assistant' | 'tool'
  content?: string | ContentPart[] | null
  name?: string
  tool_calls?: { id?: string; type?: string; function: { name: string; arguments: string } }[]
  tool_call_id?: string
  reasoning_content?: string | null
}

export interface ChatRequest {
  model?: string
  messages: ChatRequestMessage[]
  tools?: ChatTool[]
  tool_choice?: 'none' | 'auto' | 'required' | { type: 'function'; function: { name: string } }
  temperature?: number
  top_p?: number
  top_k?: number
  max_tokens?: number | null
  max_completion_tokens?: number | null
  stop?: string | string[] | null
  stream?: boolean
  stream_options?: { include_usage?: boolean } | null
  n?: number
  seed?: number
  logprobs?: boolean
  chat_template_kwargs?: Record<string, unknown>
}

export interface CompletionRequest {
  model?: string
  prompt: string | number[]
  temperature?: number
  top_p?: number
  top_k?: number
  max_tokens?: number | null
  stop?: string | string[] | null
  stream?: boolean
  n?: number
  seed?: number
  logprobs?: number | null
  echo?: boolean
}

const sampling = {
  temperature: { type: 'number', minimum: 0, maximum: 2 },
  top_p: { type: 'number', exclusiveMinimum: 0, maximum: 1 },
  top_k: { type: 'integer' },
  max_tokens: { type: ['integer', 'null'], minimum: 1 },
  stop: {
    anyOf: [{ type: 'string' }, { type: 'array', items: { type: 'string' }, maxItems: 16 }, { type: 'null' }],
  },
  stream: { type: 'boolean' },
  n: { type: 'integer', minimum: 1 },
  seed: { type: 'integer' },
} as const

export const chatSchema = {
  type: 'object',
  required: ['messages'],
  properties: {
    model: { type: 'string' },
    messages: {
      type: 'array',
      minItems: 1,
      items: {
        type: 'object',
        required: ['role'],
        properties: {
          role: { enum: ['system', 'developer', 'user', 'assistant', 'tool'] },
          content: {
            anyOf: [
              { type: 'string' },
              { type: 'null' },
              {
                type: 'array',
                items: {
                  type: 'object',
                  required: ['type'],
                  properties: { type: { type: 'string' }, text: { type: 'string' } },
                },
              },
            ],
          },
          name: { type: 'string' },
          tool_call_id: { type: 'string' },
          reasoning_content: { type: ['string', 'null'] },
          tool_calls: {
            type: 'array',
            items: {
              type: 'object',
              required: ['function'],
              properties: {
                id: { type: 'string' },
                type: { type: 'string' },
                function: {
                  type: 'object',
                  required: ['name', 'arguments'],
                  properties: { name: { type: 'string' }, arguments: { type: 'string' } },
                },
              },
            },
          },
        },
      },
    },
    tools: {
      type: 'array',
      items: {
        type: 'object',
        required: ['type', 'function'],
        properties: {
          type: { const: 'function' },
          function: { type: 'object', required: ['name'], properties: { name: { type: 'string' } } },
        },
      },
    },
    tool_choice: {
      anyOf: [
        { enum: ['none', 'auto', 'required'] },
        {
          type: 'object',
          required: ['type', 'function'],
          properties: { function: { type: 'object', required: ['name'] } },
        },
      ],
    },
    ...sampling,
    max_completion_tokens: { type: ['integer', 'null'], minimum: 1 },
    stream_options: { type: ['object', 'null'], properties: { include_usage: { type: 'boolean' } } },
    logprobs: { type: ['boolean', 'null'] },
    chat_template_kwargs: { type: 'object' },
  },
} as const

export const completionSchema = {
  type: 'object',
  required: ['prompt'],
  properties: {
    model: { type: 'string' },
    prompt: {
      anyOf: [{ type: 'string' }, { type: 'array', minItems: 1, items: { type: 'integer', minimum: 0 } }],
    },
    ...sampling,
    logprobs: { type: ['integer', 'null'], minimum: 0 },
    echo: { type: 'boolean' },
  },
} as const

export const setRewardSchema = {
  type: 'object',
  required: ['reward'],
  properties: {
    interaction_id: { type: ['string', 'null'] },
    reward: { type: 'number' },
  },
} as const
