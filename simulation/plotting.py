"""PNG previews of scenes, raw mosaic frames and class maps (what ``hyplex simulate`` writes)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from hyplex.simulation.scenes import Scene


def _class_colours(count: int):
    import matplotlib.pyplot as plt

    cmap = plt.get_cmap("tab20", max(count, 2))
    colours = cmap(np.arange(count))
    colours[0] = (0.15, 0.15, 0.15, 1.0)  # background dark
    return colours


def draw_scene_row(axes, scene: Scene, raw=None, title="", zoom_px=48, white_cd_m2=None):
    """Fill ``axes`` (3 or 4 matplotlib axes) with the RGB preview (white at ``white_cd_m2``,
    default the scene's 99th percentile), the raw frame, a zoom of the raw frame's centre
    (when 4 axes) and the class map."""
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    axes = list(axes)
    axes[0].imshow(scene.srgb(white_cd_m2=white_cd_m2))
    axes[0].set_title(f"sRGB preview {title}".strip())
    if raw is not None:
        frame = np.asarray(raw)
        axes[1].imshow(frame, cmap="gray", interpolation="nearest")
        axes[1].set_title(f"raw mosaic {frame.shape[1]}x{frame.shape[0]} (DN)")
        if len(axes) == 4:
            cy, cx, half = frame.shape[0] // 2, frame.shape[1] // 2, zoom_px // 2
            crop = frame[max(cy - half, 0) : cy + half, max(cx - half, 0) : cx + half]
            axes[2].imshow(crop, cmap="gray", interpolation="nearest")
            axes[2].set_title(f"raw, centre {crop.shape[1]}x{crop.shape[0]} px")
    else:
        for ax in axes[1:-1]:
            ax.set_visible(False)
    names = scene.class_names
    colours = _class_colours(len(names))
    axes[-1].imshow(
        scene.class_map,
        cmap=ListedColormap(colours),
        vmin=-0.5,
        vmax=len(names) - 0.5,
        interpolation="nearest",
    )
    present = np.unique(scene.class_map)
    handles = [Patch(color=colours[i], label=names[i]) for i in present]
    axes[-1].legend(handles=handles, fontsize="x-small", loc="upper right", framealpha=0.7)
    axes[-1].set_title("class map")
    for ax in axes:
        ax.set_xticks([])
        ax.set_yticks([])


def save_scene_png(path, scene: Scene, raw=None, title: str = "") -> Path:
    """One PNG with the RGB preview, the raw mosaic (and a zoom) and the class map."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = 4 if raw is not None else 2
    fig, axes = plt.subplots(1, panels, figsize=(4.2 * panels, 4.4))
    if raw is None:
        axes = [axes[0], None, axes[1]]
        axes = [a for a in axes if a is not None]
    draw_scene_row(axes, scene, raw, title)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target


def save_video_png(path, video, raw_frames=None, frames=None) -> Path:
    """PNG with one row per selected frame (default first, middle, last)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = video.n_frames
    frames = sorted({0, count // 2, count - 1}) if frames is None else list(frames)
    columns = 4 if raw_frames is not None else 2
    fig, axes = plt.subplots(len(frames), columns, figsize=(4.2 * columns, 4.2 * len(frames)))
    axes = np.atleast_2d(axes)
    white = float(np.quantile(video.frame(frames[0]).luminance_cd_m2(), 0.99))  # one scale
    for row, index in enumerate(frames):
        raw = None if raw_frames is None else raw_frames[index]
        lux = video.illuminants[index].illuminance_lux
        title = f"frame {index}, {lux:.0f} lx"
        draw_scene_row(axes[row], video.frame(index), raw, title, white_cd_m2=white)
    fig.tight_layout()
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, dpi=90)
    plt.close(fig)
    return target
