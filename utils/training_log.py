"""Read the trainer's text log (``experiments/<task>/train.log``) back into numbers, and plot training curves.

    python -m utils.training_log experiments/fbcnn_gray_small/train.log [more logs] [--plot curves.png]

Prints, per log, the iterations reached, the training wall-clock hours and the best validation PSNR; ``--plot``
draws the image loss, the QF loss and the validation PSNR per QF against the iteration, one colour per log;
``--chain`` joins the logs as consecutive stages of one model (a fine-tune continues the iteration count).
A resumed run repeats the iterations after its training state; the last occurrence of an iteration wins, so
the curves and the hours describe the trajectory that produced the final weights.
"""

from __future__ import annotations

import argparse
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Written by main_train_fbcnn.Trainer._log_train and .validate.
STEP_LINE = re.compile(
    r"\| step\s+(?P<step>\d+) \| epoch (?P<epoch>\d+) \| lr (?P<lr>[0-9.e+-]+) \| loss (?P<loss>[0-9.e+-]+) "
    r"\(img (?P<l_img>[0-9.e+-]+), qf (?P<l_qf>[0-9.e+-]+)\) \| (?P<pps>[0-9.]+) patches/s, (?P<s_per_it>[0-9.]+) s/it"
)
VAL_LINE = re.compile(r"\| validation step (?P<step>\d+) \| PSNR/SSIM/PSNR-B \| (?P<parts>.*)$")
BEST_LINE = re.compile(r"\| new best validation PSNR (?P<psnr>[0-9.]+) dB")
INIT_LINE = re.compile(r"\| initialised from .*: step (?P<step>\d+), epoch")  # path.pretrained_netG (+ _step)
VAL_PART = re.compile(
    r"QF(?P<qf>\d+): (?P<psnr>[0-9.]+) dB / (?P<ssim>[0-9.]+) / (?P<psnrb>[0-9.]+), QF MAE (?P<qf_mae>[0-9.]+|nan)"
)


@dataclass
class TrainingLog:
    """Numbers of one run. ``train[step]`` holds lr, loss, l_img, l_qf, s_per_it (seconds per iteration,
    averaged since the previous line); ``val[step][qf]`` holds psnr, ssim, psnrb (dB) and qf_mae (QF units)."""

    path: Path
    train: dict[int, dict[str, float]] = field(default_factory=dict)
    val: dict[int, dict[int, dict[str, float]]] = field(default_factory=dict)
    best: dict[int, float] = field(default_factory=dict)  # step -> mean validation PSNR, where best_G was saved
    name: str = ""
    start_step: int = 0  # path.pretrained_step of a run initialised from weights: it continues that numbering
    stage_starts: list[int] = field(default_factory=list)  # chained logs: where each later stage begins

    @property
    def label(self) -> str:
        """A short name for plot legends: a chained log's first stage and how many follow."""
        names = self.name.split(" + ")
        return self.name if len(names) < 3 else f"{names[0]} + {len(names) - 1} stages"

    def __post_init__(self) -> None:
        if not self.name:  # experiments/<task>/train.log -> task; <task>.train.log -> task
            self.name = self.path.parent.name if self.path.name == "train.log" else self.path.name.split(".")[0]

    @property
    def last_step(self) -> int:
        return max(self.train, default=0)

    def hours(self) -> float:
        """Wall-clock hours spent on the kept iterations (s/it times the iterations each line covers)."""
        total, previous = 0.0, self.start_step
        for step in sorted(self.train):
            total += self.train[step]["s_per_it"] * (step - previous)
            previous = step
        return total / 3600

    def best_step(self) -> tuple[int, float] | None:
        """(iteration, mean validation PSNR) of the weights in best_G.pth at the end of the log: the trainer's last
        'new best' line (of the last stage, for a chained log; 3-decimal figures can tie, and a later save wins),
        else the best mean of the per-QF validation lines; None without validation."""
        if self.best:
            step = max(self.best)
            return step, self.best[step]
        scores = self.mean_val_psnr()
        return max(scores.items(), key=lambda kv: kv[1]) if scores else None

    def mean_val_psnr(self) -> dict[int, float]:
        """Validation PSNR averaged over the validated QFs, per iteration (what selects best_G)."""
        return {step: sum(v["psnr"] for v in by_qf.values()) / len(by_qf) for step, by_qf in self.val.items()}


def parse_train_log(path: str | os.PathLike) -> TrainingLog:
    """Parse a train.log; raises ValueError naming the file if it holds no training line."""
    log = TrainingLog(Path(path))
    last_val = None
    for line in log.path.read_text(encoding="utf-8").splitlines():
        if m := STEP_LINE.search(line):
            values = {k: float(v) for k, v in m.groupdict().items() if k not in ("step", "epoch")}
            log.train[int(m["step"])] = values | {"epoch": float(m["epoch"])}
        elif m := VAL_LINE.search(line):
            parts = {
                int(p["qf"]): {k: float(p[k]) for k in ("psnr", "ssim", "psnrb", "qf_mae")}
                for p in VAL_PART.finditer(m["parts"])
            }
            if parts:
                log.val[int(m["step"])] = parts
                last_val = int(m["step"])
        elif (m := BEST_LINE.search(line)) and last_val is not None:
            log.best[last_val] = float(m["psnr"])
        elif (m := INIT_LINE.search(line)) and not log.train:
            log.start_step = int(m["step"])
    if not log.train:
        raise ValueError(f"{log.path}: no training lines ('| step N | epoch ...') found; is this a train.log?")
    return log


def chain_logs(stages: Sequence[TrainingLog]) -> TrainingLog:
    """One log from consecutive stages of a model. A stage started from iteration 0 (a fine-tune initialised
    from the previous stage) is shifted to follow the previous stage's last iteration; a stage that continued
    the previous one's numbering (``start_step`` > 0: weights and ``pretrained_step`` N) keeps it and replaces
    the previous stage's iterations after N. Named after the stages."""
    chained = TrainingLog(stages[-1].path, name=" + ".join(stage.name for stage in stages))
    offset = previous = 0  # shift of the next fresh stage; shift of the last stage
    for stage in stages:
        if stage.start_step:
            offset = previous
            cut = offset + stage.start_step
            for table in (chained.train, chained.val, chained.best):
                for step in [step for step in table if step > cut]:
                    del table[step]
        if chained.train:
            chained.stage_starts.append(offset + stage.start_step)
        chained.train.update({offset + step: values for step, values in stage.train.items()})
        chained.val.update({offset + step: by_qf for step, by_qf in stage.val.items()})
        chained.best.update({offset + step: psnr for step, psnr in stage.best.items()})
        previous, offset = offset, offset + stage.last_step
    return chained


def plot_training_curves(logs: Sequence[TrainingLog], out: str | os.PathLike, smooth: int = 5) -> Path:
    """Image loss, QF loss and validation PSNR against the iteration; writes a PNG atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from utils.utils_io import atomic_write

    def smoothed(values: list[float]) -> list[float]:
        windows = [values[max(0, i - smooth // 2) : i + smooth // 2 + 1] for i in range(len(values))]
        return [sum(w) / len(w) for w in windows]

    fig, axes = plt.subplots(1, 3, figsize=(16, 4.8))
    for index, log in enumerate(logs):
        color = f"C{index}"
        name = log.label
        for ax in axes:
            for start in log.stage_starts:  # stage boundaries of a chained log
                ax.axvline(start, color=color, alpha=0.3, linestyle=":", linewidth=1)
        steps = sorted(log.train)
        for ax, key in zip(axes[:2], ("l_img", "l_qf"), strict=True):
            values = [log.train[s][key] for s in steps]
            ax.plot(steps, values, color=color, alpha=0.25, linewidth=0.8)
            ax.plot(steps, smoothed(values), color=color, label=name)
        val_steps = sorted(log.val)
        qfs = sorted({qf for by_qf in log.val.values() for qf in by_qf})
        for qf_index, qf in enumerate(qfs):
            x = [s for s in val_steps if qf in log.val[s]]
            y = [log.val[s][qf]["psnr"] for s in x]
            style = ("-", "--", ":", "-.")[qf_index % 4]
            axes[2].plot(x, y, style, color=color, marker=".", label=f"{name}, QF{qf}")
    axes[0].set(title="image loss (L1, [0,1] scale)", xlabel="iteration", yscale="log")
    axes[1].set(title="QF loss (L1 on (100-QF)/100, single JPEG only)", xlabel="iteration", yscale="log")
    axes[2].set(
        title="validation PSNR (dB)" + ("; dotted: stage starts" if any(lg.stage_starts for lg in logs) else ""),
        xlabel="iteration",
    )
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="best")
    fig.tight_layout()
    out = Path(out)
    atomic_write(out, lambda tmp: fig.savefig(tmp, dpi=90, format="png"))
    plt.close(fig)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("logs", nargs="+", type=Path, help="train.log files written by main_train_fbcnn.py")
    parser.add_argument("--plot", type=Path, help="write the training curves to this PNG")
    parser.add_argument("--chain", action="store_true", help="the logs are consecutive stages of one model")
    args = parser.parse_args(argv)
    logs = []
    for path in args.logs:
        try:
            logs.append(parse_train_log(path))
        except (OSError, ValueError) as err:
            print(f"skipped: {err}")
    complete = len(logs) == len(args.logs)
    if args.chain and complete:
        logs = [chain_logs(logs)]
    for log in logs:
        best = log.best_step()
        best_text = f"best_G from iteration {best[0]} (validation PSNR {best[1]:.3f} dB)" if best else "no validation"
        print(f"{log.name}: {log.last_step} iterations, {log.hours():.2f} h of training, {best_text}")
    if args.plot and logs:
        print(f"curves: {plot_training_curves(logs, args.plot)}")
    return 0 if complete else 1


if __name__ == "__main__":
    raise SystemExit(main())
