"""What ``--trainer ultralytics`` hands Ultralytics: the model to build, the data YAML with resolved paths,
and the checks of a run's settings made before any run folder exists (``preflight``).

- ``--model``: a model YAML (``yolo11n.yaml``, ``yolov8s.yaml``: built from scratch, found among
  Ultralytics' own model files or as a path), a local ``.pt`` file, or a size letter ``n``/``s``/``m``
  meaning ``yolo11<size>.yaml``. Nothing is ever downloaded: a name Ultralytics would fetch
  (``yolo11n.pt`` that is not a local file, ``yolo11n``, a URL) is refused with one line naming it.
  ``preflight`` then applies Ultralytics' own rules to it (``check_model``): a YAML is read and the model
  built as its detection trainer builds it, a ``.pt`` is loaded as its trainer loads it, and a model of
  another task (segment, pose, classify, obb) is refused, since trials train detection.
- ``--data``: the same data YAML as for the detector. A relative ``path`` is resolved here against the
  YAML's own folder; Ultralytics would resolve it against its datasets folder, so every trial gets a copy
  of the YAML whose ``path`` is absolute (and without a ``download`` entry, which Ultralytics would run).
  Its ``train`` and ``val`` become lists (``train.txt``, ``val.txt`` beside it) of the absolute image paths
  the detector's data check found, so both trainers see the same images with the same labels: Ultralytics
  resolves a symlinked image folder before deriving label paths, and reads a relative line of a .txt list
  from the working folder unless it starts with ``./``.
- More than one GPU per trial is refused (see ``preflight``).
- A hyp the installed Ultralytics does not have (``cls_pw`` came in 8.4.50) is refused before the run when
  the search space evolves it or the base hyp file moves it from its default (``check_version``); held at
  its default it is simply not passed (``ultralytics_trainer.supported_hyps``).
"""
from __future__ import annotations

import copy
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, Collection, Mapping, Optional

import yaml

from evolve.config.trial import MODEL_SIZES
from evolve.errors import ConfigError

if TYPE_CHECKING:  # pragma: no cover
    from evolve.config.run import EvolveConfig

DEFAULT_FAMILY = "yolo11"  # a size letter n/s/m means yolo11<size>.yaml
DATA_NAME = "data.yaml"  # the resolved copy of the data YAML in a trial's folder
OFFLINE_ENV = "YOLO_OFFLINE"  # Ultralytics' own switch: no online checks, no analytics
_MODEL_SUFFIXES = (".yaml", ".yml")


def import_ultralytics() -> Any:
    """Import Ultralytics in offline mode (set before its first import, which reads it once)."""
    os.environ.setdefault(OFFLINE_ENV, "1")
    import ultralytics

    return ultralytics


def resolve_model(model: str) -> str:
    """The model Ultralytics builds for ``--model``: an absolute path, or the name of one of its model
    YAMLs. ConfigError with one line when it would need a download or does not exist."""
    text = str(model).strip()
    if text in MODEL_SIZES:
        text = f"{DEFAULT_FAMILY}{text}.yaml"
    path = Path(text).expanduser()
    if path.is_file():
        if path.suffix.lower() not in (*_MODEL_SUFFIXES, ".pt"):
            # Ultralytics' trainer loads a name ending .pt as a checkpoint and reads anything else as YAML.
            raise ConfigError(f"--model {model}: Ultralytics trains from a model YAML (.yaml) or a "
                              f"checkpoint (.pt), got a {path.suffix or 'suffix-less'} file")
        return str(path.absolute())
    if path.suffix.lower() in _MODEL_SUFFIXES and len(path.parts) == 1:
        return _builtin_yaml(text)
    if path.suffix.lower() in _MODEL_SUFFIXES:
        raise ConfigError(f"--model {model}: model YAML not found")
    raise ConfigError(f"--model {model}: not a local file, and nothing is downloaded here; give a model YAML "
                      f"to build from scratch (yolo11n.yaml, yolov8n.yaml) or the path of a .pt you have")


def _builtin_yaml(name: str) -> str:
    """``name`` if Ultralytics ships that model YAML (``yolo11n.yaml`` is its ``yolo11.yaml`` at scale n)."""
    import_ultralytics()
    from ultralytics.nn.tasks import yaml_model_load

    try:
        yaml_model_load(name)
    except (FileNotFoundError, OSError) as exc:
        raise ConfigError(f"--model {name}: no such model YAML in Ultralytics "
                          f"({str(exc).splitlines()[0] if str(exc) else type(exc).__name__})") from exc
    return name


def _first_line(exc: BaseException) -> str:
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = text.removeprefix("ERROR ❌️").strip()
    return f"{type(exc).__name__}: {text[:200]}" if text else type(exc).__name__


def check_model(model: str, nc: int = 1, channels: int = 3) -> str:
    """The task-checked model of ``--model``, loaded and built as Ultralytics' detection trainer does it for a
    data set of ``nc`` classes; ConfigError with one line naming ``--model`` where a trial would fail."""
    resolved = resolve_model(model)
    import_ultralytics()
    from ultralytics.nn.tasks import DetectionModel, guess_model_task, load_checkpoint, yaml_model_load
    from ultralytics.utils import LOGGER as UL_LOGGER

    if resolved.lower().endswith(".pt"):
        try:
            weights, _ = load_checkpoint(resolved)
        except Exception as exc:  # noqa: BLE001 - whatever Ultralytics raises, every trial would raise it
            raise ConfigError(f"--model {model}: not a checkpoint Ultralytics can load "
                              f"({_first_line(exc)})") from None
        cfg: Any = getattr(weights, "yaml", None)
        if not isinstance(cfg, dict):
            raise ConfigError(f"--model {model}: the checkpoint holds no model YAML to build the model from")
    else:
        try:
            cfg = yaml_model_load(resolved)
        except Exception as exc:  # noqa: BLE001 - as above
            raise ConfigError(f"--model {model}: Ultralytics cannot read this model YAML "
                              f"({_first_line(exc)})") from None
    # The trainer builds a detection model from the YAML (a checkpoint's own included): its head decides.
    task = guess_model_task(cfg)
    if task != "detect":
        raise ConfigError(f"--model {model}: a {task} model; --trainer ultralytics trains detection models")
    level = UL_LOGGER.level
    UL_LOGGER.setLevel(logging.WARNING)  # its notes on building ("Overriding nc") belong to the trials' logs
    try:
        DetectionModel(copy.deepcopy(cfg), ch=channels, nc=nc, verbose=False)
    except Exception as exc:  # noqa: BLE001 - as above
        raise ConfigError(f"--model {model}: Ultralytics cannot build this model "
                          f"({_first_line(exc)})") from None
    finally:
        UL_LOGGER.setLevel(level)
    return resolved


def load_data(data: str | Path) -> dict[str, Any]:
    """The data YAML at ``data`` with ``path`` made absolute and no ``download`` entry. The YAML is
    checked, and its folders resolved, by the detector's own rules (``DataError`` naming the file and
    key), so one data YAML means the same images to both trainers."""
    from evolve.execution.detector_trainer import data_root

    source = Path(data).expanduser()
    if not source.is_file():
        raise ConfigError(f"--data {source}: data YAML not found")
    root = data_root(str(source))
    content = yaml.safe_load(source.read_bytes())
    content["path"] = root
    content.pop("download", None)  # Ultralytics runs it when images are missing: a download, or any script
    return content


def write_data(data: Optional[str], trial_dir: Path) -> tuple[Path, bool]:
    """The resolved data YAML written into ``trial_dir`` with its image lists, and whether it is the
    embedded data set."""
    from evolve.execution.detector_trainer import data_images, embedded_data

    embedded = data is None
    if embedded:
        data = embedded_data()
    content = load_data(data)
    trial_dir.mkdir(parents=True, exist_ok=True)
    for split, images in data_images(str(data)).items():
        listing = (trial_dir / f"{split}.txt").absolute()
        listing.write_text("".join(f"{image}\n" for image in images), encoding="utf-8")
        content[split] = str(listing)
    out = trial_dir / DATA_NAME
    out.write_text(yaml.safe_dump(content, sort_keys=False))
    return out, embedded


def installed_arguments() -> tuple[Collection[str], str]:
    """The argument names the installed Ultralytics takes, and its version."""
    ultralytics = import_ultralytics()
    from ultralytics.cfg import DEFAULT_CFG_DICT

    return DEFAULT_CFG_DICT, ultralytics.__version__


def supported_hyps(values: Mapping[str, Any], known: Collection[str], version: str) -> dict[str, Any]:
    """The hyps of a complete hyp dict of our key set that the installed Ultralytics (``version``, whose
    argument names are ``known``) takes. A key it does not know (one it added after that version, such as
    ``cls_pw``) is left out when its value is the key set's default, which is what leaving it out means;
    any other value is a ValueError naming key, value and version, since dropping it would train something
    other than what the records say."""
    from evolve.search.keyset import ULTRALYTICS

    defaults = ULTRALYTICS.default_hyp()
    out: dict[str, Any] = {}
    for key, value in values.items():
        if key in known:
            out[key] = value
        elif value != defaults[key]:
            raise ValueError(f"hyp '{key}' = {value!r}: Ultralytics {version} has no such argument; use a "
                             f"version that has it, or set '{key}' to its default {defaults[key]!r} "
                             "and stop evolving it")
    return out


def check_version(evolved: Collection[str], base: Mapping[str, Any], known: Collection[str],
                  version: str) -> None:
    """ConfigError naming the first hyp the installed Ultralytics (``version``, argument names ``known``)
    lacks although the run would move it: evolved by the search space, or off its default in the base
    (where every trial would fail by ``supported_hyps``)."""
    from evolve.search.keyset import ULTRALYTICS

    defaults = ULTRALYTICS.default_hyp()
    for key in ULTRALYTICS.keys:
        if key in known:
            continue
        if key in evolved:
            raise ConfigError(f"the search space evolves '{key}', which Ultralytics {version} does not have: "
                              f"upgrade it (pip install -U 'ultralytics>=8.4.50') or set {key}: "
                              f"{{evolve: false}} in a copy of the meta file (--meta)")
        if base.get(key, defaults[key]) != defaults[key]:
            raise ConfigError(f"the base hyp sets '{key}' to {base[key]!r}, which Ultralytics {version} does "
                              f"not have: upgrade it or set '{key}' to its default {defaults[key]!r}")


def preflight(cfg: "EvolveConfig") -> None:
    """Check a run's settings for the Ultralytics trainer before anything is written or started.

    A trial gets at most one GPU. Ultralytics trains on several GPUs by launching its own
    ``torch.distributed.run`` job from a script it writes; the per-epoch callbacks that feed Ray Tune
    (early stopping, progress) would live in the launching process, not in the ranks, and a killed
    trial's ranks would outlive it. Fractions of a GPU (several trials on one GPU) are fine.
    """
    gpus = cfg.ray.gpus_per_trial
    if gpus >= 2:
        raise ConfigError(f"--gpus-per-trial {gpus:g}: --trainer ultralytics trains each trial on one GPU "
                          f"(Ultralytics' own multi-GPU launcher cannot report epochs to Ray Tune); use "
                          f"--gpus-per-trial 1 or less and run more trials at once")
    if cfg.train.max_images is not None:
        raise ConfigError("--max-images is not supported by --trainer ultralytics; give a smaller data YAML")
    nc, channels = 1, 3  # the embedded set's classes do not change whether a model builds
    if cfg.train.data:
        content = load_data(cfg.train.data)
        names = content.get("names")
        nc = len(names) if names else int(content["nc"])
        channels = int(content.get("channels", 3))
    check_model(cfg.train.model, nc, channels)
    from evolve.execution.trainers import trainer_for

    space = trainer_for(cfg.trainer).space(cfg)
    check_version(space.keys, space.base, *installed_arguments())
