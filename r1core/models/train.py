"""Forward/backward schedules and the optimiser step of the policy.

Two engines behind one interface (:class:`Trainer`):

* CUDA: Megatron's ``DistributedDataParallel`` (grad buckets, optional distributed optimiser),
  ``get_megatron_optimizer`` (fp32 main params for bf16 models, gradient clipping) and
  Megatron's pipeline schedules (``get_forward_backward_func``).
* CPU: those allocate on CUDA, so the same steps are done with plain ``torch.distributed``:
  gradients averaged over the data-parallel groups (dense and expert), Q/K-norm gradients
  summed over the tensor-parallel ranks, tied-embedding gradients
  summed between the first and last pipeline stage, a global gradient norm that counts
  tensor-parallel duplicates once, ``torch.optim.AdamW``, and a fill-drain pipeline schedule
  (all forwards, then all backwards) over point-to-point sends. Low-precision parameters get
  fp32 master copies there: each micro-batch's gradients are added into fp32 buffers, and
  AdamW's state and update are fp32 (what Megatron's optimiser does on CUDA).

Both engines set the learning rate of every optimiser step from the schedule of
:class:`~r1core.models.optim.OptimConfig`; the step count lives in the optimiser's parameter
groups, so it is saved and restored with the optimiser state.

``policy`` below is a :class:`r1core.models.policy.Policy` (its model, batching, forward and
routing replay are used); this module does not import it, the policy imports this one.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
import torch.distributed as dist

from megatron.core import parallel_state as ps

from r1core.batch import MicroBatch
from r1core.models.optim import OptimConfig
from r1core.models.train_cuda import CudaEngine, cuda_train_step


class Trainer:
    """Runs forwards/backwards over the pipeline and steps the optimiser for a policy."""

    def __init__(self, policy: Any, optim: OptimConfig) -> None:
        self.policy = policy
        self.optim_config = optim
        self.cuda = torch.cuda.is_available() and next(policy.model.parameters()).is_cuda
        self._optimizer: Any = None
        self._masters: list[torch.Tensor] | None = None
        self._cuda_engine = CudaEngine(policy, optim) if self.cuda else None

    # ------------------------------------------------------------------ pipeline plumbing

    @property
    def first_stage(self) -> bool:
        return ps.is_pipeline_first_stage()

    @property
    def last_stage(self) -> bool:
        return ps.is_pipeline_last_stage()

    def _activation_shape(self, batch: Any) -> tuple[int, int, int]:
        seq, micro = batch.input_ids.shape[1], batch.input_ids.shape[0]
        if self.policy.parallel.sequence_parallel:
            seq //= self.policy.parallel.tensor
        return seq, micro, self.policy.shape.hidden_size

    def _recv_prev(self, batch: Any) -> torch.Tensor:
        buf = torch.empty(self._activation_shape(batch), dtype=self._dtype(), device=self.policy.device)
        dist.recv(buf, src=ps.get_pipeline_model_parallel_prev_rank())
        return buf.requires_grad_()

    def _dtype(self) -> torch.dtype:
        return next(self.policy.model.parameters()).dtype

    def _stage_forward(self, batch: Any, model: torch.nn.Module, **head: Any) -> tuple[Any, Any]:
        """Forward of this stage. Returns (input activation or None, output)."""
        received = None
        if not self.first_stage:
            received = self._recv_prev(batch)
            self.policy.model.set_input_tensor(received)
        out = self.policy.forward(batch, model=model, **head)
        if not self.last_stage:
            dist.send(out.detach().contiguous(), dst=ps.get_pipeline_model_parallel_next_rank())
        return received, out

    def _broadcast_from_last(self, out: Any, batch: Any, return_entropy: bool) -> tuple[torch.Tensor, Any]:
        if ps.get_pipeline_model_parallel_world_size() == 1:
            return out
        shape = tuple(batch.labels.shape)
        logp = out[0].contiguous() if self.last_stage else torch.empty(shape, device=self.policy.device)
        src = ps.get_pipeline_model_parallel_last_rank()
        group = ps.get_pipeline_model_parallel_group()
        dist.broadcast(logp, src=src, group=group)
        entropy = None
        if return_entropy:
            entropy = out[1].contiguous() if self.last_stage else torch.empty(shape, device=self.policy.device)
            dist.broadcast(entropy, src=src, group=group)
        return logp, entropy

    def forward_only(self, batch: Any, *, temperature: float, return_entropy: bool) -> tuple[torch.Tensor, Any]:
        """No-grad forward across the pipeline; every rank gets ``(logp, entropy)``."""
        head = dict(temperature=temperature, return_entropy=return_entropy)
        _, out = self._stage_forward(batch, self.policy.model, **head)
        return self._broadcast_from_last(out, batch, return_entropy)

    # ------------------------------------------------------------------ training

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for p in self.policy.model.parameters() if p.requires_grad]

    def train_step(self, micro_batches: Sequence[MicroBatch], loss_fn: Callable, *,
                   temperature: float, return_entropy: bool) -> dict[str, torch.Tensor]:
        if not micro_batches:
            raise ValueError("train_step needs at least one micro-batch")
        lr = self._start_step(self.optimizer())
        if self._cuda_engine is not None:
            result = cuda_train_step(self._cuda_engine, micro_batches, loss_fn, temperature=temperature,
                                     return_entropy=return_entropy)
            result["lr"] = torch.tensor(lr)
            return result
        policy = self.policy
        policy.model.train()
        optimizer = self._cpu_optimizer()
        optimizer.zero_grad(set_to_none=True)
        for p in self.parameters():
            p.grad = None
        head = dict(temperature=temperature, return_entropy=return_entropy)
        stash = []
        for mb in micro_batches:  # fill: every forward first (activations stay alive) ...
            batch = policy.make_batch(mb.input_ids)
            with policy.replay_samples(mb.routes, batch):
                received, out = self._stage_forward(batch, policy.model, **head)
            stash.append((batch, received, out, mb))
        losses, metrics_sum = [], {}
        for batch, received, out, mb in reversed(stash):  # ... then drain backwards
            if self.last_stage:
                logp = policy.unpack(out[0], batch)
                entropy = policy.unpack(out[1], batch) if out[1] is not None else None
                loss, metrics = loss_fn(logp, entropy, mb)
                (loss / len(micro_batches)).backward()
                losses.append(loss.detach())
                for key, value in metrics.items():
                    metrics_sum[key] = metrics_sum.get(key, 0.0) + torch.as_tensor(value).detach().float()
            else:
                grad = torch.empty_like(out)
                dist.recv(grad, src=ps.get_pipeline_model_parallel_next_rank())
                out.backward(grad)
            if received is not None:
                dist.send(received.grad.contiguous(), dst=ps.get_pipeline_model_parallel_prev_rank())
            self._accumulate_master_grads()
        grads = self._gradients()
        self._cpu_finalize_grads(grads)
        grad_norm = self._cpu_grad_norm(grads)
        clip = self.optim_config.clip_grad
        if clip > 0:
            scale = torch.clamp(clip / (grad_norm + 1e-6), max=1.0)
            for grad in grads:
                grad.mul_(scale)
        optimizer.step()
        if self._masters is not None:
            with torch.no_grad():
                for param, master in zip(self.parameters(), self._masters):
                    param.copy_(master)
        result = {"grad_norm": grad_norm, "lr": torch.tensor(lr)}
        if losses:
            result["loss"] = torch.stack(losses).mean()
            result.update({k: v / len(micro_batches) for k, v in metrics_sum.items()})
        return result

    def _start_step(self, optimizer: Any) -> float:
        """Set every parameter group's learning rate for the coming optimiser step from the
        schedule and count the step (in the groups, so checkpoints carry the count)."""
        groups = optimizer.param_groups
        step = int(groups[0].get("schedule_step", 0))
        lr = self.optim_config.lr_at(step)
        for group in groups:
            group["lr"] = lr
            group["schedule_step"] = step + 1
        return lr

    def optimizer(self) -> Any:
        """The optimiser of this engine, created on first use (AdamW on CPU, Megatron's on CUDA)."""
        if self._cuda_engine is not None:
            return self._cuda_engine.optimizer()
        return self._cpu_optimizer()

    def _use_masters(self) -> bool:
        wanted = self.optim_config.master_weights
        low_precision = any(p.dtype != torch.float32 for p in self.parameters())
        return low_precision if wanted is None else wanted

    def _cpu_optimizer(self) -> torch.optim.Optimizer:
        if self._optimizer is None:
            c = self.optim_config
            params: list[torch.Tensor] = self.parameters()
            if self._use_masters():
                # fp32 copies the optimiser updates; the model's low-precision weights are
                # refreshed from them after every step.
                self._masters = [p.detach().float().clone().requires_grad_(True) for p in params]
                params = self._masters
            optimizer_class = _MasterAdamW if self._masters is not None else torch.optim.AdamW
            self._optimizer = optimizer_class(params, lr=c.lr, betas=c.betas, eps=c.eps, weight_decay=c.weight_decay)
        return self._optimizer

    def _accumulate_master_grads(self) -> None:
        """Add this micro-batch's low-precision gradients into the fp32 master gradients (so
        accumulation over micro-batches rounds once per micro-batch in fp32, not in bf16)."""
        if self._masters is None:
            return
        for param, master in zip(self.parameters(), self._masters):
            if param.grad is None:
                continue
            if master.grad is None:
                master.grad = param.grad.float()
            else:
                master.grad.add_(param.grad)
            param.grad = None

    def _gradients(self) -> list[torch.Tensor]:
        """The step's gradient of every trainable parameter, in :meth:`parameters` order: the
        fp32 master gradients when there are masters, else the parameters' own (zeros for a
        parameter that took no part, so every rank reduces the same list)."""
        params = self.parameters()
        holders = self._masters if self._masters is not None else params
        for holder in holders:
            if holder.grad is None:
                holder.grad = torch.zeros_like(holder)
        return [holder.grad for holder in holders]

    def _cpu_finalize_grads(self, grads: list[torch.Tensor]) -> None:
        """Sum the per-head Q/K norms over tensor-parallel ranks; average over data-parallel
        replicas; sum the tied embedding across stages."""
        model = self.policy.model
        params = self.parameters()
        if model.config.qk_layernorm and ps.get_tensor_model_parallel_world_size() > 1:
            # One Q/K norm weight serves every head; each tensor-parallel rank holds the
            # gradient from its own heads only (Megatron's finalize_model_grads, same rule).
            names = [name for name, p in model.named_parameters() if p.requires_grad]
            for name, grad in zip(names, grads):
                if "q_layernorm" in name or "k_layernorm" in name:
                    dist.all_reduce(grad, group=ps.get_tensor_model_parallel_group())
        if self.policy.shape.tied_embeddings and ps.get_pipeline_model_parallel_world_size() > 1:
            if ps.is_rank_in_embedding_group():
                weight = model.shared_embedding_or_output_weight()
                index = next(i for i, p in enumerate(params) if p is weight)
                dist.all_reduce(grads[index], group=ps.get_embedding_group())
        # Megatron DDP's scaling: every gradient is divided by the dense data-parallel size;
        # expert gradients are summed over the expert data-parallel group (the dispatcher's
        # backward already summed the contributions of the other expert-parallel ranks' tokens).
        dense_dp = ps.get_data_parallel_world_size()
        for p, grad in zip(params, grads):
            expert = not getattr(p, "allreduce", True)
            group = ps.get_expert_data_parallel_group() if expert else ps.get_data_parallel_group()
            if dist.get_world_size(group) > 1:
                dist.all_reduce(grad, group=group)
            if dense_dp > 1:
                grad.div_(dense_dp)

    def _cpu_grad_norm(self, grads: list[torch.Tensor]) -> torch.Tensor:
        """Global L2 norm over all model-parallel shards, tensor-parallel duplicates once."""
        tp_rank = ps.get_tensor_model_parallel_rank()
        etp_rank = ps.get_expert_tensor_parallel_rank()
        dense = torch.zeros((), dtype=torch.float64)
        expert = torch.zeros((), dtype=torch.float64)
        for p, grad in zip(self.parameters(), grads):
            if getattr(p, "shared", False):
                continue  # the last stage's copy of the tied embedding: counted on the first
            is_expert = not getattr(p, "allreduce", True)
            sharded = getattr(p, "tensor_model_parallel", False)
            if not sharded and (etp_rank if is_expert else tp_rank) != 0:
                continue
            sq = grad.double().pow(2).sum()
            if is_expert:
                expert += sq
            else:
                dense += sq
        for value, group in ((dense, ps.get_model_parallel_group()),
                             (expert, ps.get_expert_tensor_model_pipeline_parallel_group())):
            if dist.get_world_size(group) > 1:
                dist.all_reduce(value, group=group)
        total = (dense + expert).sqrt().float()
        if not math.isfinite(float(total)):  # host sync: a non-finite norm must stop the step
            raise FloatingPointError(f"gradient norm is {float(total)}")
        return total


class _MasterAdamW(torch.optim.AdamW):
    """AdamW over fp32 master copies whose state dict also carries the masters, so a resumed
    run continues from the exact fp32 weights rather than their low-precision rounding."""

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["master_weights"] = [p.detach().clone() for group in self.param_groups for p in group["params"]]
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        state_dict = dict(state_dict)
        masters = state_dict.pop("master_weights", None)
        super().load_state_dict(state_dict)
        if masters is not None:
            params = [p for group in self.param_groups for p in group["params"]]
            if len(masters) != len(params):
                raise ValueError(f"checkpoint has {len(masters)} master weights for {len(params)} parameters")
            with torch.no_grad():
                for param, saved in zip(params, masters):
                    param.copy_(saved)
