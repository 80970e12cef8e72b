"""Pose faithfulness of a generator, judged by a NADS-Net that never guided it.

The judge is a NADS-Net trained on real frames only (its own seed), never the guidance network:
a generator trained to please its guide would be judged by its own teacher. On held-out poses
(an annotation file with its frames and masks):

    faithfulness      = judge's PCKt@0.2 on frames the generator renders from those poses
                        / judge's PCKt@0.2 on the real frames of the same poses
    faithfulness_arms = the same for the arms (elbows and wrists)

and the judge's seatbelt IoU on the generated frames. A ratio is None (null in JSON, with a
warning) when the real PCKt is 0: the judge itself finds nothing there. The generator renders
as it does in NADS-Net's training (batch statistics, stored statistics untouched) at its own
size; its frames are resized to the judge's input size.
"""

from __future__ import annotations

import hashlib
import math
import warnings
from pathlib import Path
from typing import Any, Iterator

import torch
from torch import nn

from common.posedata.dataset import make_loader
from common.errors import OptionError
from common.models.factory import load_nadsnet
from common.posedata.sampling import ResumableSampler
from common.models.rendering import GeneratedSamples
from nadsnet_pvt.evaluate import evaluate


def file_digest(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def load_judge(path: Path, guidance: Path | None, device: torch.device) -> tuple[nn.Module, dict]:
    """The judge NADS-Net; a file identical to the guidance network's is refused (circular)."""
    if guidance is not None and Path(guidance).is_file() and file_digest(path) == file_digest(guidance):
        raise OptionError(f"--judge-weights {path}", f"the same file as the guidance NADS-Net ({guidance}): the judge "
                          "must never have guided the generator (train one with train_nadsnet.py --gan-fraction 0 "
                          "and another --seed)")
    return load_nadsnet(path, device)


class Faithfulness:
    """Measures a generator's pose faithfulness on one held-out set (see the module docstring).

    Args:
        judge: the judge NADS-Net (eval mode is set by evaluate) on `device`.
        dataset: the held-out PoseDataset, at the judge's input size.
        device: where the judge and the generator run.
        batch_size, num_workers: of the held-out loader.
    """

    def __init__(self, judge: nn.Module, dataset, device: torch.device, batch_size: int = 8, num_workers: int = 0):
        self.judge, self.device = judge, device
        sampler = ResumableSampler(len(dataset), batch_size, shuffle=False, drop_last=False, even=False)
        self.loader = make_loader(dataset, sampler, num_workers, device)
        self.loader.batch_sampler.set_epoch(0)
        self.image_size = dataset.image_size
        self._real = None  # the real frames' summary: the judge does not change

    def real_summary(self) -> dict:
        if self._real is None:
            self._real = evaluate(self.judge, self.loader, self.image_size, False, self.device).summary
        return self._real

    def _generated_batches(self, renderer: GeneratedSamples) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            frames = renderer.render(batch["keypoints"], batch["seatbelt"], self.image_size, batch["occluded"])
            yield dict(batch, image=frames.to(self.device))

    @torch.no_grad()
    def measure(self, generator: nn.Module, occluded_joints: str = "drawn") -> dict[str, Any]:
        """{'faithfulness', 'faithfulness_arms', 'generated_pckt', 'generated_pckt_arms',
        'real_pckt', 'real_pckt_arms', 'generated_seatbelt_iou', 'present'} for `generator`
        (left as it was: training mode and statistics restored), whose input shows occluded
        joints as `occluded_joints` says (as it was trained)."""
        was_training = generator.training
        renderer = GeneratedSamples(generator, self.device, "converted", eval_mode=False, occluded_joints=occluded_joints)
        try:
            generated = evaluate(self.judge, self._generated_batches(renderer), self.image_size, False,
                                 self.device).summary
        finally:
            generator.train(was_training)
            for parameter in generator.parameters():
                parameter.requires_grad_(True)
        real = self.real_summary()
        return {
            "faithfulness": _ratio(generated["pckt"], real["pckt"], "PCKt"),
            "faithfulness_arms": _ratio(generated["pckt_arms"], real["pckt_arms"], "arms PCKt"),
            "generated_pckt": generated["pckt"], "generated_pckt_arms": generated["pckt_arms"],
            "real_pckt": real["pckt"], "real_pckt_arms": real["pckt_arms"],
            "generated_seatbelt_iou": generated["seatbelt_iou"], "present": generated["present"],
        }


def _ratio(generated: float, real: float, what: str) -> float | None:
    if not math.isfinite(real) or real == 0:
        warnings.warn(f"the judge's {what} on the real held-out frames is {real}: faithfulness is undefined (null)",
                      stacklevel=3)
        return None
    return generated / real
