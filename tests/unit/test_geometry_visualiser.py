"""The visualiser writes the depth comparison and the rendered point clouds into real TensorBoard events."""

from __future__ import annotations

import io

import lightning as L
import numpy as np
import torch
from lightning.pytorch.loggers import TensorBoardLogger
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from g2vlm.callbacks.geometry_visualiser import GeometryVisualiser
from g2vlm.datamodules.multiview.datamodule import MultiViewDataModule
from g2vlm.lit.geometry_pretraining import GeometryPretraining
from g2vlm.lit.optimization import Optimization


def test_training_logs_labelled_depth_and_point_cloud_images(tiny_synthetic_shards, tmp_path):
    folder = tiny_synthetic_shards / "data" / "synthetic-tiny"
    data = MultiViewDataModule(train_shards=[str(folder / "synthetic-train-000000.tar")], image_size=(32, 32),
                               size_multiple=4, views_min=3, views_max=3, image_budget=6, train_batches_per_epoch=2,
                               num_workers=0, color_jitter=False)
    torch.manual_seed(0)
    module = GeometryPretraining(preset="tiny", freeze=["vit", "semantic"], optimization=Optimization(warmup_steps=1))
    trainer = L.Trainer(max_steps=2, accelerator="cpu", logger=TensorBoardLogger(tmp_path, name="tb", version=""),
                        callbacks=[GeometryVisualiser(every_n_steps=1)], enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module, datamodule=data)
    events = EventAccumulator(str(tmp_path / "tb"), size_guidance={"images": 0}).Reload()
    assert {"vis/depth", "vis/point_clouds"} <= set(events.Tags()["images"])
    for tag in ("vis/depth", "vis/point_clouds"):
        logged = events.Images(tag)
        assert [image.step for image in logged] == [0, 1]
        picture = np.asarray(Image.open(io.BytesIO(logged[-1].encoded_image_string)))
        assert picture.shape[1] >= 400 and picture.std() > 10  # a readable, non-blank figure
