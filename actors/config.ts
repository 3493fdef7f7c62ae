/**
 * The run config (`configs/*.yaml`): one schema composed of the sections each component owns.
 *
 *   top level       experiment_name, trial_name, fileroot, seed, log_level, allocation_mode,
 *                   total_train_steps, scheduler, cluster, train_dataset, gconfig, rollout, saver, recover
 *   bus             runtime/bus-config.ts          econfig   actors/rollout/tau2/config.ts
 *   proxy           actors/proxy/config.ts         engine    actors/engine/config.ts
 *   actor           actors/trainer/config.ts       (the policy model, PPO and optimizer)
 *
 * Keys follow AReaL's tau2 example where one exists (max_head_offpolicyness, n_samples, …).
 */
import { busSchema } from '../runtime/bus-config.ts'
import { type ConfigOf, c } from '../runtime/config.ts'
import { schedulerSchema } from '../runtime/scheduler/config.ts'
import { engineSchema } from './engine/config.ts'
import { defaults as proxyDefaults, validate as validateProxy } from './proxy/config.ts'
import { defaults as tau2Defaults, validate as validateTau2 } from './rollout/tau2/config.ts'
import { trainerSchema } from './trainer/config.ts'

export const runSchema = c.obj({
  experiment_name: c.str('run', { doc: 'run directory: <fileroot>/<experiment_name>/<trial_name>' }),
  trial_name: c.str('t0'),
  fileroot: c.str('runs', { doc: 'root of run directories' }),
  seed: c.int(1),
  log_level: c.enum(['debug', 'info', 'warn', 'error'], 'info'),
  allocation_mode: c.str('embedded:d1+archon:d1', {
    doc: 'inference and training pools, e.g. embedded:d1+archon:d2 or sglang:d4t2+archon:d4p1t2',
  }),
  total_train_steps: c.int(10, { min: 1, doc: 'PPO steps (policy versions) to train' }),
  scheduler: schedulerSchema,
  cluster: c.obj({
    n_nodes: c.int(1, { min: 1 }),
    n_gpus_per_node: c.int(0, { min: 0, doc: '0 = CPU only' }),
  }),
  train_dataset: c.obj({
    batch_size: c.int(4, { min: 1, doc: 'task groups per PPO step' }),
    shuffle: c.bool(true),
  }),
  gconfig: c.obj({
    n_samples: c.int(4, { min: 1, doc: 'episodes per task (group size)' }),
    max_new_tokens: c.int(256, { min: 1, doc: 'per completion' }),
    temperature: c.num(1.0, { min: 0, doc: 'sampling temperature (the trainer uses the same)' }),
    top_p: c.num(1.0, { min: 0, max: 1 }),
    top_k: c.int(0, { min: 0 }),
  }),
  rollout: c.obj({
    workers: c.int(1, { min: 1, doc: 'rollout actor processes' }),
    max_concurrent_rollouts: c.int(8, { min: 1, doc: 'task groups generating at once' }),
    max_head_offpolicyness: c.int(2, { min: 0, doc: 'η: staleness bound in versions (0 = synchronous)' }),
    filter_mean_reward_above: c.num(2, { doc: 'drop groups whose mean reward is above this (> 1 = off)' }),
    filter_no_variance: c.bool(false, { doc: 'drop groups whose rewards are all equal' }),
    episode_timeout_s: c.int(600, { min: 1 }),
    export_style: c.enum(['individual', 'concat'], 'individual'),
  }),
  proxy_replicas: c.int(1, { min: 1, doc: 'proxy processes; engines are split among them' }),
  saver: c.obj({ freq_steps: c.int(0, { min: 0, doc: 'checkpoint every N steps (0 = only at the end)' }) }),
  recover: c.obj({
    mode: c.enum(['disabled', 'auto'], 'auto', {
      doc: 'auto: continue from the newest complete checkpoint in the run directory',
    }),
  }),
  bus: busSchema,
  econfig: c.custom(tau2Defaults, (raw) => validateTau2(raw)),
  proxy: c.custom(proxyDefaults, (raw, path) => validateProxy(raw, path)),
  engine: engineSchema,
  actor: trainerSchema,
})

export type RunConfig = ConfigOf<typeof runSchema>
