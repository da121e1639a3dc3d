"""A one-page PNG summary of a co-designed encoder (matplotlib, Agg backend).

Panels::

    +-----------------------+------------------------+
    | filter responses T_f  | truth vs reconstructed |
    | (F curves vs nm)      | spectra at 4 pixels    |
    +-----------+-----------+------------+-----------+
    | preview   | true      | predicted  | metrics   |
    | (band     | classes   | classes    | (text)    |
    |  mean)    |           |            |           |
    +-----------+-----------+------------+-----------+

:func:`write_overlay` draws the demo's comparison: predicted and true labels over an sRGB
rendering of held-out scenes (:func:`srgb_rendering`), one column per model.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

__all__ = ["srgb_rendering", "write_overlay", "write_report"]


def write_report(
    path,
    wavelengths_nm,
    responses,
    model,
    scenes,
    metrics: dict | None = None,
    title: str = "hyplex encoder design",
    seed: int = 0,
) -> Path:
    """Render the report of ``model`` (a :class:`~hyplex.models.codesign.CodesignModel`) on the
    first scene of ``scenes`` (a :class:`~hyplex.models.data.SceneSet`) to ``path`` (PNG).

    Parameters
    ----------
    wavelengths_nm : ``(L,)`` nm.
    responses : ``(F, L)`` filter transmissions.
    metrics : ``{phase: {name: value}}`` printed in the last panel.
    seed : sensor noise of the example capture.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from hyplex.models.segmentation import predict_labels

    grid = np.asarray(wavelengths_nm, dtype=np.float64)
    responses = np.asarray(responses, dtype=np.float64)
    if responses.ndim != 2 or responses.shape[1] != grid.size:
        raise ValueError(f"responses must be (F, L={grid.size}), got {responses.shape}")
    cubes, labels, _ = scenes.tensors()
    device = next(iter(model.state_dict().values())).device
    was_training = model.training
    model.eval()
    with torch.no_grad():
        generator = torch.Generator(device).manual_seed(int(seed))
        _, estimate, logits = model(cubes[:1].to(device), generator)
    model.train(was_training)
    truth = cubes[0].numpy()  # (L, H, W)
    estimate = estimate[0].clamp(0, 1).cpu().numpy()
    predicted = predict_labels(logits)[0].cpu().numpy()

    figure = plt.figure(figsize=(13, 7.5), layout="constrained")
    top, bottom = figure.subfigures(2, 1, height_ratios=[1.1, 1.0])
    ax_filters, ax_spectra = top.subplots(1, 2)
    for index, response in enumerate(responses):
        ax_filters.plot(grid, response, label=f"f{index}", lw=1.2)
    ax_filters.set(xlabel="wavelength (nm)", ylabel="transmission", ylim=(0, 1.02))
    ax_filters.set_title(f"{len(responses)} filter responses")
    ax_filters.legend(fontsize="x-small", ncol=3)
    height, width = truth.shape[1:]
    rng = np.random.default_rng(seed)
    pixels = list(zip(rng.integers(height, size=4), rng.integers(width, size=4), strict=True))
    for number, (row, col) in enumerate(pixels):
        colour = f"C{number}"
        ax_spectra.plot(
            grid, truth[:, row, col], color=colour, lw=1.5, label=f"truth ({row},{col})"
        )
        ax_spectra.plot(grid, estimate[:, row, col], color=colour, ls="--", lw=1.2)
    ax_spectra.set(xlabel="wavelength (nm)", ylabel="apparent reflectance")
    ax_spectra.set_title("truth (solid) vs reconstruction (dashed)")
    ax_spectra.legend(fontsize="x-small")

    axes = bottom.subplots(1, 4)
    axes[0].imshow(truth.mean(0), cmap="gray")
    axes[0].set_title("scene (band mean)")
    n_classes = max(len(scenes.class_names), 1)
    for ax, image, name in (
        (axes[1], labels[0].numpy(), "true"),
        (axes[2], predicted, "predicted"),
    ):
        ax.imshow(truth.mean(0), cmap="gray")
        ax.imshow(image, cmap="tab10", vmin=0, vmax=max(n_classes - 1, 9), alpha=0.55)
        ax.set_title(f"{name} classes")
    for ax in axes[:3]:
        ax.set_axis_off()
    axes[3].set_axis_off()
    lines = ["classes: " + ", ".join(f"{i}={n}" for i, n in enumerate(scenes.class_names))]
    for phase, values in (metrics or {}).items():
        shown = ", ".join(f"{k} {v:.3g}" for k, v in values.items())
        lines.append(f"{phase}: {shown}")
    axes[3].text(0, 1, "\n".join(lines), va="top", fontsize=7, wrap=True, family="monospace")
    figure.suptitle(title)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=90)
    plt.close(figure)
    return path


def srgb_rendering(cube, wavelengths_nm, illuminant: str = "D65") -> np.ndarray:
    """sRGB image ``(H, W, 3)`` in [0, 1] of an apparent-reflectance cube ``(H, W, L)`` lit by
    ``illuminant`` (CIE XYZ with white at Y = 1, then IEC 61966-2-1 sRGB)."""
    from hyplex.simulation.colorimetry import reflectance_to_xyz, xyz_to_srgb
    from hyplex.simulation.illuminants import get_illuminant

    grid = np.asarray(wavelengths_nm, dtype=np.float64)
    light = get_illuminant(illuminant, grid).spectral_irradiance
    return xyz_to_srgb(reflectance_to_xyz(np.asarray(cube, dtype=np.float64), grid, light))


def write_overlay(path, scenes, predictions: dict, titles: dict, indices=(0, 1)) -> Path:
    """Labels over an sRGB rendering, ground truth beside each model's prediction (PNG).

    Parameters
    ----------
    scenes : the held-out :class:`~hyplex.models.data.SceneSet`.
    predictions : ``{key: (S, H, W) labels}`` of the scenes; the key ``"truth"`` (the class
        maps) comes first.
    titles : ``{key: column title}``.
    indices : the scenes shown, one figure row each.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    names = list(scenes.class_names)
    colours = plt.get_cmap("tab10")(np.arange(len(names)) % 10)
    colours[:, 3] = 0.55
    colours[0, 3] = 0.0  # background: the scene itself shows through
    cmap = ListedColormap(colours)
    keys = ["truth", *(key for key in predictions if key != "truth")]
    indices = [int(i) for i in indices]
    figure, axes = plt.subplots(
        len(indices), len(keys) + 1, squeeze=False, layout="constrained",
        figsize=(2.6 * (len(keys) + 1), 2.7 * len(indices) + 0.6),
    )  # fmt: skip
    for row, index in enumerate(indices):
        image = srgb_rendering(scenes.cubes[index], scenes.wavelengths_nm)
        axes[row, 0].imshow(image)
        fakes = int(scenes.fake_maps[index].sum())
        axes[row, 0].set_title(f"held-out scene {index} (sRGB, D65)\n{fakes} fake px", fontsize=8)
        for column, key in enumerate(keys, start=1):
            labels = np.asarray(predictions[key][index])
            axes[row, column].imshow(image)
            axes[row, column].imshow(labels, cmap=cmap, vmin=0, vmax=len(names) - 1,
                                     interpolation="nearest")  # fmt: skip
            axes[row, column].set_title(titles.get(key, key), fontsize=8)
    for axis in axes.flat:
        axis.set_axis_off()
    handles = [Patch(color=colours[i][:3], label=name) for i, name in enumerate(names) if i]
    figure.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=8)
    figure.suptitle("segmentation on held-out twin scenes: truth vs predicted "
                    "(fakes are metamers: the colour of vegetation, another spectrum)",
                    fontsize=10)  # fmt: skip
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path
