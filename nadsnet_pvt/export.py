"""Export NADS-Net to ONNX and prove the file computes what PyTorch computes.

    python -m nadsnet_pvt.export --weights checkpoints/nadsnet_best.pth --out nadsnet.onnx

Reads this project's weights (with the JSON beside them) or the seed's plain state dict, and
writes one self-contained ONNX file: input `image` (batch, 3, S, S), ImageNet-normalised RGB;
outputs `heatmaps` (batch, 9|10, S/4, S/4), `pafs` (batch, 16, S/4, S/4) and, when the network
has the head, `seatbelt` (batch, 1, S, S) in [0, 1]. The batch axis is dynamic; S is fixed
(PVT-tiny's position embeddings are learned for one size).

Then ONNX Runtime (CPU) runs the exported graph and PyTorch runs the network on one random
batch, of a batch size other than the export's example (so a batch size baked into a reshape
would show), and each output's max |difference| / max |reference| is printed. Above 1e-4 the
command exits 1 and writes nothing; otherwise the file is written atomically (temporary file,
then rename), so `--out` never holds a half-written or failed export.

Exporter: the torch.export-based one (`torch.onnx.export(..., dynamo=True)`, torch's default
since 2.9; it needs onnxscript). It traces with a symbolic batch size, so every reshape and
transpose in PVT's attention ((B, N, heads, head_dim) and back) is recorded in terms of that
symbol, and anything that would pin the batch size fails the export instead of silently
baking in the example's batch. The legacy TorchScript tracer (dynamo=False) also matched on
this network, but it records Python ints as constants (correct here only because every shape
is read from a tensor), warns that it is deprecated, and labelled the seatbelt output's height
as 'batch' in its shape inference.

Exit codes: 0 written; 1 a bad file (weights that are not a NADS-Net), a failed export or
a parity check above the tolerance (no file written); 2 bad options.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from torch import nn

from common.training.cli import OneLineParser, run_script
from common.errors import OptionError, first_line
from common.training.files import write_atomic
from common.models.factory import load_nadsnet
from common.training.options import image_size_value
from nadsnet_pvt.run_files import RUN_HELP, fill_from_run

DEFAULT_OPSET = 18  # the torch.export-based exporter's own opset; lower ones go through a version converter
# PVT's LayerNorms export as LayerNormalization, an op since opset 17; the version converter
# cannot take it further back (it fails and the exporter silently keeps opset 18).
MIN_OPSET = 17
INPUT_NAME = "image"
OUTPUT_NAMES = ("heatmaps", "pafs", "seatbelt")
EXAMPLE_BATCH = 2  # batch of the example the graph is traced with
CHECK_BATCH = 3  # batch of the parity check: differs from EXAMPLE_BATCH to exercise the dynamic axis
TOLERANCE = 1e-4  # max |difference| / max |reference|, per output
_PROG = "python -m nadsnet_pvt.export"
RUN_EXPORT = "nadsnet.onnx"  # --run DIR without --out: the model beside the run's weights


class ExportError(RuntimeError):
    """The export failed, or the exported graph does not match PyTorch (exit code 1)."""


class _TupleOutputs(nn.Module):
    """The network with its outputs as a plain tuple (the exporter flattens outputs in order)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return tuple(output for output in self.net(image) if output is not None)


def _opset_option(text: str) -> int:
    import onnx  # only to learn the newest opset the installed onnx knows

    newest = onnx.defs.onnx_opset_version()
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not MIN_OPSET <= value <= newest:
        raise argparse.ArgumentTypeError(f"must be an ONNX opset from {MIN_OPSET} to {newest} (this onnx's newest), got {value}")
    return value


def parse_options(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = OneLineParser(prog=_PROG, description=__doc__.split("\n\n")[0])
    parser.add_argument("--weights", type=Path, default=None, help="NADS-Net weights (this project's .pth with its .json, a training state, or the seed's)")
    parser.add_argument("--run", type=Path, default=None, help=RUN_HELP + f"; --out defaults to DIR/{RUN_EXPORT}")
    parser.add_argument("--out", type=Path, default=None, help="the .onnx file to write")
    parser.add_argument("--image-size", type=image_size_value, default=None, help="input size S (default: the network's)")
    parser.add_argument("--opset", type=_opset_option, default=DEFAULT_OPSET, help=f"ONNX opset (default {DEFAULT_OPSET})")
    options = fill_from_run(parser.parse_args(argv))
    if options.out is None:
        if options.run is None:
            raise OptionError("--out", "give the .onnx file to write (or --run DIR, which writes DIR/" + RUN_EXPORT + ")")
        options.out = options.run / RUN_EXPORT
    return options


def load_for_export(weights: Path, image_size: int | None) -> tuple[nn.Module, int]:
    """The network on the CPU in eval mode, and the input size to export it at."""
    net, config = load_nadsnet(weights, "cpu")
    network_size = int(config["image_size"])
    if image_size is not None and image_size != network_size and config.get("backbone", "pvt_tiny") == "pvt_tiny":
        raise OptionError(
            f"--image-size {image_size}: {weights} holds a NADS-Net for {network_size} px input (its PVT position "
            f"embeddings are learned for that size); leave --image-size out or give {network_size}"
        )
    return net.eval(), image_size or network_size


def export_onnx_bytes(net: nn.Module, image_size: int, opset: int = DEFAULT_OPSET) -> bytes:
    """The serialised ONNX model of `net` (eval mode, CPU) with a dynamic batch axis.

    Output names: OUTPUT_NAMES, as many as the network returns (2 without a seatbelt head).
    Raises ExportError with one line when the exporter fails.
    """
    wrapped = _TupleOutputs(net).eval()
    example = torch.randn(EXAMPLE_BATCH, 3, image_size, image_size, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        output_count = len(wrapped(example))
    batch = torch.export.Dim("batch", min=1)
    try:
        program = torch.onnx.export(
            wrapped,
            (example,),
            dynamo=True,
            input_names=[INPUT_NAME],
            output_names=list(OUTPUT_NAMES[:output_count]),
            dynamic_shapes={"image": {0: batch}},
            opset_version=opset,
            external_data=False,  # one self-contained file (the weights are far below protobuf's 2 GB)
            verbose=False,
        )
    except ImportError as error:
        raise ExportError(f"the ONNX exporter needs onnx and onnxscript ({error}); pip install -r requirements.txt") from None
    except Exception as error:  # the exporter raises many types; report its first line
        raise ExportError(f"torch.onnx.export failed: {type(error).__name__}: {first_line(error)}") from None
    model = program.model_proto
    exported_opset = next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), None)
    if exported_opset != opset:
        # The exporter falls back silently to its own opset when the version converter fails.
        raise ExportError(f"the exporter could not convert the graph to opset {opset} (it gave opset {exported_opset}); "
                          f"use --opset {exported_opset} or newer")
    return model.SerializeToString()


def reference_outputs(net: nn.Module, images: torch.Tensor) -> list[np.ndarray]:
    """PyTorch's outputs for `images` (B, 3, S, S): float32 arrays, in OUTPUT_NAMES order."""
    with torch.no_grad():
        return [output.float().numpy() for output in _TupleOutputs(net).eval()(images)]


def onnx_runtime_outputs(model: bytes, images: torch.Tensor) -> list[np.ndarray]:
    """ONNX Runtime's (CPU) outputs of the serialised `model` for `images`, in output order."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = torch.get_num_threads()  # respect OMP_NUM_THREADS like torch does
    try:
        session = onnxruntime.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        return session.run(None, {INPUT_NAME: images.numpy()})
    except Exception as error:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        raise ExportError(f"ONNX Runtime {onnxruntime.__version__} cannot run the exported graph: {first_line(error)}") from None


def compare_outputs(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray]) -> list[dict]:
    """Per output: name, shape, max |difference|, max |reference| and their ratio (the
    relative difference; the plain difference where the reference is all zeros)."""
    if len(reference) != len(candidate):
        raise ExportError(f"ONNX Runtime returned {len(candidate)} outputs, PyTorch {len(reference)}")
    rows = []
    for name, expected, got in zip(OUTPUT_NAMES, reference, candidate):
        if expected.shape != got.shape:
            raise ExportError(f"output {name}: ONNX Runtime gave shape {got.shape}, PyTorch {expected.shape}")
        difference = float(np.abs(expected.astype(np.float64) - got).max())
        scale = float(np.abs(expected).max())
        rows.append({"name": name, "shape": expected.shape, "max_diff": difference, "max_ref": scale,
                     "relative": difference / scale if scale > 0 else difference})
    return rows


def export(options: argparse.Namespace) -> list[dict]:
    """Export, check against PyTorch, and write the file when the check passes.

    Returns the comparison rows. Raises OptionError, CheckpointError or ExportError (one line).
    """
    net, image_size = load_for_export(options.weights, options.image_size)
    started = time.perf_counter()
    model = export_onnx_bytes(net, image_size, options.opset)
    print(f"exported {options.weights} at {image_size} px, opset {options.opset}, in {time.perf_counter() - started:.1f} s "
          f"({len(model) / 1e6:.1f} MB)")
    images = torch.randn(CHECK_BATCH, 3, image_size, image_size, generator=torch.Generator().manual_seed(1))
    rows = compare_outputs(reference_outputs(net, images), onnx_runtime_outputs(model, images))
    print(f"ONNX Runtime vs PyTorch on a random batch of {CHECK_BATCH} (exported with a batch of {EXAMPLE_BATCH}):")
    for row in rows:
        verdict = "ok" if row["relative"] <= TOLERANCE else f"ABOVE {TOLERANCE:g}"
        print(f"  {row['name']:<9}{str(row['shape']):<20} max|diff| {row['max_diff']:.2e} / max|ref| {row['max_ref']:.2e}"
              f" = {row['relative']:.2e}  {verdict}")
    failed = [row["name"] for row in rows if not row["relative"] <= TOLERANCE]  # NaN fails too
    if failed:
        raise ExportError(f"ONNX Runtime differs from PyTorch by more than {TOLERANCE:g} (relative) in "
                          f"{', '.join(failed)}; {options.out} was not written")
    write_atomic(options.out, lambda handle: handle.write(model))
    print(f"wrote {options.out}")
    return rows


def main(argv: Sequence[str] | None = None) -> int:
    """The command line: 0 written, 2 bad options, 1 a bad file or a failed export / check."""
    return run_script(_PROG, lambda args: (parse_options(args), []), lambda options, _: export(options), argv,
                      errors=(ExportError,))


if __name__ == "__main__":
    sys.exit(main())
