"""tsn_dali's loader in a PyTorch Lightning DataModule: the epoch advances by itself.

    python examples/lightning_datamodule.py VIDEO_ROOT [--epochs 2] [--devices 1]

VIDEO_ROOT holds ``<class>/<video>`` folders. Lightning's fit loop calls
``loader.sampler.set_epoch(epoch)`` each epoch (the loader's epoch then follows it); under
DDP each rank's loader takes its shard (``rank``/``world_size`` from the trainer).
"""
from __future__ import annotations

import argparse
from pathlib import Path

import lightning as L
import torch
import torchvision

from tsn_dali.data import loader_from

MEAN, STD = [123.675, 116.28, 103.53], [58.395, 57.12, 57.375]


class VideoData(L.LightningDataModule):
    def __init__(self, root: str, batch_size: int = 8, num_segments: int = 8, input_size: int = 224,
                 short_side: int = 256, executor: str = "auto"):
        super().__init__()
        self.root, self.batch_size, self.executor = root, batch_size, executor
        self.sizes = dict(num_segments=num_segments, input_size=input_size, short_side=short_side)
        self.loader = None

    def train_dataloader(self):
        trainer = self.trainer
        self.loader = loader_from(self.root, split="train", batch_size=self.batch_size, mean=MEAN, std=STD,
                                  executor=self.executor, device=trainer.strategy.root_device,
                                  rank=trainer.global_rank, world_size=trainer.world_size, **self.sizes)
        return self.loader

    def teardown(self, stage: str) -> None:
        if self.loader is not None:
            self.loader.close()


class TSNLike(L.LightningModule):
    """A 2D backbone per view, views averaged (TSN's consensus)."""

    def __init__(self, num_classes: int):
        super().__init__()
        self.net = torchvision.models.resnet18(num_classes=num_classes).to(memory_format=torch.channels_last)
        self.epochs_seen = []  # (trainer epoch, loader epoch) of each batch: they agree

    def training_step(self, batch, batch_idx):
        clips, labels, samples = batch
        self.epochs_seen.append((self.current_epoch, self.trainer.datamodule.loader.epoch))
        n, v = clips.shape[:2]
        logits = self.net(clips.flatten(0, 1)).view(n, v, -1).mean(1)
        return torch.nn.functional.cross_entropy(logits, labels)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.01, momentum=0.9)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--devices", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--num-segments", type=int, default=8)
    p.add_argument("--input-size", type=int, default=224)
    p.add_argument("--short-side", type=int, default=256)
    p.add_argument("--executor", default="auto")
    args = p.parse_args(argv)
    from tsn_dali.data.render.sources import folder_records

    _, classes = folder_records(Path(args.root))
    data = VideoData(args.root, args.batch_size, args.num_segments, args.input_size, args.short_side, args.executor)
    model = TSNLike(len(classes))
    trainer = L.Trainer(max_epochs=args.epochs, devices=args.devices, accelerator="auto", logger=False,
                        enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(model, datamodule=data)
    print("epochs seen (trainer, loader):", sorted(set(model.epochs_seen)))
    return model


if __name__ == "__main__":
    main()
