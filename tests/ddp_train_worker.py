"""Run by test_train.py under torchrun: train the tiny config, then each rank saves its weights."""

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from main_train_fbcnn import Trainer, load_train_options  # noqa: E402
from utils.utils_dist import barrier, cleanup, init_dist  # noqa: E402

opt_file, out = sys.argv[1], Path(sys.argv[2])
opt = load_train_options(opt_file, [f"path.root={out}", "train.total_iter=12", "datasets.val.dataroot_H=null"])
dist = init_dist("cpu")
trainer = Trainer(opt, dist)
if dist.is_main:
    torch.save(trainer.model.net.state_dict(), out / "initial.pth")
barrier()
code = trainer.train()
torch.save(trainer.model.net.state_dict(), out / f"rank{dist.rank}.pth")
barrier()
cleanup()
sys.exit(code)
