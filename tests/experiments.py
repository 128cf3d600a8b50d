"""Small experiment files for tests, written from one template."""

from __future__ import annotations

from pathlib import Path

TEMPLATE = """\
name: {name}
task: {task}
network: {{layers: {layers}, activation: {activation}}}
dynamics: {{dt: 0.01, Tpres: {Tpres}, settling_time: {settling}}}
plasticity:
  eta_fw: {eta_fw}
  eta_bw: {eta_bw}
  eta_IP: {eta_hidden}
  eta_PI: {eta_hidden}
  alpha: {alpha}
noise: {{type: OU, mode: const, scale: {scale}, tauxi: 0.1, dtxi: 0.01}}
input: {{signal: step, dataset_size: {dataset_size}, epochs: {epochs}}}
models:
{models}
seeds: {seeds}
recording: {{variables: [{variables}], every: {every}{chunk}}}
output: {{store: {store}}}
"""


def write_experiment(directory: Path, name: str = "exp", *, task: str = "bw_only", layers: tuple[int, ...] = (3, 4, 2),
                     models: str = "  - {kind: PAL}", seeds: tuple[int, ...] = (11, 12), epochs: int = 2,
                     dataset_size: int = 3, Tpres: float = 0.1, settling: float = 0.3, every: int = 1,
                     chunk_records: int | None = None, variables: str = "WPP, BPP, uP, vapi",
                     eta_fw: float = 1.0, activation: str = "logistic") -> Path:
    n_hidden = len(layers) - 2
    text = TEMPLATE.format(
        name=name, task=task, layers=list(layers), activation=activation, Tpres=Tpres, settling=settling,
        eta_fw=[eta_fw] * (len(layers) - 1), eta_bw=[20.0] * n_hidden, eta_hidden=[0.5] * n_hidden,
        alpha=["1.0e-5"] * n_hidden, scale=[0.05] * n_hidden, dataset_size=dataset_size, epochs=epochs,
        models=models, seeds=list(seeds), variables=variables, every=every,
        chunk="" if chunk_records is None else f", chunk_records: {chunk_records}",
        store=directory / f"{name}.zarr",
    ).replace("'", "")
    path = directory / f"{name}.yaml"
    path.write_text(text)
    return path
