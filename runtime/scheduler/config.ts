/**
 * `scheduler:` in the run config: where the job's processes run.
 *
 *   scheduler.type   local  child processes of bin/launch on this machine
 *                    slurm  one sbatch allocation; bin/launch (inside it) starts every role as an srun step
 *   scheduler.slurm  partition, account, time limit, extra #SBATCH lines, setup commands, …
 *   scheduler.servers  how SGLang / vLLM servers are started when allocation_mode names them
 */
import { type ConfigOf, c } from '../config.ts'

export const schedulerSchema = c.obj({
  type: c.enum(['local', 'slurm'], 'local', {
    doc: 'local: child processes here; slurm: one sbatch allocation, roles as srun steps',
  }),
  slurm: c.obj({
    partition: c.str('', { doc: 'sbatch --partition ("" = the cluster default)' }),
    account: c.str('', { doc: 'sbatch --account ("" = your default account)' }),
    time_limit: c.str('', { doc: 'sbatch --time, e.g. 2-00:00:00 ("" = the partition default)' }),
    job_name: c.str('', { doc: 'sbatch --job-name ("" = areal-<experiment_name>-<trial_name>)' }),
    exclusive: c.bool(true, { doc: 'sbatch --exclusive: whole nodes (every role shares them)' }),
    extra_sbatch: c.list(c.str(), [], {
      doc: 'extra batch-script lines, e.g. "--qos=high" (written as #SBATCH <line>)',
    }),
    setup: c.list(c.str(), [], {
      doc: 'shell commands run before the controller and before every step (module load, venv, exports)',
    }),
    srun_args: c.list(c.str(), [], { doc: 'extra srun options for every step, e.g. --mpi=none' }),
    poll_ms: c.int(2000, { min: 100, doc: 'how often bin/launch polls squeue for the job state' }),
  }),
  servers: c.obj({
    python: c.str('python3', { doc: 'interpreter that runs `-m sglang.launch_server`' }),
    vllm: c.str('vllm', { doc: 'the vLLM CLI (`vllm serve …`)' }),
    port: c.int(30000, { min: 1, max: 65535, doc: 'first server port; replica i on a node uses port + i' }),
    model_path: c.str('', { doc: 'model the servers load ("" = engine.model.path)' }),
    extra_args: c.list(c.str(), [], { doc: 'extra server arguments, appended as given' }),
    start_timeout_s: c.int(900, {
      min: 1,
      doc: 'a server that does not answer GET /health by then fails the run',
    }),
  }),
})

export type SchedulerConfig = ConfigOf<typeof schedulerSchema>
