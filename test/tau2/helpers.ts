/** Shared test setup: the tau2 data directory (TAU2_DATA_DIR, else ../shared/tau2 beside the repo). */
import { fileURLToPath } from 'node:url'

export const DATA_DIR =
  process.env.TAU2_DATA_DIR || fileURLToPath(new URL('../../../shared/tau2', import.meta.url))
