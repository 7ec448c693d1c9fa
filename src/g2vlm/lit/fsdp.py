"""Sharded training with FSDP2 (`torch.distributed.fsdp.fully_shard`), on GPUs (NCCL) and on CPU (gloo) alike.

    lightning fit --config experiments/geometry/pretrain_224.yaml --config experiments/trainer/fsdp.yaml

Two pieces:
- `FSDP2Strategy` (the `trainer.strategy` of experiments/trainer/fsdp.yaml): Lightning's `ModelParallelStrategy`
  with every rank a data-parallel rank (no tensor parallelism), the device mesh that `fully_shard` uses (1-D over
  all ranks, or 2-D replicate-across-nodes × shard-within-a-node with `hybrid_shard`), the mixed-precision
  dtypes, and sharded checkpoints: each rank writes its own shards (torch.distributed.checkpoint, no full state
  gathered anywhere), which a run of any other world size can load (DCP reshards on load).
- `shard_model`, called by the LightningModules' `configure_model`: each DINO block, each expert-router layer,
  each ViT block and each head decoder block is its own FSDP unit, then the geometry heads, then the root
  (`SpatialReasoning` keeps the encoders in the root unit: see `shard_model`).
  The geometry heads keep fp32 parameters (heads, geometry and losses run in fp32); every other unit computes
  in `param_dtype`. Gradients are reduced in `reduce_dtype`; the optimizer holds fp32 sharded master weights.

Activation checkpointing per layer is the modules' own `gradient_checkpointing` switch (fsdp.yaml sets it);
it composes with the units because FSDP2 skips its hooks while a checkpointed layer is recomputed in backward.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import torch
from lightning.pytorch.strategies import ModelParallelStrategy
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh
from torch.distributed.fsdp import FSDPModule, MixedPrecisionPolicy, fully_shard, register_fsdp_forward_method

from g2vlm.model.g2vlm import G2VLM
from g2vlm.model.heads import ContextDecoderBlock, DecoderBlock

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}


class FSDP2Strategy(ModelParallelStrategy):
    """FSDP2 data parallelism over all ranks (see the module docstring).

    Args:
        param_dtype: compute dtype of every unit but the geometry heads (fp32 always): `bfloat16` on GPUs,
            `float32` for exact comparisons on CPU.
        reduce_dtype: dtype of the gradient reduce-scatter (and all-reduce across replicas).
        hybrid_shard: shard within a node and replicate across nodes (a (num_nodes, devices) mesh; HSDP), so
            parameter all-gathers stay on the node's fast links; otherwise shard over all ranks.
    """

    def __init__(self, param_dtype: Literal["bfloat16", "float32"] = "bfloat16",
                 reduce_dtype: Literal["bfloat16", "float32"] = "float32", hybrid_shard: bool = False) -> None:
        for name, value in (("param_dtype", param_dtype), ("reduce_dtype", reduce_dtype)):
            if value not in DTYPES:
                raise ValueError(f"FSDP2Strategy: {name} must be one of {sorted(DTYPES)}, got {value!r}")
        super().__init__(save_distributed_checkpoint=True)
        self.param_dtype = DTYPES[param_dtype]
        self.reduce_dtype = DTYPES[reduce_dtype]
        self.hybrid_shard = hybrid_shard
        self.shard_mesh: DeviceMesh | None = None

    def setup_environment(self) -> None:
        # Lightning's mesh (data_parallel = every rank, tensor_parallel = 1) drives the distributed samplers
        self._data_parallel_size = self.num_nodes * self.num_processes
        self._tensor_parallel_size = 1
        super().setup_environment()
        if self.hybrid_shard:
            self.shard_mesh = init_device_mesh(self.root_device.type, (self.num_nodes, self.num_processes),
                                               mesh_dim_names=("replicate", "shard"))
        else:
            self.shard_mesh = self.device_mesh["data_parallel"]

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath, storage_options: Any | None = None) -> None:
        """A DCP folder written by every rank (its own shards; rank 0 adds `meta.pt`). An existing checkpoint of
        that name is removed first, so no shard of an earlier save (e.g. at another world size) is left in it."""
        path = Path(self.broadcast(filepath))
        if self.global_rank == 0:
            if path.is_symlink() or path.is_file():
                path.unlink()
            elif path.is_dir():
                shutil.rmtree(path)
        self.barrier("fsdp2-checkpoint-cleared")
        super().save_checkpoint(checkpoint, path, storage_options)


def shard_model(model: G2VLM, mesh: DeviceMesh, param_dtype: torch.dtype = torch.bfloat16,
                reduce_dtype: torch.dtype = torch.float32, encoder_blocks: bool = True) -> None:
    """Apply `fully_shard` to `model` in place over `mesh` (1-D: shard; 2-D: replicate × shard), unit by unit:
    each DINO block and ViT block (with `encoder_blocks`), each expert-router layer, each head decoder block, the
    geometry heads, the root. The heads' units keep fp32 parameters and reduce in fp32; every other unit computes
    in `param_dtype` and reduces in `reduce_dtype`. Methods other than `forward` that the suite calls on a unit
    (`forward_geometry`, `forward_packed`) are registered so they gather and free the unit's parameters as
    `forward` does.

    Every call of a unit is a collective (an all-gather; a reduce-scatter in backward), so all ranks must call each
    unit equally often. The geometry path runs each encoder once per forward: `encoder_blocks=True`. The packed
    path runs DINO once per geometry sample and the ViT only for batches with images, which differs between ranks:
    `encoder_blocks=False` leaves both encoders in the root unit (gathered once per forward). The heads run once per
    geometry sample there too; `SpatialReasoning` evens their calls out across ranks."""
    trunk = MixedPrecisionPolicy(param_dtype=param_dtype, reduce_dtype=reduce_dtype)
    heads = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
    if encoder_blocks:
        for block in model.dino.vit.blocks:
            fully_shard(block, mesh=mesh, mp_policy=trunk)
        if model.vision_tower is not None:
            for block in model.vision_tower.model.blocks:
                fully_shard(block, mesh=mesh, mp_policy=trunk)
    for layer in model.trunk.layers:
        fully_shard(layer, mesh=mesh, mp_policy=trunk)
        register_fsdp_forward_method(layer, "forward_geometry")
        register_fsdp_forward_method(layer, "forward_packed")
    for module in model.heads.modules():
        if isinstance(module, (DecoderBlock, ContextDecoderBlock)):
            fully_shard(module, mesh=mesh, mp_policy=heads)
    fully_shard(model.heads, mesh=mesh, mp_policy=heads)
    fully_shard(model, mesh=mesh, mp_policy=trunk)
    register_fsdp_forward_method(model, "forward_geometry")


@contextmanager
def gathered(model: G2VLM) -> Iterator[None]:
    """Every FSDP unit of `model` holds its full parameters inside the block (a collective: every rank enters it),
    for code that reads parameters outside the units' `forward`, such as KV-cache generation. Such code also skips
    the root unit's cast of its inputs, so with low-precision parameters (bf16) the block computes under autocast to
    that dtype (the heads turn autocast off and run in fp32 as always). A no-op for an unsharded model."""
    units = [module for module in model.modules() if isinstance(module, FSDPModule)]
    for unit in units:
        unit.unshard()
    try:
        parameter = next(model.parameters())  # the root unit's, now in its compute dtype
        with torch.autocast(parameter.device.type, dtype=parameter.dtype,
                            enabled=bool(units) and parameter.dtype != torch.float32):
            yield
    finally:
        for unit in units:
            unit.reshard()


def shard_for_trainer(model: G2VLM, trainer, encoder_blocks: bool = True) -> None:
    """`shard_model` when `trainer` (None outside a Trainer) runs `FSDP2Strategy`; every other strategy leaves
    the model whole. A plain `ModelParallelStrategy` is refused: the units and policies are this module's."""
    strategy = getattr(trainer, "strategy", None)
    if isinstance(strategy, FSDP2Strategy):
        shard_model(model, strategy.shard_mesh, strategy.param_dtype, strategy.reduce_dtype, encoder_blocks)
    elif isinstance(strategy, ModelParallelStrategy):
        raise TypeError(f"g2vlm.lit.fsdp: trainer.strategy {type(strategy).__name__} shards nothing by itself; use "
                        "g2vlm.lit.fsdp.FSDP2Strategy (experiments/trainer/fsdp.yaml)")
