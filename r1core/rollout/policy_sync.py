"""Weight sync from a Megatron policy split over many ranks into vLLM engines.

:func:`sync_policy_weights` is collective: every rank of the trainer calls it. The ranks
that pass a ``VLLMRollout`` are the *senders*; the others pass ``None``. Two layouts:

* one sender in the whole job (any rank; normally model-parallel rank 0 of data-parallel
  replica 0), e.g. a single engine serving every replica;
* one sender per data-parallel replica, each the replica's model-parallel rank 0 (its
  leader), as in the trainer, where every replica owns an engine. All replicas sync in
  the same call; each sender's engine receives its own replica's weights.

The engine connection and the staging buffer belong to the sender. How the weights of
one replica reach its sender:

* Tensor / expert parallelism: gathering a parameter's shards is a collective, so every
  rank of the TP/EP(/expert-TP) groups of the sender's replica iterates
  ``policy.iter_hf_weights()`` in the same order; only the stage's *leader* uses the
  full tensors, the others drop them at once.
* Pipeline parallelism: each stage holds its own layers (Hugging Face names carry global
  layer indices, so the engine needs no stage map). Stage after stage, inside one
  engine update, that stage's leader (the sender's peer in its pipeline group) streams
  its parameters one at a time to the sender point to point; the sender asks for each
  piece that fits its bucket and receives it straight into the staging buffer. With one
  sender per replica these point-to-point streams run side by side, one per replica.
* With a single sender, the other data-parallel replicas do nothing but wait for the
  result. Expert parallelism's groups span data-parallel replicas of the dense part, so
  there every rank iterates and each EP group completes its own gathers; with one sender
  per replica, the stage leaders of different replicas that share an EP group advance
  parameter by parameter in the same order (each paced by its own sender), so their
  gathers still meet.

So no rank holds more than one parameter (its gather) plus, on a sender, one bucket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
import torch.distributed as dist

from r1core.rollout.bridge import dtype_from_name, dtype_name

if TYPE_CHECKING:
    from r1core.rollout.vllm_rollout import VLLMRollout
    from r1core.rollout.weight_update import SyncStats, WeightUpdate

#: Request ``(start, numel)`` meaning "this parameter is complete, send the next one".
_DONE = -1


def sync_policy_weights(
    policy: Any, rollout: VLLMRollout | None, *, weight_version: str | None = None
) -> SyncStats:
    """Stream a (possibly TP/PP/EP-split) policy's weights into the senders' engines.

    Collective over the default process group: call it on every rank, at the same point.
    Pass the ``VLLMRollout`` either on exactly one rank, or on the leader (model-parallel
    rank 0) of every data-parallel replica; ``None`` elsewhere.

    Args:
        policy: anything with ``iter_hf_weights()`` yielding ``(hf_name, full tensor)``
            collectively over its TP/EP groups, e.g. ``r1core.models.Policy``; under
            pipeline parallelism each stage yields its own parameters.
        rollout: the ``VLLMRollout`` on a sending rank, ``None`` on the others.
        weight_version: version tag for the engines (default: each engine's count + 1).

    Returns:
        On every rank, the ``SyncStats`` of the sender that served it: its replica's
        sender with one engine per replica, the only sender otherwise (tensor and byte
        counts cover the whole model). Raises ``RuntimeError`` on every rank if any
        engine reports parameters left stale (a sender re-raises its own error), and
        ``ValueError`` on every rank if the engines are not on one rank or on exactly the
        replica leaders.

    Without an initialised process group (or with one rank) this is
    ``rollout.sync_weights(policy)``. A failure on a non-sending leader in the middle of
    the stream leaves its sender waiting until the process group's timeout.
    """
    if not dist.is_initialized() or dist.get_world_size() == 1:
        if rollout is None:
            raise ValueError("sync_policy_weights on a single process needs the rollout engine")
        return rollout.sync_weights(policy, weight_version=weight_version)
    from megatron.core import parallel_state as ps

    rank = dist.get_rank()
    comm_device = _comm_device(policy)
    layout = {
        "holder": rollout is not None,
        "stage": ps.get_pipeline_model_parallel_rank(),
        "pipeline_ranks": dist.get_process_group_ranks(ps.get_pipeline_model_parallel_group()),
        "tensor_ranks": dist.get_process_group_ranks(ps.get_tensor_model_parallel_group()),
        "model_ranks": dist.get_process_group_ranks(ps.get_model_parallel_group()),
    }
    everyone: list[dict[str, Any]] = [{}] * dist.get_world_size()
    dist.all_gather_object(everyone, layout)
    senders = _senders(everyone)
    num_stages = ps.get_pipeline_model_parallel_world_size()
    # sender -> {stage: that stage's leader}; the sender leads its own stage.
    leaders: dict[int, dict[int, int]] = {}
    for sender in senders:
        leaders[sender] = {everyone[r]["stage"]: r for r in everyone[sender]["pipeline_ranks"]}
        if sorted(leaders[sender]) != list(range(num_stages)):
            raise RuntimeError(f"pipeline group of rank {sender} does not cover every stage: "
                               f"{leaders[sender]}")
    feeds = {r: s for s, stages in leaders.items() for r in stages.values() if r != s}
    all_leaders = set(feeds) | set(senders)
    iterates = (
        ps.get_expert_model_parallel_world_size() > 1
        or ps.get_expert_tensor_parallel_world_size() != ps.get_tensor_model_parallel_world_size()
        or bool(set(layout["tensor_ranks"]) & all_leaders)
    )

    outcome: Any = None
    failure: BaseException | None = None
    if rank in leaders:
        assert rollout is not None
        try:
            outcome = _send_all(policy, rollout, weight_version, layout["stage"], leaders[rank],
                                comm_device)
        except Exception as error:  # every rank must learn about it; re-raised below
            failure = error
            outcome = f"{type(error).__name__}: {error}"
    elif rank in feeds:
        _stream_to_sender(policy, feeds[rank], comm_device)
    elif iterates:
        for _ in policy.iter_hf_weights():  # the gathers of this stage's leader
            pass
    # Every sender's result (or error) reaches every rank; this is also the barrier after
    # which the next rollout may start.
    outcomes: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(outcomes, outcome)
    if failure is not None:
        raise failure
    for sender in senders:
        if isinstance(outcomes[sender], str):
            raise RuntimeError(f"weight sync failed on rank {sender}: {outcomes[sender]}")
    if len(senders) == 1:
        return outcomes[senders[0]]
    mine = next(s for s in senders if s in layout["model_ranks"])
    return outcomes[mine]


def _senders(everyone: list[dict[str, Any]]) -> list[int]:
    """The sending ranks, checked: one in the job, or exactly every replica's leader."""
    holders = [r for r, info in enumerate(everyone) if info["holder"]]
    if len(holders) == 1:
        return holders
    replica_leaders = sorted({info["model_ranks"][0] for info in everyone})
    if holders != replica_leaders:
        raise ValueError(
            f"sync_policy_weights needs the rollout engine on exactly one rank, or on the "
            f"leader (model-parallel rank 0) of every data-parallel replica, i.e. ranks "
            f"{replica_leaders}; got it on ranks {holders}"
        )
    return holders


def _comm_device(policy: Any) -> torch.device:
    """Where point-to-point tensors live: CPU for gloo, the policy's GPU for NCCL."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def _send_all(policy: Any, rollout: VLLMRollout, weight_version: str | None, my_stage: int,
              leaders: dict[int, int], comm_device: torch.device) -> SyncStats:
    """Sender: open one engine update, fill it stage after stage, finish it."""
    update = rollout.start_weight_update(weight_version=weight_version)
    try:
        for stage in sorted(leaders):
            if stage == my_stage:
                for name, tensor in policy.iter_hf_weights():
                    update.add(name, tensor)
            else:
                _receive_stage(update, leaders[stage], comm_device)
    except BaseException:
        update.abort()
        raise
    return update.finish()


def _receive_stage(update: WeightUpdate, source: int, device: torch.device) -> None:
    """Sender side of one remote stage: headers, then pieces on request, until ``None``."""
    request = torch.empty(2, dtype=torch.int64, device=device)
    while True:
        header: list[Any] = [None]
        dist.recv_object_list(header, src=source, device=device)
        if header[0] is None:
            return
        name, dtype_str, shape = header[0]
        dtype = dtype_from_name(dtype_str)

        def fill(destination: torch.Tensor, start: int, numel: int) -> None:
            if numel == 0:
                return  # an empty tensor: nothing to ask for
            request[0], request[1] = start, numel
            dist.send(request, dst=source)
            if destination.device == device:
                dist.recv(destination, src=source)
            else:  # e.g. NCCL into a CPU staging buffer
                staged = torch.empty(numel, dtype=dtype, device=device)
                dist.recv(staged, src=source)
                destination.copy_(staged)

        update.add_pieces(name, dtype, tuple(shape), fill)
        request[0], request[1] = 0, _DONE
        dist.send(request, dst=source)


def _stream_to_sender(policy: Any, sender: int, device: torch.device) -> None:
    """A non-sending stage leader: offer each parameter, send the pieces asked for."""
    request = torch.empty(2, dtype=torch.int64, device=device)
    for name, tensor in policy.iter_hf_weights():
        flat = tensor.detach().contiguous().view(-1)  # contiguous() is a no-op for most
        dist.send_object_list([(name, dtype_name(tensor.dtype), list(tensor.shape))],
                              dst=sender, device=device)
        while True:
            dist.recv(request, src=sender)
            start, numel = int(request[0]), int(request[1])
            if numel == _DONE:
                break
            dist.send(flat[start : start + numel].to(device), dst=sender)
    dist.send_object_list([None], dst=sender, device=device)
