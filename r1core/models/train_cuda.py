"""The CUDA training engine: Megatron's DDP, optimiser and pipeline schedules.

Used by :class:`r1core.models.train.Trainer` when the model lives on a GPU; ``policy`` below is
a :class:`r1core.models.policy.Policy` (only its model, batching and forward are used). Megatron's
``DistributedDataParallel`` keeps contiguous gradient buffers (reduced in fp32), the optimiser
from ``get_megatron_optimizer`` holds fp32 main parameters for bf16 models (sharded over the
data-parallel ranks with ``distributed_optimizer``) and clips by the global norm, and
``get_forward_backward_func`` picks the schedule for the pipeline layout (1F1B when
``pipeline > 1``).
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

import torch

from megatron.core.distributed import DistributedDataParallel, DistributedDataParallelConfig, finalize_model_grads
from megatron.core.optimizer import OptimizerConfig, get_megatron_optimizer
from megatron.core.pipeline_parallel import get_forward_backward_func

from r1core.batch import MicroBatch
from r1core.models.optim import OptimConfig


class CudaEngine:
    """Megatron's DDP wrapper and optimiser of one policy, built on first use."""

    def __init__(self, policy: Any, optim: OptimConfig) -> None:
        self.policy = policy
        self.optim_config = optim
        self._ddp: Any = None
        self._optimizer: Any = None

    def setup(self) -> tuple[Any, Any]:
        if self._ddp is None:
            self._ddp, self._optimizer = _build(self.policy.model, self.optim_config)
        return self._ddp, self._optimizer

    def optimizer(self) -> Any:
        return self.setup()[1]


def _build(model: Any, c: OptimConfig) -> tuple[Any, Any]:
    config = model.config
    ddp = DistributedDataParallel(
        config=config,
        ddp_config=DistributedDataParallelConfig(
            grad_reduce_in_fp32=True,
            overlap_grad_reduce=False,
            use_distributed_optimizer=c.distributed_optimizer,
            check_for_nan_in_grad=True,
        ),
        module=model,
    )
    dtype = next(model.parameters()).dtype
    optimizer = get_megatron_optimizer(
        OptimizerConfig(
            optimizer="adam",
            lr=c.lr,
            min_lr=c.lr,
            weight_decay=c.weight_decay,
            adam_beta1=c.betas[0],
            adam_beta2=c.betas[1],
            adam_eps=c.eps,
            clip_grad=c.clip_grad,
            bf16=dtype == torch.bfloat16,
            fp16=dtype == torch.float16,
            params_dtype=dtype,
            use_distributed_optimizer=c.distributed_optimizer,
        ),
        [ddp],
    )
    config.finalize_model_grads_func = finalize_model_grads
    config.no_sync_func = ddp.no_sync
    config.grad_scale_func = optimizer.scale_loss
    return ddp, optimizer


def cuda_train_step(engine: CudaEngine, micro_batches: Sequence[MicroBatch], loss_fn: Callable, *,
                    temperature: float, return_entropy: bool) -> dict[str, torch.Tensor]:
    """One optimiser step through Megatron's schedule (see :meth:`Policy.train_step`)."""
    policy = engine.policy
    ddp, optimizer = engine.setup()
    ddp.train()
    ddp.zero_grad_buffer()
    optimizer.zero_grad()
    batches = [(policy.make_batch(mb.input_ids), mb) for mb in micro_batches]
    head = dict(temperature=temperature, return_entropy=return_entropy)

    def forward_step(data_iterator, model):
        batch, mb = next(data_iterator)
        with policy.replay_samples(mb.routes, batch):
            output = policy.forward(batch, model=model, **head)

        def loss_func(out):
            logp = policy.unpack(out[0], batch)
            entropy = policy.unpack(out[1], batch) if out[1] is not None else None
            loss, metrics = loss_fn(logp, entropy, mb)
            return loss, {"loss": loss.detach(), **{k: torch.as_tensor(v).detach() for k, v in metrics.items()}}

        return output, loss_func

    seq = max(b.input_ids.shape[1] for b, _ in batches)
    micro = max(b.input_ids.shape[0] for b, _ in batches)
    reduced = get_forward_backward_func()(
        forward_step_func=forward_step,
        data_iterator=iter(batches),
        model=[ddp],
        num_microbatches=len(batches),
        seq_length=seq,
        micro_batch_size=micro,
        forward_only=False,
    )
    _, grad_norm, _ = optimizer.step()
    result: dict[str, torch.Tensor] = {
        "grad_norm": torch.as_tensor(grad_norm if grad_norm is not None else float("nan")),
        "lr": torch.tensor(engine.optim_config.lr),
    }
    if reduced:  # last pipeline stage
        for key in reduced[0]:
            result[key] = torch.stack([r[key].float() for r in reduced]).mean()
    return result
