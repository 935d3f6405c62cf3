"""Videos of a task before and after adaptation (``metarl render RUN_DIR --video``).

Each panel is one episode of the Gymnasium form of the environment, run with the policy of
one adaptation step (before adaptation, after 1 step, ...), panels side by side; the task,
the step, the time and the return so far are written on the frames. The half-cheetahs render
headless through MuJoCo's OpenGL backends: EGL (Mesa) by default when no display is set, or
OSMesa; 2D navigation draws its plane itself.
"""

from __future__ import annotations

import contextlib
import gc
import math
import os
import subprocess
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from metarl.adaptation import Params
from metarl.config import ConfigError
from metarl.envs.gl_backend import windowless_glfw
from metarl.logging import work_bar
from metarl.rl.episodes import PolicyFn

VIDEO_SUFFIXES = (".mp4", ".gif")


class VideoEncodingError(OSError):
    """ffmpeg could not write a video (its exit code and message say why)."""


PANEL_WIDTH, PANEL_HEIGHT = 320, 240
# GIF frame delays are in 1/100 s and players slow down delays under 2/100 s.
MAX_VIDEO_FPS = 50
# Panels sit side by side, one per adaptation step: 11 make frames 3,520 pixels wide, and every
# frame of every panel is held in memory until the video is written (about 1.3 GB for a
# 200-step half-cheetah episode). H.264 refuses frames over 16,384 pixels wide (51 panels).
MAX_VIDEO_STEPS = 10


def check_video_steps(steps: int, source: str | None = None) -> None:
    """Refuse more adaptation steps than a video shows (:data:`MAX_VIDEO_STEPS`); ``source``
    names where the number came from (default: ``N adaptation steps``)."""
    if steps > MAX_VIDEO_STEPS:
        raise ConfigError(f"{source or f'{steps} adaptation steps'}: a video shows the episode "
                          "before adaptation and after each step side by side, for at most "
                          f"{MAX_VIDEO_STEPS} steps; give --steps 0 to {MAX_VIDEO_STEPS} "
                          "(metarl evaluate takes more)")


class RenderBackendError(ConfigError):
    """MuJoCo could not create an OpenGL context to render with."""


def _render_failure(error: Exception) -> RenderBackendError:
    # imported here: loading the half-cheetah module loads MuJoCo, which refuses a bad
    # MUJOCO_GL at import, and navigation videos do not need MuJoCo at all
    from metarl.envs.half_cheetah import GL_HELP

    backend = os.environ.get("MUJOCO_GL", "glfw")
    pyopengl = os.environ.get("PYOPENGL_PLATFORM")
    # MuJoCo's EGL and OSMesa backends refuse another PyOpenGL platform (in any case)
    mismatch = (f" PYOPENGL_PLATFORM={pyopengl} is set too, and MuJoCo needs it unset or the "
                f"same as MUJOCO_GL." if pyopengl and backend.lower() in ("egl", "osmesa")
                and pyopengl.lower() != backend.lower() else "")
    _collect_failed_viewer(error)
    return RenderBackendError(f"MuJoCo could not render with MUJOCO_GL={backend}: "
                              f"{type(error).__name__}: {str(error).rstrip('.')}.{mismatch} "
                              f"{GL_HELP}")


def _collect_failed_viewer(error: Exception) -> None:
    """Free the viewer whose OpenGL context failed to start, now and quietly: Gymnasium's
    ``OffScreenViewer.__del__`` would otherwise print a traceback about the missing context
    (an AttributeError) when the failure's traceback is released, after our message."""
    previous = sys.unraisablehook

    def quiet(unraisable: Any) -> None:
        where = getattr(unraisable.object, "__qualname__", "")
        if not (isinstance(unraisable.exc_value, AttributeError)
                and where.endswith("OffScreenViewer.__del__")):
            previous(unraisable)

    sys.unraisablehook = quiet
    try:
        error.__traceback__ = None  # its frames hold the half-made viewer
        gc.collect()
    finally:
        sys.unraisablehook = previous


def make_render_env(gym_id: str, task: dict[str, Any], *, episode_steps: int,
                    gym_kwargs: Mapping[str, Any] | None = None,
                    mujoco: bool = True) -> gym.Env:
    """The Gymnasium form of ``gym_id`` (made with ``gym_kwargs``, such as a frame skip)
    rendering ``PANEL_WIDTH x PANEL_HEIGHT`` frames; ``mujoco``: through MuJoCo's OpenGL
    (whose failures are reported with the fix), else drawn by the environment itself."""
    problem = windowless_glfw() if mujoco else None
    if problem is not None:
        from metarl.envs.half_cheetah import GL_HELP

        raise RenderBackendError(f"MuJoCo could not render with {problem}. {GL_HELP}")
    try:
        return gym.make(gym_id, task=task, render_mode="rgb_array", width=PANEL_WIDTH,
                        height=PANEL_HEIGHT, max_episode_steps=episode_steps,
                        **(gym_kwargs or {}))
    except (ImportError, RuntimeError, OSError, gym.error.DependencyNotInstalled) as error:
        if not mujoco:
            raise
        # A GL backend that cannot load fails here, on import of the GL context.
        raise _render_failure(error) from error


def check_rendering(gym_id: str, task: dict[str, Any],
                    gym_kwargs: Mapping[str, Any] | None = None, *, mujoco: bool = True) -> None:
    """Render one frame, so that a missing OpenGL backend fails before any other work."""
    env = make_render_env(gym_id, task, episode_steps=1, gym_kwargs=gym_kwargs, mujoco=mujoco)
    try:
        env.reset(seed=0)
        _first_frame(env)
    finally:
        env.close()


def _first_frame(env: gym.Env) -> np.ndarray:
    """``env.render()``; for MuJoCo (which renders through OpenGL) a failure is reported as a
    :class:`RenderBackendError` naming the fix, for an environment that draws itself as it is."""
    mujoco = hasattr(getattr(env, "unwrapped", env), "mujoco_renderer")
    try:
        frame = env.render()
    except Exception as error:  # each backend fails in its own way (ImportError, FatalError...)
        if not mujoco:
            raise
        raise _render_failure(error) from error
    if frame is None:
        if not mujoco:
            raise RuntimeError(f"{env} rendered no frame (render_mode='rgb_array' expected)")
        raise _render_failure(RuntimeError("no frame"))
    return np.asarray(frame)


def _font(size: int) -> ImageFont.ImageFont | ImageFont.FreeTypeFont:
    try:
        return ImageFont.load_default(size=size)
    except TypeError:  # Pillow < 10.1 has one bitmap size
        return ImageFont.load_default()


def describe_task(task: dict[str, Any]) -> str:
    """``target velocity 1.50 m/s``, ``run forward`` / ``run backward``, or for other tasks
    ``KEY VALUE`` rounded to 2 places (``goal [0.3, -0.2]``)."""
    if "velocity" in task:
        return f"target velocity {float(task['velocity']):.2f} m/s"
    if "direction" in task:
        return "run " + ("forward" if float(task["direction"]) > 0 else "backward")
    return ", ".join(f"{k} {np.round(np.asarray(v), 2).tolist()}" for k, v in task.items())


def annotate(frame: np.ndarray, lines: Sequence[str]) -> np.ndarray:
    """The frame ``(H, W, 3)`` uint8 under a dark band of ``8 + 16 * len(lines)`` rows with
    ``lines`` written on it (above the frame, so that it hides nothing of it)."""
    band = Image.new("RGB", (frame.shape[1], 8 + 16 * len(lines)), (40, 40, 40))
    draw = ImageDraw.Draw(band)
    font = _font(13)
    for i, line in enumerate(lines):
        draw.text((6, 4 + 16 * i), line, fill=(255, 255, 255), font=font)
    return np.concatenate([np.asarray(band), frame], axis=0)


def run_episode(env: gym.Env, policy: PolicyFn, params: Params, *, steps: int, seed: int,
                generator: torch.Generator, action_scale: float = 1.0,
                on_frame: Callable[[], object] | None = None,
                ) -> tuple[list[np.ndarray], np.ndarray]:
    """One episode of ``env`` with actions sampled from the policy (task-batched ``params``
    with T = 1) and multiplied by ``action_scale``; ``on_frame`` is called after each frame
    is rendered (a progress bar's).

    Returns the frames ``(H, W, 3)`` uint8 after reset and after each step taken, and the
    rewards ``(steps_taken,)``."""
    observation, _ = env.reset(seed=seed)
    frames = [_first_frame(env)]
    if on_frame is not None:
        on_frame()
    rewards = []
    for _ in range(steps):
        with torch.no_grad():
            obs = torch.as_tensor(observation, dtype=torch.float32).view(1, 1, -1)
            dist = policy(params, obs)
            action = dist.mean + dist.stddev * torch.randn(dist.mean.shape, generator=generator)
        observation, reward, terminated, truncated, _ = env.step(
            action.view(-1).numpy() * action_scale)
        rewards.append(reward)
        frames.append(np.asarray(env.render()))
        if on_frame is not None:
            on_frame()
        if terminated or truncated:
            break
    return frames, np.asarray(rewards)


def record_adaptation_video(gym_id: str, task: dict[str, Any], policy: PolicyFn,
                            weights_per_step: Sequence[Params], output: Path, *,
                            episode_steps: int, seed: int, title: str = "",
                            task_index: int = 0, action_scale: float = 1.0,
                            gym_kwargs: Mapping[str, Any] | None = None,
                            mujoco: bool = True, progress: bool = False) -> Path:
    """Write ``output`` (.mp4 or .gif): one episode per adaptation step, side by side, in
    real time (above :data:`MAX_VIDEO_FPS` control steps per second, every k-th step's
    frame, the last one always).

    Args:
        weights_per_step: task-batched parameters before adaptation and after each step;
            row ``task_index`` is used.
        episode_steps: the episode length (the steps each panel shows, after the reset frame).
        gym_kwargs: keyword arguments of the Gymnasium form (``{"frame_skip": 1}``).
        mujoco: rendered by MuJoCo (else drawn by the environment), see
            :func:`make_render_env`.
        progress: show a progress bar over the frames rendered (software rendering takes
            tens of milliseconds a frame).
    """
    panels = []
    fps = 20.0
    with work_bar(len(weights_per_step) * (episode_steps + 1),
                  f"rendering {len(weights_per_step)} episodes", "frame",
                  enabled=progress) as bar:
        for step, weights in enumerate(weights_per_step):
            params = {k: v[task_index:task_index + 1] for k, v in weights.items()}
            env = make_render_env(gym_id, task, episode_steps=episode_steps,
                                  gym_kwargs=gym_kwargs, mujoco=mujoco)
            # MuJoCo's control step in real time; navigation at its render_fps
            fps = (1.0 / env.unwrapped.dt if hasattr(env.unwrapped, "dt")
                   else float(env.metadata.get("render_fps", fps)))
            try:
                frames, rewards = run_episode(
                    env, policy, params, steps=episode_steps, seed=seed,
                    action_scale=action_scale, on_frame=bar.update,
                    generator=torch.Generator().manual_seed(seed + step))
            finally:
                env.close()
            # an episode that ended early leaves its frames not rendered done
            bar.update(episode_steps + 1 - len(frames))
            label = "before adaptation" if step == 0 else f"after {step} step{'s' * (step > 1)}"
            returns_so_far = np.concatenate([[0.0], np.cumsum(rewards)])
            panels.append([annotate(frame, [f"{describe_task(task)}, {label}",
                                            f"t = {i:3d}   return {returns_so_far[i]:8.1f}"])
                           for i, frame in enumerate(frames)])
    length = max(len(p) for p in panels)
    video = []
    for i in range(length):
        row = np.concatenate([p[min(i, len(p) - 1)] for p in panels], axis=1)
        if title:
            row = annotate(row, [title])
        video.append(row)
    stride = math.ceil(fps / MAX_VIDEO_FPS - 1e-9)
    if stride > 1:
        video = video[::stride] if (len(video) - 1) % stride == 0 else [
            *video[::stride], video[-1]]
    write_video(video, output, fps=fps / stride)
    return output


def write_video(frames: Sequence[np.ndarray], output: Path, *, fps: float) -> None:
    """Frames ``(H, W, 3)`` uint8 to an .mp4 (imageio-ffmpeg) or .gif (Pillow).

    The file appears only when complete: it is written beside ``output`` and renamed.
    """
    suffix = output.suffix.lower()
    if suffix not in VIDEO_SUFFIXES:
        raise ConfigError(f"video {output}: the file name must end in .mp4 or .gif")
    # Checked first: a writer failing mid-way may leave ffmpeg writing after it is closed.
    frames = [np.asarray(frame) for frame in frames]
    shape = frames[0].shape if frames else ()
    if not frames or any(f.shape != shape or f.dtype != np.uint8 for f in frames) or (
            len(shape) != 3 or shape[2] != 3):
        raise ValueError("video frames must be uint8 arrays (H, W, 3) of one size")
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.name}.tmp{suffix}")
    try:
        if suffix == ".gif":
            images = [Image.fromarray(f) for f in frames]
            images[0].save(tmp, format="GIF", save_all=True, append_images=images[1:], loop=0,
                           duration=round(1000 / fps), optimize=True)
        else:
            _encode_mp4(frames, tmp, fps=fps, shown_as=output)
        os.replace(tmp, output)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


# H.264 constant rate factor: 0 is lossless, 51 the worst; 10 keeps the text on frames sharp.
H264_CRF = 10


def _encode_mp4(frames: Sequence[np.ndarray], output: Path, *, fps: float,
                shown_as: Path | None = None) -> None:
    """Pipes uint8 ``(H, W, 3)`` frames to imageio-ffmpeg's ffmpeg, each padded with black at
    the bottom and right to multiples of 16 (H.264's macroblocks), one frame at a time.
    ``shown_as``: the file an error names (``output`` is a temporary file beside it).

    ffmpeg starts in a session of its own, so Ctrl-C in the terminal reaches only Python
    (which then stops ffmpeg and removes the partial file), and without a ``preexec_fn``, so
    Python starts it with vfork: a fork would copy the accounting of this process's address
    space, which after many MuJoCo simulations is tens of GB of reserved memory and can
    fail with ENOMEM.
    """
    import imageio_ffmpeg

    height, width = frames[0].shape[:2]
    pad = ((0, -height % 16), (0, -width % 16), (0, 0))
    height, width = height + pad[0][1], width + pad[1][1]
    command = [imageio_ffmpeg.get_ffmpeg_exe(), "-y", "-loglevel", "error",
               "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
               "-framerate", f"{fps:g}", "-i", "pipe:0", "-an",
               "-c:v", "libx264", "-pix_fmt", "yuv420p", "-crf", str(H264_CRF),
               "-movflags", "+faststart", "-f", "mp4", str(output)]
    with tempfile.TemporaryFile() as errors:  # a file: a full stderr pipe could block ffmpeg
        process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                   stderr=errors, start_new_session=True)
        try:
            assert process.stdin is not None
            # A broken pipe means ffmpeg stopped early: its exit code and message say why.
            with contextlib.suppress(BrokenPipeError):
                for frame in frames:
                    process.stdin.write(np.pad(frame, pad).data)
            with contextlib.suppress(BrokenPipeError):
                process.stdin.close()  # closes the pipe even when the last flush fails
            code = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            with contextlib.suppress(OSError):
                process.stdin.close()  # type: ignore[union-attr]
            raise
        if code != 0:
            errors.seek(0)
            message = errors.read().decode(errors="replace").strip()
            if shown_as is not None:
                message = message.replace(str(output), str(shown_as))
            raise VideoEncodingError(f"ffmpeg failed to write {shown_as or output} (exit code "
                                     f"{code}): {message}")
