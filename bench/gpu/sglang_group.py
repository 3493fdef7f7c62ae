"""The receiving side of bench/gpu/sglang-interop.ts: joins a weight-update group the way SGLang's
`init_weights_update_group` does — torch.distributed's rendezvous on tcp://host:port (a TCPStore client),
the store wrapped in PrefixStore(group_name), then torch's own `_new_process_group_helper` with the NCCL
backend — and receives one broadcast from rank 0 per tensor (float32, the shapes given), then prints each
tensor's values as JSON on stdout.

  python3 bench/gpu/sglang_group.py --port P --group NAME --rank 1 --world 2 --device cuda:1 --shapes 64,128x64
"""
import argparse
import inspect
import json
from datetime import timedelta

import torch
import torch.distributed as dist
from torch.distributed.distributed_c10d import Backend, PrefixStore, _new_process_group_helper, _world, rendezvous


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument('--host', default='127.0.0.1')
    ap.add_argument('--port', type=int, required=True)
    ap.add_argument('--group', required=True)
    ap.add_argument('--rank', type=int, default=1)
    ap.add_argument('--world', type=int, default=2)
    ap.add_argument('--device', default='cuda:1')
    ap.add_argument('--shapes', required=True, help='comma-separated shapes, dims joined by x')
    a = ap.parse_args()
    device = torch.device(a.device)
    torch.cuda.set_device(device)
    timeout = timedelta(seconds=120)
    store, rank, world = next(rendezvous(f'tcp://{a.host}:{a.port}', a.rank, a.world, timeout=timeout))
    store.set_timeout(timeout)
    # as SGLang's init_custom_process_group: the group name as the store prefix, then torch's helper
    options_key = 'backend_options' if 'backend_options' in inspect.signature(_new_process_group_helper).parameters else 'pg_options'
    pg, _ = _new_process_group_helper(
        group_size=world,
        group_rank=rank,
        global_ranks_in_group=[],
        backend=Backend('nccl'),
        store=PrefixStore(a.group, store),
        group_name=a.group,
        timeout=timeout,
        **{options_key: None},
    )
    _world.pg_group_ranks[pg] = {i: i for i in range(world)}  # as SGLang registers it (group rank = global rank)
    out = []
    for shape in a.shapes.split(','):
        t = torch.empty([int(d) for d in shape.split('x')], dtype=torch.float32, device=device)
        dist.broadcast(t, src=0, group=pg)
        out.append(t.flatten().cpu().tolist())
    torch.cuda.synchronize()
    print(json.dumps(out), flush=True)


if __name__ == '__main__':
    main()
